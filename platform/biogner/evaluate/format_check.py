"""Round-trip every sentence through every format: the proof that a format can say what the
corpus says, and the *ceiling F1* of a perfect model writing it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from biogner.evaluate.metrics import Scorer
from biogner.formats.coverage import roundtrip
from biogner.formats.turns import Format
from biogner.types import Sentence


@dataclass
class FormatCheck:
    format: str
    exact: bool
    sentences: int = 0
    exact_roundtrips: int = 0
    ambiguous: int = 0  # lost only to the writing's declared ambiguity (lossy formats)
    failures: list[tuple[Sentence, str]] = field(default_factory=list)
    scorer: Scorer = field(default_factory=Scorer)

    @property
    def ok(self) -> int:
        return self.exact_roundtrips + self.ambiguous

    @property
    def ceiling_f1(self) -> float:
        return self.scorer.scores.overall.f1


def check_format(fmt: Format, sentences: Iterable[Sentence], types: Sequence[str]) -> FormatCheck:
    """Render each sentence's gold answer, parse it back and compare with the gold spans."""
    result = FormatCheck(fmt.name, fmt.exact)
    for sent in sentences:
        result.sentences += 1
        trip = roundtrip(fmt, sent, types)
        result.scorer.add(sent.id, sent.spans, trip.parsed.spans, trip.parsed)
        if trip.failure is not None:
            result.failures.append((sent, trip.failure))
        elif trip.ambiguous:
            result.ambiguous += 1
        else:
            result.exact_roundtrips += 1
    return result
