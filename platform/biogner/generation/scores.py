"""Per-entity confidence from the model's own probabilities.

Each chosen token carries its probability in the distribution greedy decoding chose it from
(the model's, restricted to what the grammar allowed: a forced token is 1.0). An entity's
score is the product over the tokens that wrote it, as its writing's parser located it in
the answer (`ParseResult.sources`: an inline bracket from `[` to `]`, a term or triple line
with its newline, a json object, a run of bio words and tags), times the probability of the
end token when the entity is the answer's last item: the probability that the model writes
exactly this item where it stands. Opening and closing a mention, its type and every word it
chose freely count; tokens the grammar forced or the writing completed do not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from difflib import SequenceMatcher

from biogner.formats.base import ParseResult
from biogner.generation.answer import Turn
from biogner.generation.constraints import Vocabulary, char_starts
from biogner.types import Span


class AnswerTokens:
    """One answer's tokens located in the text its parser read."""

    def __init__(self, turn: Turn, vocab: Vocabulary) -> None:
        self.turn = turn
        decoded = vocab.tokenizer.decode(turn.tokens)
        self.starts = char_starts(vocab, turn.tokens)  # in `decoded`
        self.decoded_end = len(decoded.rstrip())
        text = turn.text
        lead = len(decoded) - len(decoded.lstrip())
        if decoded.strip() == text:
            self.to_decoded: list[int | None] = [lead + i for i in range(len(text) + 1)]
        else:  # completed, cut or with items dropped: align what the two share
            self.to_decoded = [None] * (len(text) + 1)
            matcher = SequenceMatcher(None, text, decoded, autojunk=False)
            for a, b, size in matcher.get_matching_blocks():
                for k in range(size + 1):
                    self.to_decoded[a + k] = b + k

    def prob(self, start: int, end: int) -> float:
        """Product of the probabilities of the tokens that wrote text[start:end]."""
        mapped = [d for d in self.to_decoded[start : end + 1] if d is not None]
        if not mapped:
            return 1.0  # written by no token: completed by the writing
        lo, hi = min(mapped), max(mapped)
        probs = self.turn.probs
        p = math.prod(
            probs[k] for k in range(len(probs)) if self.starts[k] < hi and self.starts[k + 1] > lo
        )
        if hi >= self.decoded_end:  # the last item: the end token closed it
            p *= self.turn.end_prob
        return p

    def mean_log(self) -> float:
        return sum(math.log(max(p, 1e-12)) for p in self.turn.probs) / max(len(self.turn.probs), 1)


def span_scores(parse: ParseResult, turns: Sequence[Turn], vocab: Vocabulary) -> dict[Span, float]:
    """A score in [0, 1] for every span of `parse`, read from the answers `turns`. A span
    whose place in the answers is unknown (a parser that could not locate it) gets the
    answers' per-token geometric mean."""
    if not parse.spans:  # most sentences: no answer to decode
        return {}
    answers = [AnswerTokens(t, vocab) for t in turns]
    scores: dict[Span, float] = {}
    for span in parse.spans:
        source = parse.sources.get(span)
        if source is None or source[0] >= len(answers):
            mean_log = sum(a.mean_log() for a in answers) / len(answers) if answers else 0.0
            scores[span] = math.exp(mean_log)
            continue
        index, start, end = source
        scores[span] = min(1.0, max(0.0, answers[index].prob(start, end)))
    return scores
