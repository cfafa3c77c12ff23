"""Strict entity-level scoring: equal to seqeval's strict IOB2 mode on real corpora with
perturbed predictions, plus the parse-error and hallucination rates."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import pytest
from conftest import corpora_dir
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from biogner.corpora import load_split, spans_to_tags
from biogner.corpora.iob import tags_to_spans
from biogner.evaluate.metrics import PRF, Scorer, Scores, score
from biogner.formats import get_format
from biogner.formats.base import ParseResult
from biogner.types import Sentence, Span

TOL = 1e-9


def corpus_sentences(name: str, limit: int | None) -> list[Sentence]:
    data = corpora_dir(name, splits=["test"])
    return load_split(name, "test", data_dir=data, limit=limit)


def token_ranges(sent: Sentence, spans: Sequence[Span]) -> list[tuple[int, int, str]]:
    """Spans as token index ranges [i, j) (spans must be token-aligned)."""
    starts = {s: i for i, (s, _) in enumerate(sent.token_offsets())}
    ends = {e: i + 1 for i, (_, e) in enumerate(sent.token_offsets())}
    return [(starts[s.start], ends[s.end], s.label) for s in spans]


def perturb(sent: Sentence, labels: Sequence[str], rng: random.Random) -> list[Span]:
    """A plausible model's prediction: some entities dropped, boundaries moved by one token,
    labels swapped, spurious entities added; made flat so IOB2 can encode it."""
    n = len(sent.tokens)
    out: list[tuple[int, int, str]] = []
    for i, j, label in token_ranges(sent, sent.spans):
        roll = rng.random()
        if roll < 0.15:
            continue  # dropped
        if roll < 0.35:
            if rng.random() < 0.5:
                i = min(max(0, i + rng.choice((-1, 1))), j - 1)
            else:
                j = max(min(n, j + rng.choice((-1, 1))), i + 1)
        elif roll < 0.5 and len(labels) > 1:
            label = rng.choice([lab for lab in labels if lab != label])
        out.append((i, j, label))
    for _ in range(rng.choice((0, 0, 1, 2))):
        i = rng.randrange(n)
        out.append((i, min(n, i + rng.randint(1, 3)), rng.choice(labels)))
    offsets = sent.token_offsets()
    spans = [Span(offsets[i][0], offsets[j - 1][1], lab) for i, j, lab in out]
    flat, _ = tags_to_spans(list(sent.tokens), spans_to_tags(sent, spans))
    return flat


def assert_matches_seqeval(
    sentences: Sequence[Sentence], predictions: Sequence[Sequence[Span]]
) -> Scores:
    y_true = [spans_to_tags(s) for s in sentences]
    y_pred = [spans_to_tags(s, list(p)) for s, p in zip(sentences, predictions, strict=True)]
    scorer = Scorer()
    for sent, pred in zip(sentences, predictions, strict=True):
        scorer.add(sent.id, sent.spans, pred)
    ours = scorer.scores
    kw = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    assert abs(ours.overall.precision - precision_score(y_true, y_pred, **kw)) < TOL
    assert abs(ours.overall.recall - recall_score(y_true, y_pred, **kw)) < TOL
    assert abs(ours.overall.f1 - f1_score(y_true, y_pred, **kw)) < TOL
    report = classification_report(y_true, y_pred, output_dict=True, **kw)
    labels = {k for k in report if not k.endswith(" avg")}
    assert labels == set(ours.per_label)
    for label in labels:
        prf = ours.per_label[label]
        assert abs(prf.precision - report[label]["precision"]) < TOL, label
        assert abs(prf.recall - report[label]["recall"]) < TOL, label
        assert abs(prf.f1 - report[label]["f1-score"]) < TOL, label
        assert prf.tp + prf.fn == report[label]["support"], label
    # The dict API gives the same numbers.
    again = score(
        {s.id: s.spans for s in sentences},
        {s.id: p for s, p in zip(sentences, predictions, strict=True)},
    )
    assert again.overall == ours.overall and again.per_label == ours.per_label
    return ours


@pytest.mark.parametrize(
    ("corpus", "limit"), [("NCBI-disease", None), ("BC5CDR", 500), ("JNLPBA", 300)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_strict_scores_equal_seqeval(corpus: str, limit: int | None, seed: int) -> None:
    sentences = corpus_sentences(corpus, limit)
    # Gold spans are flat and token-aligned: IOB2 encodes them without loss.
    for sent in sentences[:50]:
        assert tags_to_spans(list(sent.tokens), spans_to_tags(sent))[0] == list(sent.spans)
    labels = sorted({s.label for sent in sentences for s in sent.spans})
    rng = random.Random(seed)
    predictions = [perturb(sent, labels, rng) for sent in sentences]
    scores = assert_matches_seqeval(sentences, predictions)
    # The perturbation really perturbs: a score of 1 or 0 would prove little.
    assert 0.3 < scores.overall.f1 < 0.95
    assert scores.overall.fp > 0 and scores.overall.fn > 0


def test_perfect_and_empty_predictions() -> None:
    sentences = corpus_sentences("NCBI-disease", 300)
    perfect = assert_matches_seqeval(sentences, [s.spans for s in sentences])
    assert perfect.overall.precision == perfect.overall.recall == perfect.overall.f1 == 1.0
    assert perfect.per_label["Disease"].f1 == 1.0
    empty = assert_matches_seqeval(sentences, [[] for _ in sentences])
    assert empty.overall.recall == 0.0 and empty.overall.f1 == 0.0
    assert empty.overall.fn == sum(len(s.spans) for s in sentences) > 0


def sent(text: str, spans: Sequence[tuple[int, int, str]] = (), id: str = "s") -> Sentence:
    offsets = Sentence.from_tokens(id, text.split(" ")).token_offsets()
    return Sentence.from_tokens(
        id, text.split(" "), [Span(offsets[i][0], offsets[j - 1][1], lab) for i, j, lab in spans]
    )


def test_strict_matching_by_hand() -> None:
    a = sent("colon cancer and breast cancer", [(0, 2, "Disease"), (3, 5, "Disease")], "a")
    b = sent("aspirin causes bleeding", [(0, 1, "Chemical"), (2, 3, "Disease")], "b")
    predicted: dict[str, Iterable[Span]] = {
        "a": [
            Span(0, 12, "Disease"),  # exact: tp
            Span(0, 12, "Disease"),  # a repeated prediction counts once
            Span(24, 30, "Disease"),  # `cancer` only: boundary error = fp + fn
        ],
        "b": [Span(0, 7, "Disease"), Span(15, 23, "Disease")],  # wrong label: fp + fn; tp
    }
    scores = score({"a": a.spans, "b": b.spans}, predicted)
    assert (scores.overall.tp, scores.overall.fp, scores.overall.fn) == (2, 2, 2)
    assert scores.per_label["Chemical"] == PRF(tp=0, fp=0, fn=1)
    assert scores.per_label["Disease"] == PRF(tp=2, fp=2, fn=1)
    assert scores.overall.f1 == pytest.approx(0.5)
    # Same offsets in another sentence are another entity.
    crossed = score({"a": a.spans, "b": b.spans}, {"b": list(a.spans)})
    assert crossed.overall.tp == 0
    assert crossed.overall.fp == 2 and crossed.overall.fn == 4


def test_no_gold_no_prediction_is_zero_not_an_error() -> None:
    scores = score({"x": []}, {"x": []})
    assert scores.overall.as_dict() == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 0,
    }
    assert scores.parse_error_rate == 0.0 and scores.hallucination_rate == 0.0


def test_predictions_for_unknown_sentence_ids_raise() -> None:
    a = sent("colon cancer", [(0, 2, "Disease")], "a")
    with pytest.raises(KeyError, match="zzz"):
        score({"a": a.spans}, {"a": a.spans, "zzz": []})
    # A missing prediction is an empty one.
    assert score({"a": a.spans}, {}).overall.fn == 1


def test_parse_error_and_hallucination_rates_from_parse_results() -> None:
    fmt = get_format("multi_term")
    types = ["Disease"]
    sentences = [
        sent("colon cancer and influenza", [(0, 2, "Disease"), (3, 4, "Disease")], "a"),
        sent("no disease here", [], "b"),
        sent("breast cancer", [(0, 2, "Disease")], "c"),
        sent("gout", [(0, 1, "Disease")], "d"),
    ]
    outputs = {
        "a": "colon cancer\ninfluenza",  # clean
        "b": "malaria\nmeasles",  # two hallucinations
        "c": "breast cancer\nbreast cancer\nmumps",  # a repeat and a hallucination
        "d": "None",  # clean, misses the entity
    }
    parses = {s.id: fmt.parse([outputs[s.id]], s, types) for s in sentences}
    assert [p.predicted_mentions for p in parses.values()] == [2, 2, 3, 0]
    assert [p.hallucinated for p in parses.values()] == [0, 2, 1, 0]
    scores = score(
        {s.id: s.spans for s in sentences},
        {sid: p.spans for sid, p in parses.items()},
        parses,
    )
    assert scores.sentences == 4
    assert scores.sentences_with_parse_errors == 2
    assert scores.parse_error_rate == 0.5
    assert scores.parse_problems == 4  # 2 + (repeat + mumps)
    assert scores.hallucination_rate == pytest.approx(3 / 7)
    assert (scores.overall.tp, scores.overall.fp, scores.overall.fn) == (3, 0, 1)
    metrics = scores.as_metrics("test_")
    assert metrics["test_f1"] == pytest.approx(scores.overall.f1)
    assert metrics["test_f1_Disease"] == pytest.approx(scores.overall.f1)
    assert metrics["test_parse_error_rate"] == 0.5
    assert metrics["test_hallucination_rate"] == pytest.approx(3 / 7)
    assert metrics["test_sentences"] == 4.0


def test_scorer_accumulates_like_score() -> None:
    a = sent("colon cancer", [(0, 2, "Disease")], "a")
    b = sent("gout", [(0, 1, "Disease")], "b")
    scorer = Scorer()
    scorer.add("a", a.spans, a.spans, ParseResult(problems=["x"], predicted_mentions=1))
    scorer.add("b", b.spans, [], ParseResult(predicted_mentions=2, hallucinated=2))
    sc = scorer.scores
    assert (sc.overall.tp, sc.overall.fn) == (1, 1)
    assert sc.parse_error_rate == 0.5
    assert sc.hallucination_rate == pytest.approx(2 / 3)
    assert sc.overruled_rate == 0.0


def test_overruled_rate_is_the_steered_share_of_all_items_written() -> None:
    """Kept, a steered item is among the predicted mentions; dropped, it is not: the rate is
    over every item written either way."""
    a = sent("colon cancer", [(0, 2, "Disease")], "a")
    kept, dropped = Scorer(), Scorer()
    kept.add("a", a.spans, a.spans, ParseResult(predicted_mentions=4, overruled=3))
    dropped.add("a", a.spans, a.spans, ParseResult(predicted_mentions=1, overruled=3, dropped=3))
    for scorer in (kept, dropped):
        scorer.add("b", [], [], ParseResult())
        assert scorer.scores.overruled_rate == pytest.approx(3 / 4)
        assert scorer.scores.as_metrics("dev_")["dev_overruled_rate"] == pytest.approx(3 / 4)


def test_bootstrap_interval_brackets_f1_and_narrows_with_more_sentences() -> None:
    from biogner.evaluate.metrics import bootstrap_f1

    small = [(1, 0, 0)] * 10 + [(0, 1, 1)] * 10  # F1 = 2*10 / (2*10 + 10 + 10) = 0.5
    large = small * 20
    lo_s, hi_s = bootstrap_f1(small)
    lo_l, hi_l = bootstrap_f1(large)
    assert lo_s < 0.5 < hi_s and lo_l < 0.5 < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 2  # 20x the sentences: about 1/sqrt(20) the width
    assert bootstrap_f1(small) == bootstrap_f1(small)  # seeded: reproducible
    assert bootstrap_f1([(3, 0, 0)] * 5) == (1.0, 1.0)


def test_paired_bootstrap_tells_a_real_difference_from_noise() -> None:
    from biogner.evaluate.metrics import paired_bootstrap

    good = [(1, 0, 0)] * 80 + [(0, 0, 1)] * 20
    bad = [(1, 0, 0)] * 40 + [(0, 0, 1)] * 60
    assert paired_bootstrap(good, bad) > 0.99
    assert paired_bootstrap(bad, good) < 0.01
    assert paired_bootstrap(good, good) == 0.5  # identical systems: every resample ties
    nearly = [*good[:-21], (0, 0, 1), *good[-20:]]  # one sentence worse
    assert 0.5 < paired_bootstrap(good, nearly) < 0.95
    with pytest.raises(ValueError, match="same sentences"):
        paired_bootstrap(good, bad[:10])


def test_scores_carry_interval_and_counts_as_metrics() -> None:
    scorer = Scorer()
    for i in range(30):
        gold = [Span(0, 4, "Disease")]
        scorer.add(f"s{i}", gold, gold if i % 3 else [Span(5, 9, "Disease")])
    m = scorer.scores.as_metrics("dev_")
    assert m["dev_sentences"] == 30 and m["dev_gold_mentions"] == 30
    assert m["dev_f1_low"] < m["dev_f1"] < m["dev_f1_high"]
    assert scorer.scores.per_sentence[0] == (0, 1, 1) and scorer.scores.per_sentence[1] == (1, 0, 0)


def test_each_label_has_its_own_interval_over_all_sentences() -> None:
    """Per type (BC5CDR-chem and -disease come from one BC5CDR scoring): counts per sentence
    for every label, zeros where a sentence has none of it, even a label first seen late."""
    scorer = Scorer()
    d, c = Span(0, 4, "Disease"), Span(5, 9, "Chemical")
    for i in range(30):
        scorer.add(f"s{i}", [d], [d] if i % 3 else [])  # Disease only: recall 2/3
    for i in range(30, 40):
        scorer.add(f"s{i}", [c], [c])  # Chemical appears at sentence 30
    sc = scorer.scores
    assert [len(v) for v in sc.per_label_sentence.values()] == [40, 40]
    assert sc.per_label_sentence["Chemical"][:30] == [(0, 0, 0)] * 30
    m = sc.as_metrics("test_")
    assert m["test_gold_mentions_Disease"] == 30 and m["test_gold_mentions_Chemical"] == 10
    assert m["test_f1_low_Chemical"] == m["test_f1_high_Chemical"] == 1.0
    assert m["test_f1_low_Disease"] < m["test_f1_Disease"] < m["test_f1_high_Disease"] < 1.0
    # the overall interval differs from either label's
    assert (m["test_f1_low"], m["test_f1_high"]) != (
        m["test_f1_low_Disease"],
        m["test_f1_high_Disease"],
    )
