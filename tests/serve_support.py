"""What the live-service tests share: a tiny model saved as a biogner model directory, a small
service config over a SQLite MLflow store, and logging a model version to that registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biogner.models.load import save_model_dir
from biogner.serve.application import parse_config
from biogner.serve.schema import ServeConfig

API_KEY = "test-key-123"
META = {
    "format": "conv_term",
    "entity_types": ["Disease"],
    "base_model": "tiny-llama",
    "corpora": ["NCBI-disease"],
}


def save_tiny_model(out: Path) -> Path:
    """A tiny-llama saved as a biogner model directory (built from config, no training)."""
    return save_model_dir("tiny-llama", out, META)


def tracking_args(store: Path) -> dict[str, str]:
    return {"tracking_uri": f"sqlite:///{store}/mlflow.db", "artifact_root": f"{store}/artifacts"}


def app_config(model_uri: str, store: Path, **extra: Any) -> ServeConfig:
    """A small service: short answers, small limits, a queue that a burst overflows."""
    args: dict[str, Any] = {
        "model_uri": model_uri,
        "tracking": tracking_args(store),
        "generation": {"device": "cpu", "max_new_tokens_cap": 16},
        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05},
        "limits": {
            "max_texts": 4,
            "max_chars_per_text": 2000,
            "max_body_bytes": 20000,
            "window_tokens": 24,
            "window_chars": 120,
            "max_entity_types": 3,
            "max_windows": 16,
        },
        # 16 at work + 24 waiting: 24 concurrent requests fit, a burst does not
        "model": {
            "max_ongoing_requests": 16,
            "max_queued_requests": 24,
            "health_check_period_s": 1,
        },
        "ingress": {
            "ray_actor_options": {
                "num_cpus": 0,
                "runtime_env": {"env_vars": {"BIOGNER_API_KEY": API_KEY}},
            }
        },
    }
    return parse_config({**args, **extra})


def log_version(
    store: Path,
    model_dir: Path,
    name: str,
    meta: dict[str, Any] | None = None,
    alias: str = "champion",
) -> tuple[str, str]:
    """Log `model_dir` in a new run and register it as a version of `name` with `alias`
    (moved only to a loadable version: `register_champion`); (version, run id)."""
    from biogner.tracking.config import TrackingConfig
    from biogner.tracking.models import log_hf_model
    from biogner.tracking.registry import register_champion
    from biogner.tracking.runs import tracked_run

    cfg = TrackingConfig(**tracking_args(store), experiment="serve-test")
    with tracked_run(cfg, "champion") as run_id:
        log_hf_model(run_id, model_dir, metadata=meta or META, cfg=cfg)
    return register_champion(cfg, run_id, name, alias=alias), run_id
