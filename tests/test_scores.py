"""Per-entity confidence: where each writing says a span was written, how tokens' probabilities
make a score, the scores of a fitted model (higher on what it gets right), the `min_score`
filter, and calibration."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import COPIER_TYPES as TYPES
from conftest import write_noise_model

from biogner.annotate.assemble import assemble
from biogner.annotate.text import iter_windows
from biogner.corpora import load_split
from biogner.evaluate.calibration import calibrate
from biogner.formats import FORMATS, get_format
from biogner.generation import Generator
from biogner.generation.answer import Turn
from biogner.generation.scores import span_scores
from biogner.models.config import GenerationConfig
from biogner.serve.schema import ExtractRequest
from biogner.types import Sentence


@pytest.fixture(scope="module")
def corpus(data_dir) -> list[Sentence]:
    return load_split("BC5CDR", "dev", data_dir, limit=60)


@pytest.fixture(scope="module")
def noise(tmp_path_factory) -> Path:
    return write_noise_model(tmp_path_factory.mktemp("noise"), seed=3)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_writing_says_where_it_wrote_each_span(corpus, fmt: str) -> None:
    """The parser of each writing locates every span of a gold answer in that answer: the
    bracket, the line, the object or the tagged words that wrote it."""
    f = get_format(fmt)
    located = 0
    for sentence in corpus:
        answers = f.answers(sentence, TYPES)
        parse = f.parse(answers, sentence, TYPES)
        for span in parse.spans:
            index, start, end = parse.sources[span]
            written = answers[index][start:end]
            mention = sentence.text[span.start : span.end]
            if f.writing.name == "inline":
                assert written.startswith("[") and written.endswith(f" | {span.label}]")
            elif f.writing.name == "bio":
                assert written.split()[0].startswith(mention.split()[0] + "(")
            else:
                assert mention in written.replace('\\"', '"'), (written, mention)
            located += 1
    assert located > 20


def _turn(tokenizer, pieces: list[tuple[str, float]], end_prob: float) -> Turn:
    tokens, probs = [], []
    for text, p in pieces:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        tokens += ids
        probs += [p] + [1.0] * (len(ids) - 1)  # the first token decides, the rest forced
    return Turn(tokenizer.decode(tokens).strip(), tokens, False, probs=probs, end_prob=end_prob)


def test_a_span_scores_the_tokens_that_wrote_it_and_the_end_that_closed_it(
    noise: Path, corpus
) -> None:
    gen = Generator(noise, GenerationConfig(device="cpu", dtype="float32"))
    vocab = gen.vocabulary()
    sentence = next(
        sent
        for sent in corpus
        if len({sp.label for sp in sent.spans}) == 1 and len(sent.spans) >= 2
    )
    fmt = get_format("conv_term")
    label = sentence.spans[0].label
    lines = [sentence.text[s.start : s.end] for s in sentence.spans if s.label == label]
    pieces = [
        (line + ("\n" if k < len(lines) - 1 else ""), 0.5 + 0.1 * k) for k, line in enumerate(lines)
    ]
    turn = _turn(gen.tokenizer, pieces, end_prob=0.8)
    parse = fmt.writing.parse(turn.text, sentence, [label])
    scores = span_scores(parse, [turn], vocab)
    spans = sorted(parse.spans, key=lambda s: parse.sources[s][1])
    assert len(spans) == len(lines)
    for k, span in enumerate(spans):
        expected = 0.5 + 0.1 * k
        if k == len(lines) - 1:
            expected *= 0.8  # the last line: the end token's probability closed it
        assert scores[span] == pytest.approx(expected, rel=1e-6), (k, span)


def test_a_fitted_model_scores_what_it_gets_right_above_what_it_gets_wrong(
    copier_model: Path, corpus
) -> None:
    """On sentences it was fitted on and on others: every score in [0, 1], and correct
    entities score higher on average than wrong ones."""
    for fmt in ("multi_inline", "multi_term"):
        cfg = GenerationConfig(device="cpu", dtype="float32", max_new_tokens_cap=96)
        gens = Generator(copier_model, cfg).extract(corpus[:48], fmt, TYPES)
        right, wrong = [], []
        for g in gens:
            assert set(g.parse.scores) == set(g.parse.spans)
            gold = set(g.sentence.spans)
            for span, score in g.parse.scores.items():
                assert 0.0 <= score <= 1.0
                (right if span in gold else wrong).append(score)
        assert len(right) >= 10 and len(wrong) >= 3, (fmt, len(right), len(wrong))
        assert sum(right) / len(right) > sum(wrong) / len(wrong), fmt


def test_scores_off_gives_entities_without_a_score_and_the_same_answers(
    noise: Path, corpus
) -> None:
    on = Generator(noise, GenerationConfig(device="cpu", dtype="float32"))
    off = Generator(noise, GenerationConfig(device="cpu", dtype="float32", scores=False))
    a = on.extract(corpus[:6], "multi_term", TYPES)
    b = off.extract(corpus[:6], "multi_term", TYPES)
    assert [g.answers for g in a] == [g.answers for g in b]
    assert all(not g.parse.scores for g in b)


def test_min_score_leaves_out_lower_scored_entities(copier_model: Path, corpus) -> None:
    gen = Generator(copier_model, GenerationConfig(device="cpu", dtype="float32"))
    texts = [s.text for s in corpus[:8]]
    windows = [list(iter_windows(t, 64, 2000, f"t{i}")) for i, t in enumerate(texts)]
    flat = [w.sentence for ws in windows for w in ws]
    gens = gen.extract(flat, "multi_inline", TYPES)
    every = [e for r in assemble(texts, windows, gens, set(TYPES)) for e in r.entities]
    scores = sorted(e.score for e in every if e.score is not None)
    assert len(scores) == len(every) >= 4
    cut = scores[len(scores) // 2]
    kept = [e for r in assemble(texts, windows, gens, set(TYPES), cut) for e in r.entities]
    assert kept and all(e.score is not None and e.score >= cut for e in kept)
    assert len(kept) == sum(s >= cut for s in scores) < len(every) or cut == scores[0]


def test_min_score_is_validated_in_requests() -> None:
    assert ExtractRequest.model_validate({"texts": ["x"], "min_score": 1}).min_score == 1.0
    for bad in (1.5, -0.1, "0.5"):
        with pytest.raises(ValueError, match="min_score"):
            ExtractRequest.model_validate({"texts": ["x"], "min_score": bad})


def test_calibration_deciles_ece_and_thresholds() -> None:
    # 10 entities at 0.95, 9 right; 10 at 0.55, 5 right; 10 at 0.15, 1 right; 20 gold
    pairs = [(0.95, k < 9) for k in range(10)]
    pairs += [(0.55, k < 5) for k in range(10)] + [(0.15, k < 1) for k in range(10)]
    cal = calibrate(pairs, gold=20)
    by_low = {round(d.low, 1): d for d in cal.deciles}
    assert by_low[0.9].count == 10 and by_low[0.9].precision == pytest.approx(0.9)
    assert by_low[0.5].precision == pytest.approx(0.5) and by_low[0.1].precision == 0.1
    # gaps |0.9-0.95|, |0.5-0.55|, |0.1-0.15|, equal weights
    assert cal.ece == pytest.approx(0.05)
    points = {t.threshold: t for t in cal.thresholds}
    assert points[0.0].kept == 30 and points[0.0].recall == pytest.approx(15 / 20)
    assert points[0.6].kept == 10 and points[0.6].precision == pytest.approx(0.9)
    assert points[0.6].recall == pytest.approx(9 / 20)
    assert math.isclose(points[0.6].f1, 2 * 0.9 * 0.45 / 1.35)
    assert "| [0.9, 1.0) | 10 | 0.950 | 0.900 |" in cal.markdown()
