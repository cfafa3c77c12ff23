"""Strict entity-level micro P/R/F1 over (sentence, start, end, label).

A prediction counts only if its sentence, both offsets and its label match a gold entity
exactly; the same definition as seqeval's strict IOB2 mode (a test proves the equality).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from biogner.formats.base import ParseResult
from biogner.types import Span

Key = tuple[str, int, int, str]
Counts = tuple[int, int, int]  # one sentence's (tp, fp, fn)
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95


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
    overruled: int = 0
    dropped: int = 0
    per_sentence: list[Counts] = field(default_factory=list)
    # per label, one (tp, fp, fn) per sentence scored (zeros where the label is absent)
    per_label_sentence: dict[str, list[Counts]] = field(default_factory=dict)

    @property
    def gold_mentions(self) -> int:
        return self.overall.tp + self.overall.fn

    def f1_interval(
        self, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
    ) -> tuple[float, float]:
        """95 % bootstrap interval of the micro F1 over sentences (see `bootstrap_f1`)."""
        return bootstrap_f1(self.per_sentence, resamples, seed)

    @property
    def parse_error_rate(self) -> float:
        """Share of sentences whose output had at least one parse problem."""
        return self.sentences_with_parse_errors / self.sentences if self.sentences else 0.0

    @property
    def hallucination_rate(self) -> float:
        """Share of predicted mentions whose text is not in the sentence."""
        return self.hallucinated / self.predicted_mentions if self.predicted_mentions else 0.0

    @property
    def overruled_rate(self) -> float:
        """Share of the items a model wrote in which constrained decoding overruled its own
        choice (steered, then kept or dropped): free decoding would have written something
        else there, often invented text."""
        written = self.predicted_mentions + self.dropped
        return self.overruled / written if written else 0.0

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metric names for MLflow (`test_f1`, `test_f1_Disease`, ...)."""
        out = {f"{prefix}{k}": float(v) for k, v in self.overall.as_dict().items()}
        for label, prf in sorted(self.per_label.items()):
            for k in ("precision", "recall", "f1"):
                out[f"{prefix}{k}_{label}"] = getattr(prf, k)
            out[f"{prefix}gold_mentions_{label}"] = float(prf.tp + prf.fn)
            low, high = bootstrap_f1(self.per_label_sentence.get(label, []))
            out[f"{prefix}f1_low_{label}"], out[f"{prefix}f1_high_{label}"] = low, high
        out[f"{prefix}parse_error_rate"] = self.parse_error_rate
        out[f"{prefix}hallucination_rate"] = self.hallucination_rate
        out[f"{prefix}overruled_rate"] = self.overruled_rate
        out[f"{prefix}sentences"] = float(self.sentences)
        out[f"{prefix}gold_mentions"] = float(self.gold_mentions)
        low, high = self.f1_interval()
        out[f"{prefix}f1_low"], out[f"{prefix}f1_high"] = low, high
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
        mine = PRF()
        mine_per_label: dict[str, PRF] = {}
        for key in g | p:
            label = key[3]
            prf = sc.per_label.setdefault(label, PRF())
            hit = min(g[key], p[key])
            for target in (sc.overall, prf, mine, mine_per_label.setdefault(label, PRF())):
                target.tp += hit
                target.fp += p[key] - hit
                target.fn += g[key] - hit
        sc.per_sentence.append((mine.tp, mine.fp, mine.fn))
        for label in sc.per_label:
            counts = sc.per_label_sentence.setdefault(label, [(0, 0, 0)] * (sc.sentences - 1))
            here = mine_per_label.get(label, PRF())
            counts.append((here.tp, here.fp, here.fn))
        if parse is not None:
            sc.parse_problems += len(parse.problems)
            sc.sentences_with_parse_errors += bool(parse.problems)
            sc.predicted_mentions += parse.predicted_mentions
            sc.hallucinated += parse.hallucinated
            sc.overruled += parse.overruled
            sc.dropped += parse.dropped


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


def sentence_counts(gold: Iterable[Span], predicted: Iterable[Span]) -> Counts:
    """(tp, fp, fn) of one sentence, strict matching."""
    g, p = set(gold), set(predicted)
    return len(g & p), len(p - g), len(g - p)


def _resampled_sums(tables: Sequence[Sequence[Counts]], resamples: int, seed: int) -> Any:
    """Summed counts of `resamples` bootstrap draws of sentences, the same draws for every
    table: shape (resamples, 3 x len(tables))."""
    both = np.concatenate([np.asarray(t, dtype=np.int64).reshape(-1, 3) for t in tables], axis=1)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(both), size=(resamples, len(both)))
    return both[picks].sum(axis=1)


def _f1(sums: Any) -> Any:
    tp, fp, fn = sums[:, 0], sums[:, 1], sums[:, 2]
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def bootstrap_f1(
    counts: Sequence[Counts], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval (95 %) of micro F1, resampling whole sentences.

    Sentences, not mentions, are the unit: a model's errors cluster in hard sentences, and
    the split is a sample of sentences. Deterministic for a seed."""
    if not counts:
        return 0.0, 0.0
    f1 = _f1(_resampled_sums([counts], resamples, seed))
    tail = (1 - CONFIDENCE) / 2 * 100
    return float(np.percentile(f1, tail)), float(np.percentile(f1, 100 - tail))


def paired_bootstrap(
    a: Sequence[Counts], b: Sequence[Counts], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> float:
    """P(F1 of a > F1 of b) when the same sentences are resampled for both (ties count half).

    `a[i]` and `b[i]` must be the same sentence. Near 1: a is reliably better; near 0.5: the
    two are indistinguishable on this split."""
    if len(a) != len(b):
        raise ValueError(f"paired bootstrap needs the same sentences: {len(a)} vs {len(b)}")
    if not a:
        return 0.5
    sums = _resampled_sums([a, b], resamples, seed)
    fa, fb = _f1(sums[:, :3]), _f1(sums[:, 3:])
    return float(np.mean(fa > fb) + 0.5 * np.mean(fa == fb))
