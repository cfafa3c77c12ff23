"""biogner's decode loop against step-by-step constrained greedy decoding (transformers'
`generate` with the grammar's mask at every step, `generation.decoder: hf`): with every
mechanism on (shared-prefix cache, forced tokens, copy speculation, rows leaving) the answers
equal the reference token for token, and so do the steered-item counts, for all ten formats,
constrained and free, on sentences of the corpora and on unicode- and whitespace-heavy ones
hypothesis writes, in mixed batches.

Two models: a tiny-llama with large random weights (its answers wander, so the grammar
steers and cuts them), and a tiny-llama fitted for a few hundred steps to restate and tag
sentences (so drafts are confirmed and the speculation's accept path runs, not only its
rejections). fp32: the equality is exact there (bf16 near-ties are the bench's concern).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import COPIER_TYPES, write_noise_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biogner.corpora import load_split
from biogner.formats import FORMATS
from biogner.generation import Generator
from biogner.models.config import MECHANISMS_OFF, GenerationConfig
from biogner.types import Sentence, Span

TYPES = COPIER_TYPES
OFF = MECHANISMS_OFF


@pytest.fixture(scope="module")
def corpus(data_dir) -> list[Sentence]:
    return load_split("BC5CDR", "dev", data_dir, limit=40)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, copier_model: Path) -> dict[str, Path]:
    return {
        "noise": write_noise_model(tmp_path_factory.mktemp("noise"), seed=3),
        "copier": copier_model,  # fitted on corpus[:24]
    }


def generate(model: Path, sentences, fmt: str, batch: int, constrained: bool, **switches):
    cfg = GenerationConfig(
        **{
            "device": "cpu",
            "dtype": "float32",
            "max_new_tokens_cap": 48,
            "batch_size": batch,
            "constrained": constrained,
            **switches,
        }
    )
    return Generator(model, cfg).extract(sentences, fmt, TYPES)


def assert_same(reference, fast) -> None:
    for ref, out in zip(reference, fast, strict=True):
        assert out.answer_tokens == ref.answer_tokens, ref.sentence.text
        assert out.answers == ref.answers
        assert (out.parse.overruled, out.parse.dropped) == (ref.parse.overruled, ref.parse.dropped)
        assert out.generated_tokens == ref.generated_tokens and out.truncated == ref.truncated
        # the entity scores too: each token's probability where it was chosen, the same
        # definition in both loops (forced tokens 1.0), up to float rounding
        assert out.parse.scores.keys() == ref.parse.scores.keys() == set(ref.parse.spans)
        for span, score in ref.parse.scores.items():
            assert out.parse.scores[span] == pytest.approx(score, abs=1e-4), span


# test-fast keeps the noise model on the multi formats and conv_term; the copier and the other
# conv formats (two to four seconds each) run in `make test` (slow)
@pytest.mark.parametrize(
    "fmt",
    [
        f if f.startswith("multi_") or f == "conv_term" else pytest.param(f, marks=pytest.mark.slow)
        for f in sorted(FORMATS)
    ],
)
@pytest.mark.parametrize("model", ["noise", pytest.param("copier", marks=pytest.mark.slow)])
def test_every_mechanism_on_equals_step_by_step_greedy(models, corpus, fmt: str, model: str):
    sentences = corpus[24:36]
    for constrained in (True, False):
        reference = generate(models[model], sentences, fmt, 5, constrained, decoder="hf")
        assert_same(reference, generate(models[model], sentences, fmt, 5, constrained))


@pytest.mark.parametrize(
    ("fmt", "switch", "most"),
    [("multi_inline", "copy_draft_tokens", 0.7), ("multi_term", "mention_draft_tokens", 0.9)],
)
def test_the_copier_confirms_drafts(models, corpus, fmt: str, switch: str, most: float) -> None:
    """The accept path runs: the fitted model restates sentences and quotes their mentions,
    so speculation saves forward passes (counted by the model's forward calls)."""
    calls = {"n": 0}

    def count(*_args):
        calls["n"] += 1

    sentences = corpus[:6]  # sentences it was fitted on: it restates them
    per_mode = {}
    for drafts in (0, 8):
        cfg = GenerationConfig(device="cpu", dtype="float32", batch_size=6, **{switch: drafts})
        gen = Generator(models["copier"], cfg)
        handle = gen.model.base_model.register_forward_hook(lambda *a: count())
        calls["n"] = 0
        out = gen.extract(sentences, fmt, TYPES)
        handle.remove()
        per_mode[drafts] = (calls["n"], [g.answer_tokens for g in out])
    assert per_mode[8][1] == per_mode[0][1]
    # drafts confirmed: fewer passes (refused drafts alone would not save any)
    assert per_mode[8][0] < most * per_mode[0][0], per_mode


@pytest.mark.parametrize("switch", sorted(OFF))
def test_each_switch_alone_changes_no_answer(models, corpus, switch: str) -> None:
    sentences = corpus[30:38]
    fmt = "conv_term" if switch == "mention_draft_tokens" else "conv_bio"
    reference = generate(models["copier"], sentences, fmt, 3, True, **OFF)
    only = {**OFF, switch: GenerationConfig.model_fields[switch].default}
    assert_same(reference, generate(models["copier"], sentences, fmt, 3, True, **only))


WORD = st.one_of(
    st.text(
        alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S")),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(["[", "]", "|", "\\", "(O)", "B-Disease", "None", '"', "{", "é", "β-2", "Na+"]),
)


@st.composite
def sentences(draw) -> list[Sentence]:
    out = []
    for k in range(draw(st.integers(1, 4))):
        tokens = draw(st.lists(WORD.filter(lambda w: w.strip() == w and w), min_size=1, max_size=9))
        text = " ".join(tokens)
        spans = []
        if draw(st.booleans()):
            start = len(" ".join(tokens[:1])) + 1 if len(tokens) > 1 else 0
            first = tokens[1] if len(tokens) > 1 else tokens[0]
            spans.append(Span(start, start + len(first), "Disease"))
        out.append(Sentence(f"h{k}", text, tokens, spans))
    return out


@pytest.mark.slow  # 12 drawn batches x 2 models: ~11 s
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=sentences(), fmt=st.sampled_from(sorted(FORMATS)), size=st.integers(1, 4))
def test_written_sentences_decode_the_same(models, batch, fmt: str, size: int) -> None:
    for model in ("noise", "copier"):
        reference = generate(models[model], batch, fmt, size, True, decoder="hf")
        assert_same(reference, generate(models[model], batch, fmt, size, True))


@pytest.mark.parametrize("fmt", ["multi_term", "conv_triple", "multi_json"])
def test_answers_cut_by_the_budget_count_the_same_steered_items(models, corpus, fmt: str):
    """Budgets that end an answer on a forced token: whether the model would have chosen it
    still counts (it was lost when the row finished before the pass computing it)."""
    sentences = corpus[24:32]
    for cap in range(4, 20, 3):
        switches = {"max_new_tokens_cap": cap}
        reference = generate(models["noise"], sentences, fmt, 8, True, decoder="hf", **switches)
        assert_same(reference, generate(models["noise"], sentences, fmt, 8, True, **switches))
