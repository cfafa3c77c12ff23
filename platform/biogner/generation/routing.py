"""Which entity types to ask together: the groups a model was trained on.

A multi-corpus model learned each corpus's types as one question (BC5CDR: Chemical and
Disease; JNLPBA: five types), never a mix of types from several corpora, since no corpus
annotates them together. A request for types of several groups is therefore asked once per
group, each group whole (the question the model learned), and its answers are kept for the
requested types only: the model never reads a type list it was not trained on.
"""

from __future__ import annotations

from collections.abc import Sequence


def ask_plan(requested: Sequence[str], groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """The type lists to ask for `requested`, in group order: every group holding a requested
    type, whole; requested types that no group holds are asked together last (a model asked
    for a type it never learned: an evaluation may still want to see what it does)."""
    wanted = list(dict.fromkeys(requested))
    plan: list[list[str]] = []
    covered: set[str] = set()
    for group in groups:
        if any(t in group for t in wanted):
            plan.append(list(group))
            covered.update(group)
    rest = [t for t in wanted if t not in covered]
    if rest:
        plan.append(rest)
    return plan
