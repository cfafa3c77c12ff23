"""A throw-away SQLite MLflow store for tests: the config that points at it."""

from __future__ import annotations

from pathlib import Path

from biogner.tracking.config import TrackingConfig


def make_cfg(store: Path, experiment: str) -> TrackingConfig:
    return TrackingConfig(
        tracking_uri=f"sqlite:///{store / 'mlflow.db'}",
        experiment=experiment,
        artifact_root=(store / "artifacts").as_uri(),
    )
