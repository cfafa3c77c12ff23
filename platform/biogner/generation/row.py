"""One answer being decoded in a batch: what it feeds next, what it chose so far, and its
greedy choice under the grammar. Shared by the decode loops (`decode`, `continuous`), the
forward pass (`step`) and forced tokens (`forced`), none of which it imports.
"""

from __future__ import annotations

import numpy as np
import torch

from biogner.generation.constraints import RowConstraint
from biogner.generation.speculation import Drafter


class Row:
    """One answer being decoded in a batch."""

    def __init__(
        self,
        feed: list[int],
        length: int,
        budget: int,
        end_ids: frozenset[int],
        constraint: RowConstraint | None,
        drafter: Drafter | None,
    ) -> None:
        self.feed = feed  # tokens to put into the cache next
        self.fed_generated = False  # `feed` holds this turn's tokens (else prompt/question)
        self.checks: list[int] = []  # feed indices of forced tokens to check (item writings)
        self.drafts: list[int] = []  # speculative tokens, fed after `feed`
        self.length = length  # real tokens in the cache: the next position id
        self.start = length + len(feed)  # position of the first answer token
        self.budget = budget
        self.end_ids = end_ids
        self.constraint = constraint
        self.drafter = drafter
        self.tokens: list[int] = []  # generated this turn (an end token included)
        self.probs: list[float] = []  # each token's probability where it was chosen
        self.cols: list[int] = []  # cache columns of `tokens` fed so far
        self.ended = False
        self.reach = 0  # how many tokens to draft next (0: the configured length)
        self.split = 0  # feed only feed[:split] this pass (0: all of it, and the drafts)

    @property
    def finished(self) -> bool:
        return self.ended or len(self.tokens) >= self.budget

    @property
    def draft_room(self) -> int:
        """Most tokens a draft may hold: confirmed, they and the token chosen after them
        must fit the budget."""
        return self.budget - len(self.tokens) - 1

    def commit(self, token: int, prob: float = 1.0) -> None:
        self.tokens.append(token)
        self.probs.append(prob)
        if self.constraint is not None and not self.constraint.done:
            self.constraint.consume(token)
        self.ended = token in self.end_ids

    def needs(self) -> list[int]:
        """Indices (into feed + drafts) whose logits this row needs: before each checked
        forced token, at its last fed token and at each draft."""
        if not self.feed:
            return []
        if self.split:  # part of the feed only: no choice this pass, checks within it
            return [j - 1 for j in self.checks if j <= self.split]
        last = len(self.feed) - 1
        return [j - 1 for j in self.checks] + [last + a for a in range(len(self.drafts) + 1)]

    def choose(
        self, scores: torch.Tensor, wanted: int, probs: np.ndarray | None
    ) -> tuple[int, float]:
        """Greedy choice under the grammar: the model's top token `wanted` when allowed,
        else the top allowed one (an overrule, recorded); with its probability among the
        allowed tokens, from the row's softmax `probs` (None: not scored, 1.0)."""
        c = self.constraint
        if c is None or c.done:
            return wanted, 1.0 if probs is None else float(probs[wanted])
        if c.allows(wanted):
            if probs is None:
                return wanted, 1.0
            return wanted, allowed_prob(probs, wanted, c.allowed_bits(), scores)
        allowed = c.allowed().to(scores.device)
        chosen = int(scores.masked_fill(~allowed, float("-inf")).argmax())
        c.overrule(wanted, chosen)
        if probs is None:
            return chosen, 1.0
        return chosen, allowed_prob(probs, chosen, allowed.cpu().numpy(), scores)


def allowed_prob(probs: np.ndarray, token: int, allowed: np.ndarray, scores: torch.Tensor) -> float:
    """softmax(scores)[token] among the `allowed` tokens only: the probability of the token
    in the distribution greedy decoding chose it from. From the row's softmax (a dot
    product); where every allowed token underflowed there, from the scores themselves."""
    mass = float(np.dot(probs, allowed))
    if mass > 1e-30:
        return float(probs[token]) / mass
    masked = scores.masked_fill(~torch.from_numpy(allowed.astype(bool)).to(scores.device), -1e30)
    return float(torch.exp(masked[token] - torch.logsumexp(masked, 0)))
