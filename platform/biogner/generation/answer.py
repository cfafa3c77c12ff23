"""One generated answer as read: the end of a turn, the same for every decode loop.

Both loops (`decode`, `reference`) hand over the tokens a row generated within its budget;
what the answer *is* (cut at its end token, completed or cut back under its grammar, its
steered items counted or dropped) is decided here once, so the loops differ only in how they
computed the tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
    # per token of `tokens`: its probability under the distribution it was chosen from (the
    # model's, restricted to what the grammar allowed: 1.0 for a token the grammar forced)
    probs: list[float] = field(default_factory=list)
    end_prob: float = 1.0  # the probability of the end token that ended it (the last decision)


def read_turn(
    tokens: Sequence[int],
    budget: int,
    end_ids: Sequence[int],
    constraint: RowConstraint | None,
    tokenizer: object,
    probs: Sequence[float] = (),
) -> Turn:
    """The answer in `tokens` (what a row generated, at most `budget` of them counted; an
    end token ends it): under a constraint, whole or completed (`RowConstraint.finish`);
    free, decoded as it is. `probs`: each token's probability, kept for the answer's tokens
    (a token the writing completed was not generated: 1.0)."""
    toks = list(tokens[:budget])
    end = next((k for k, t in enumerate(toks) if t in end_ids), None)
    answer = toks if end is None else toks[:end]
    overruled = dropped = 0
    if constraint is not None:
        answer, text, overruled, dropped = constraint.finish(answer, ended=end is not None)
    else:
        text = tokenizer.decode(answer, skip_special_tokens=True)  # type: ignore[attr-defined]
    hit = end is None and len(toks) >= budget
    kept = list(probs[: len(answer)])
    kept += [1.0] * (len(answer) - len(kept))
    end_prob = probs[end] if end is not None and end < len(probs) else 1.0
    return Turn(text.strip(), answer, hit, overruled, dropped, kept, end_prob)
