"""The Python API: `biogner.load(uri_or_folder)` -> `Annotator`, `extract` and `pipe`.

A noise-weight tiny model (it marks entities under the format's grammar) stands in for a
trained one: what it finds does not matter, that every way of asking gives the same entities
at exact offsets does. The endpoint and the pyfunc against it: tests/test_serve.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_noise_model
from mlflow_store import make_cfg

import biogner
from biogner.annotate.annotator import Annotator, EntityTypeError
from biogner.annotate.entities import Entity
from biogner.models.config import METADATA_FILE, GenerationConfig
from biogner.tracking.models import log_hf_model
from biogner.tracking.runs import tracked_run

TYPES = ["Chemical", "Disease"]
TEXTS = [
    "Aspirin and ibuprofen relieve fever in patients with arthritis.",
    "Cisplatin caused renal failure.\n\nNo further findings.",
    "",
    "Hypertension 😀 was treated with lisinopril (10 mg).",
]
GEN = GenerationConfig(device="cpu", max_new_tokens_cap=24)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = write_noise_model(tmp_path_factory.mktemp("api") / "noise", seed=5)
    card = {"format": "multi_term", "entity_types": TYPES, "base_model": "tiny-llama"}
    (out / METADATA_FILE).write_text(json.dumps(card))
    return out


@pytest.fixture(scope="module")
def model(model_dir: Path) -> Annotator:
    return biogner.load(model_dir, generation=GEN)


def test_extract_gives_each_text_its_entities_at_exact_offsets(model: Annotator) -> None:
    found = model.extract(TEXTS)
    assert len(found) == len(TEXTS) and found[2] == []
    assert any(found), "the noise model marks something under the grammar"
    for text, entities in zip(TEXTS, found, strict=True):
        for e in entities:
            assert isinstance(e, Entity) and e.label in TYPES
            assert text[e.start : e.end] == e.text and e.score is not None
    assert model.entity_types == TYPES and model.card.format == model.format == "multi_term"


def test_types_and_scores_filter_what_extract_returns(model: Annotator) -> None:
    every = model.extract(TEXTS)
    only = model.extract(TEXTS, entity_types=["Disease"])
    assert only == [[e for e in row if e.label == "Disease"] for row in every]
    scores = sorted(e.score for row in every for e in row if e.score is not None)
    cut = scores[len(scores) // 2]
    high = model.extract(TEXTS, min_score=cut)
    assert high == [[e for e in row if e.score is not None and e.score >= cut] for row in every]


def test_pipe_streams_the_same_entities_in_order(model: Annotator) -> None:
    """`pipe` is `extract` a batch at a time. (A score may move in its third decimal with the
    batch a sentence is padded in, so the batches compared are the same.)"""
    texts = TEXTS * 2
    expected = [row for i in range(0, len(texts), 3) for row in model.extract(texts[i : i + 3])]
    streamed = model.pipe((t for t in texts), batch_size=3)
    assert not isinstance(streamed, list)  # a generator: the stream is not read up front
    assert list(streamed) == expected
    whole = model.extract(texts)
    spans = [[(e.start, e.end, e.label) for e in row] for row in whole]
    assert [[(e.start, e.end, e.label) for e in row] for row in expected] == spans


def test_bad_calls_fail_clearly(model: Annotator) -> None:
    with pytest.raises(EntityTypeError, match=r"unknown entity types \['Gene'\]"):
        model.extract(TEXTS, entity_types=["Gene"])
    with pytest.raises(EntityTypeError, match="must not be empty"):
        model.extract(TEXTS, entity_types=[])
    with pytest.raises(TypeError, match=r"extract\(\[text\]\)"):
        model.extract("Aspirin relieves fever.")  # type: ignore[arg-type]
    with pytest.raises(EntityTypeError):  # before any text of the stream is read
        model.pipe(iter(()), entity_types=["Gene"]).__next__()
    with pytest.raises(FileNotFoundError):
        biogner.load("/no/such/model/folder")


@pytest.mark.slow  # a second model load and a logged model: the store path, in `make test`
def test_a_run_uri_loads_the_same_model(model: Annotator, model_dir: Path, store: Path) -> None:
    cfg = make_cfg(store, "api")
    with tracked_run(cfg, "api") as run_id:
        log_hf_model(run_id, model_dir, cfg=cfg)
    logged = biogner.load(f"runs:/{run_id}/model", tracking=cfg, generation=GEN)
    assert logged.extract(TEXTS) == model.extract(TEXTS)


def test_importing_biogner_loads_no_model_library() -> None:
    """`import biogner` (the ingress, every Ray worker) stays light: `load` comes on use."""
    code = (
        "import sys, biogner, biogner.types; "
        "print(sorted(m for m in ('torch', 'transformers', 'mlflow') if m in sys.modules)); "
        "print(callable(biogner.load))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "True"]
