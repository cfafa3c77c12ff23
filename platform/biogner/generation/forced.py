"""Forced tokens: where the grammar allows exactly one token, greedy decoding must pick it
whatever the model computes, so it is appended without a choosing step (no LM head, no
mask), several per forward pass: a bio word's `(`, a triple's separators, closing brackets.

"Exactly one" is read off the token mask itself, not off the grammar's forced *bytes*: a
forced string can often be written as several tokenizations (`(O)` as one token or three),
and only where the mask leaves one token is the choice the model's no more.

Writings whose steered items are counted (term, triple, json: `Writing.without_items`)
still need to know whether the model would have chosen the forced token: its logits are
computed in the same forward pass that feeds it (`Row.checks`), so the overrule count is
what step-by-step decoding records.
"""

from __future__ import annotations

from collections.abc import Collection

from biogner.formats.base import Writing
from biogner.generation.row import Row


def counts_items(writing: Writing) -> bool:
    """The writing counts the items constrained decoding steered (term, triple, json), so
    a forced token's logits are still computed to know whether the model chose it."""
    return type(writing).without_items is not Writing.without_items


def extend_forced(row: Row, end_ids: Collection[int], checked: bool) -> None:
    """Append to `row.feed` every token its grammar forces next. `checked`: the writing
    counts steered items, so each forced token's logits are computed (`row.checks`) and a
    forced token that would end the answer (an end token, the budget's last token) is left
    to an ordinary step: its check needs the logits of the token before it, computed in the
    next pass, which a finished row never gets."""
    constraint = row.constraint
    if constraint is None:
        return
    while not row.finished:
        token = constraint.only_allowed()
        if token is None:
            return
        ends = token in end_ids or len(row.tokens) + 1 >= row.budget
        if checked and ends:
            return
        if token in end_ids:
            row.commit(token)
            return
        if checked:
            row.checks.append(len(row.feed))
        row.feed.append(token)
        row.commit(token)
