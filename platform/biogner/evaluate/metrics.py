"""Strict entity-level micro P/R/F1 over (sentence, start, end, label).

A prediction counts only if its sentence, both offsets and its label match a gold entity
exactly; the same definition as seqeval's strict IOB2 mode (a test proves the equality).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from biogner.formats.base import ParseResult
from biogner.types import Span

Key = tuple[str, int, int, str]


@dataclass
class PRF:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


@dataclass
class Scores:
    """Micro scores overall and per label, with parse and hallucination rates."""

    overall: PRF = field(default_factory=PRF)
    per_label: dict[str, PRF] = field(default_factory=dict)
    sentences: int = 0
    sentences_with_parse_errors: int = 0
    parse_problems: int = 0
    predicted_mentions: int = 0
    hallucinated: int = 0

    @property
    def parse_error_rate(self) -> float:
        """Share of sentences whose output had at least one parse problem."""
        return self.sentences_with_parse_errors / self.sentences if self.sentences else 0.0

    @property
    def hallucination_rate(self) -> float:
        """Share of predicted mentions whose text is not in the sentence."""
        return self.hallucinated / self.predicted_mentions if self.predicted_mentions else 0.0

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metric names for MLflow (`test_f1`, `test_f1_Disease`, ...)."""
        out = {f"{prefix}{k}": float(v) for k, v in self.overall.as_dict().items()}
        for label, prf in sorted(self.per_label.items()):
            for k in ("precision", "recall", "f1"):
                out[f"{prefix}{k}_{label}"] = getattr(prf, k)
        out[f"{prefix}parse_error_rate"] = self.parse_error_rate
        out[f"{prefix}hallucination_rate"] = self.hallucination_rate
        out[f"{prefix}sentences"] = float(self.sentences)
        return out


def _keys(sentence_id: str, spans: Iterable[Span]) -> Counter[Key]:
    return Counter((sentence_id, s.start, s.end, s.label) for s in set(spans))


class Scorer:
    """Accumulates gold and predicted spans sentence by sentence."""

    def __init__(self) -> None:
        self.scores = Scores()

    def add(
        self,
        sentence_id: str,
        gold: Iterable[Span],
        predicted: Iterable[Span],
        parse: ParseResult | None = None,
    ) -> None:
        g, p = _keys(sentence_id, gold), _keys(sentence_id, predicted)
        sc = self.scores
        sc.sentences += 1
        for key in g | p:
            label = key[3]
            prf = sc.per_label.setdefault(label, PRF())
            hit = min(g[key], p[key])
            for target in (sc.overall, prf):
                target.tp += hit
                target.fp += p[key] - hit
                target.fn += g[key] - hit
        if parse is not None:
            sc.parse_problems += len(parse.problems)
            sc.sentences_with_parse_errors += bool(parse.problems)
            sc.predicted_mentions += parse.predicted_mentions
            sc.hallucinated += parse.hallucinated


def score(
    gold: Mapping[str, Iterable[Span]],
    predicted: Mapping[str, Iterable[Span]],
    parses: Mapping[str, ParseResult] | None = None,
) -> Scores:
    """Score predictions keyed by sentence id against gold (missing predictions = none)."""
    scorer = Scorer()
    for sid, spans in gold.items():
        scorer.add(sid, spans, predicted.get(sid, ()), (parses or {}).get(sid))
    extra = set(predicted) - set(gold)
    if extra:
        raise KeyError(f"predictions for unknown sentence ids: {sorted(extra)[:5]}")
    return scorer.scores
