"""The model side of serving without Ray: a model URI resolves and loads against the store of
the service's config, whatever MLflow's process-wide store points at."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow_store import make_cfg
from serve_support import META, save_tiny_model

from biogner.models.config import GenerationConfig
from biogner.serve.loaded import load
from biogner.tracking.models import log_hf_model
from biogner.tracking.runs import tracked_run


def test_a_run_uri_loads_from_the_configured_store(store: Path, tmp_path: Path) -> None:
    cfg = make_cfg(store, "engine")
    with tracked_run(cfg, "tiny") as run_id:
        log_hf_model(run_id, save_tiny_model(tmp_path / "tiny"), cfg=cfg)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'another.db'}")  # a replica's default
    loaded = load(f"runs:/{run_id}/model", cfg, GenerationConfig(device="cpu"))
    try:
        assert loaded.ref.run_id == run_id
        assert loaded.format == META["format"] and loaded.entity_types == META["entity_types"]
    finally:
        loaded.close()


def test_a_multi_format_model_is_served_in_a_format_it_learned_or_refused(
    tmp_path: Path,
) -> None:
    """The format served is explicit: the card's own by default, another of its `formats`
    on request, and one it was never trained in is refused when the model loads."""
    import json

    import pytest

    from biogner.models.card import ModelCardError
    from biogner.models.config import METADATA_FILE

    model_dir = save_tiny_model(tmp_path / "mix")
    card = {**META, "format": "multi_term", "formats": ["multi_term", "conv_term"]}
    (model_dir / METADATA_FILE).write_text(json.dumps(card))
    gen = GenerationConfig(device="cpu")
    assert load(str(model_dir), make_cfg(tmp_path, "e"), gen).format == "multi_term"
    conv = load(str(model_dir), make_cfg(tmp_path, "e"), gen, "conv_term")
    assert conv.format == "conv_term" and conv.card.formats == ["multi_term", "conv_term"]
    with pytest.raises(ModelCardError, match="not in 'multi_bio'"):
        load(str(model_dir), make_cfg(tmp_path, "e"), gen, "multi_bio")
