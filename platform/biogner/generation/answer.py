"""One generated answer as read: the end of a turn, the same for every decode loop.

Both loops (`decode`, `reference`) hand over the tokens a row generated within its budget;
what the answer *is* (cut at its end token, completed or cut back under its grammar, its
steered items counted or dropped) is decided here once, so the loops differ only in how they
computed the tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from biogner.generation.constraints import RowConstraint


@dataclass
class Turn:
    """One generated answer: its text as read, its tokens as generated, whether it hit its
    token budget, how many of its items constrained decoding had to steer, and how many
    items it dropped."""

    text: str
    tokens: list[int]
    hit_budget: bool
    overruled: int = 0
    dropped: int = 0


def read_turn(
    tokens: Sequence[int],
    budget: int,
    end_ids: Sequence[int],
    constraint: RowConstraint | None,
    tokenizer: object,
) -> Turn:
    """The answer in `tokens` (what a row generated, at most `budget` of them counted; an
    end token ends it): under a constraint, whole or completed (`RowConstraint.finish`);
    free, decoded as it is."""
    toks = list(tokens[:budget])
    end = next((k for k, t in enumerate(toks) if t in end_ids), None)
    answer = toks if end is None else toks[:end]
    overruled = dropped = 0
    if constraint is not None:
        answer, text, overruled, dropped = constraint.finish(answer, ended=end is not None)
    else:
        text = tokenizer.decode(answer, skip_special_tokens=True)  # type: ignore[attr-defined]
    hit = end is None and len(toks) >= budget
    return Turn(text.strip(), answer, hit, overruled, dropped)
