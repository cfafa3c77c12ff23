"""Where runs and models go (the `tracking` section of every config): pydantic only.

The defaults are absolute (a SQLite store and an artifact folder under
`<BIOGNER_HOME or cwd>/.biogner/`) so that a Ray worker in another working directory
addresses the same store. `MLFLOW_TRACKING_URI` overrides the default store.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, model_validator

from biogner.home import biogner_home


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


class TrackingConfig(BaseModel):
    """Where runs and models go; unset fields are resolved when the config is built.

    The defaults are absolute (a SQLite store and an artifact folder under
    `<BIOGNER_HOME or cwd>/.biogner/`) so that a Ray worker in another working directory
    addresses the same store. `MLFLOW_TRACKING_URI` overrides the default store.
    """

    tracking_uri: str | None = None
    experiment: str = "biogner"
    artifact_root: str | None = None

    @model_validator(mode="after")
    def _resolve_defaults(self) -> TrackingConfig:
        home = biogner_home() / ".biogner"
        if self.tracking_uri is None:
            env_uri = os.environ.get("MLFLOW_TRACKING_URI")
            self.tracking_uri = env_uri or f"sqlite:///{home / 'mlflow.db'}"
        if self.artifact_root is None and is_local_store(self.tracking_uri):
            # A remote tracking server has its own artifact root; a local store needs an
            # explicit one, or MLflow defaults to ./mlruns relative to each process.
            self.artifact_root = (home / "artifacts").as_uri()
        return self

    @property
    def uri(self) -> str:
        """The resolved tracking URI (never None after validation)."""
        assert self.tracking_uri is not None
        return self.tracking_uri
