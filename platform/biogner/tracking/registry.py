"""The model registry: versions, aliases (the served `champion`), and `models:/` URIs.

An alias moves only to a version that loads: a serving redeploy (or the alias follower)
loads whatever it points at.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from biogner.tracking.config import TrackingConfig
from biogner.tracking.models import hf_dir_in
from biogner.tracking.runs import (
    ALREADY_EXISTS,
    DOES_NOT_EXIST,
    INVALID_PARAMETER,
    client_for,
    setup,
)
from biogner.tracking.uris import ModelUri, logged_model_uri

# `ModelVersion.status` (MLflow's ModelVersionStatus names)
_READY = "READY"
_PENDING = "PENDING_REGISTRATION"


def register_champion(
    cfg: TrackingConfig,
    run_id: str,
    model_name: str,
    alias: str = "champion",
    artifact_path: str = "model",
    ready_timeout_s: float = 30.0,
) -> str:
    """Register `runs:/<run_id>/<artifact_path>` as a new version and point `alias` at it.

    Creates the registered model if missing. Returns the new version number (as a string),
    usable in `models:/<name>/<version>`; `models:/<name>@<alias>` now resolves to it. The
    alias moves only to a version that `check_model_version` accepts: a serving redeploy
    loads whatever it points at. Otherwise LookupError, and the alias stays where it was.
    """
    version = register_version(cfg, run_id, model_name, artifact_path)
    try:
        check_model_version(cfg, model_name, version, ready_timeout_s)
    except LookupError as e:
        current = get_alias_version(cfg, model_name, alias)
        kept = f"version {current.version}" if current is not None else "no version"
        raise LookupError(f"{e}; alias {alias!r} not moved (still on {kept})") from e
    client_for(cfg).set_registered_model_alias(model_name, alias, version)
    return version


def register_version(
    cfg: TrackingConfig, run_id: str, model_name: str, artifact_path: str = "model"
) -> str:
    """Register the model `run_id` logged as `artifact_path` as a new version of
    `model_name` (created if missing), moving no alias; returns the version number.

    The client calls mlflow.register_model makes, without the lines it prints to stderr."""
    setup(cfg)
    client = client_for(cfg)
    model_id = logged_model_id(cfg, run_id, artifact_path)
    try:
        client.create_registered_model(model_name)
    except MlflowException as e:
        if e.error_code != ALREADY_EXISTS:
            raise
    mv = client.create_model_version(
        model_name, logged_model_uri(model_id), model_id=model_id, await_creation_for=0
    )
    return str(mv.version)


def _missing_model_files(location: str, tracking_uri: str) -> str | None:
    """What a biogner model at artifact `location` lacks to load (None: nothing).

    Reads the MLmodel file and lists the HF directory it names; the weights are not fetched.
    """
    base = location.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="biogner-check-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{base}/MLmodel", dst_path=tmp, tracking_uri=tracking_uri
            )
        except (MlflowException, OSError):
            return f"no MLmodel file at {base}"
        root = Path(path).parent
        try:
            hf_rel = hf_dir_in(root).relative_to(root).as_posix()
        except ValueError as e:
            return str(e)
    listed = mlflow.artifacts.list_artifacts(f"{base}/{hf_rel}", tracking_uri=tracking_uri)
    names = {Path(f.path).name for f in listed}
    if not names & {"config.json", "adapter_config.json"}:
        return f"no config.json (or adapter_config.json) in {base}/{hf_rel}"
    if not any(n.endswith(".safetensors") for n in names):
        return f"no .safetensors weights in {base}/{hf_rel}"
    return None


def check_model_version(
    cfg: TrackingConfig, model_name: str, version: str, ready_timeout_s: float = 30.0
) -> None:
    """Raise LookupError unless version `version` of `model_name` is READY and loadable.

    A registry entry is only a pointer: MLflow registers a version whose model files are gone
    (or not yet written) and serving finds out at the next redeploy. PENDING_REGISTRATION is
    polled for up to `ready_timeout_s`.
    """
    client = client_for(cfg)
    deadline = time.monotonic() + ready_timeout_s
    mv = client.get_model_version(model_name, version)
    while mv.status == _PENDING and time.monotonic() < deadline:
        time.sleep(0.5)
        mv = client.get_model_version(model_name, version)
    problem: str | None = None
    if mv.status != _READY:
        detail = f" ({mv.status_message})" if mv.status_message else ""
        problem = f"status {mv.status}, not {_READY}{detail}"
    else:
        try:
            location = client.get_model_version_download_uri(model_name, version)
            problem = _missing_model_files(location, cfg.uri)
        except MlflowException as e:
            problem = f"its source does not resolve: {e.message}"
    if problem is not None:
        raise LookupError(
            f"{model_name} version {version} (run {_run_label(client, mv.run_id)}, source "
            f"{mv.source}) is not servable: {problem}"
        )


def _run_label(client: MlflowClient, run_id: str | None) -> str:
    if not run_id:
        return "unknown"
    try:
        return f"{client.get_run(run_id).info.run_name} {run_id}"
    except MlflowException:
        return run_id


def logged_model_id(cfg: TrackingConfig, run_id: str, artifact_path: str = "model") -> str:
    """The id of the model logged as `artifact_path` by `run_id` (the newest if several).

    MLflow 3 stores logged models beside the run (`models:/<model_id>`), not in its artifact
    tree; `runs:/<run_id>/<artifact_path>` resolves through this link.
    """
    client = client_for(cfg)
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    models = [client.get_logged_model(o.model_id) for o in outputs]
    named = [m for m in models if m.name == artifact_path]
    if not named:
        raise LookupError(
            f"run {run_id} ({run.info.run_name}, status {run.info.status}) has no model logged "
            f"as {artifact_path!r}; log one with log_hf_model first"
        )
    return str(max(named, key=lambda m: m.creation_timestamp).model_id)


def get_alias_version(cfg: TrackingConfig, model_name: str, alias: str) -> ModelVersion | None:
    """The model version `alias` points to, or None when the model or alias does not exist.

    Read-only and bound to cfg's store: replicas call it every `follow_alias_s` from a
    thread, so it must neither create (or restore) an experiment nor move MLflow's
    process-wide URI under a download running beside it."""
    try:
        return client_for(cfg).get_model_version_by_alias(model_name, alias)
    except MlflowException as e:
        if e.error_code in (DOES_NOT_EXIST, INVALID_PARAMETER):
            return None
        raise


def model_version(cfg: TrackingConfig, uri: ModelUri) -> ModelVersion:
    """The registry version a `models:/` URI names (an alias is looked up now)."""
    if uri.name is None:
        raise ValueError(f"{uri.uri} names no registered model (models:/...)")
    if uri.alias is not None:
        mv = get_alias_version(cfg, uri.name, uri.alias)
        if mv is None:
            raise LookupError(
                f"{uri.uri}: no registered model {uri.name!r} with alias {uri.alias!r}"
            )
        return mv
    return client_for(cfg).get_model_version(uri.name, str(uri.version))
