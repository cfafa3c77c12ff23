"""The model side of serving without Ray: a model URI resolves and loads against the store of
the service's config, whatever MLflow's process-wide store points at."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow_store import make_cfg
from serve_support import META, save_tiny_model

from biogner.models.config import GenerationConfig
from biogner.serve import engine
from biogner.tracking.models import log_hf_model
from biogner.tracking.runs import tracked_run


def test_a_run_uri_loads_from_the_configured_store(store: Path, tmp_path: Path) -> None:
    cfg = make_cfg(store, "engine")
    with tracked_run(cfg, "tiny") as run_id:
        log_hf_model(run_id, save_tiny_model(tmp_path / "tiny"), cfg=cfg)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'another.db'}")  # a replica's default
    loaded = engine.load(f"runs:/{run_id}/model", cfg, GenerationConfig(device="cpu"))
    try:
        assert loaded.ref.run_id == run_id
        assert loaded.format == META["format"] and loaded.entity_types == META["entity_types"]
    finally:
        loaded.close()
