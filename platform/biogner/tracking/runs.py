"""MLflow runs, addressed explicitly: store, experiment, run id.

Why no MLflow "active run": Ray workers run in other processes (and other working
directories), so the driver creates the experiment and the run and workers log by run id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)
from pydantic import BaseModel

from biogner.runtime import requiet_logs
from biogner.tracking.config import TrackingConfig
from biogner.tracking.tags import (
    CHANGED_PARAMS_TAG,
    ERROR_TAG,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_RUN_NAME,
)

log = logging.getLogger(__name__)

# `MlflowException.error_code`: the names of MLflow's REST error codes (not its protobufs)
ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
INVALID_PARAMETER = "INVALID_PARAMETER_VALUE"

CONFIG_ARTIFACT = "config.yaml"
TRACEBACK_ARTIFACT = "error_traceback.txt"
# Terminal statuses after which a run with the same name is *not* resumed.
_NOT_RESUMABLE = ("FINISHED",)
_PARAM_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
_DIR_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def _prepare_store(uri: str) -> None:
    """Create the parent folder of a SQLite file, which SQLAlchemy will not do."""
    if uri.startswith("sqlite:///"):
        db_path = uri[len("sqlite:///") :]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)


_CLIENT_LOCK = threading.Lock()


@lru_cache(maxsize=8)
def _new_client(uri: str) -> MlflowClient:
    _prepare_store(uri)
    # importing mlflow gave its logger a console handler: a new store's schema lines
    # ("Creating initial MLflow database tables...") go to the command's log file
    requiet_logs()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def client_at(uri: str) -> MlflowClient:
    """One client per store and process: opening a SQLite store checks its schema (slow).

    The lock keeps threads of one process from creating a new store's schema twice at once.
    """
    with _CLIENT_LOCK:
        return _new_client(uri)


def client_for(cfg: TrackingConfig) -> MlflowClient:
    """An MlflowClient bound to cfg's store (tracking and registry)."""
    return client_at(cfg.uri)


def _experiment_location(cfg: TrackingConfig) -> str | None:
    if cfg.artifact_root is None:
        return None
    return f"{cfg.artifact_root.rstrip('/')}/{_DIR_NAME_BAD_CHARS.sub('_', cfg.experiment)}"


def setup(cfg: TrackingConfig) -> str:
    """Point MLflow at cfg's store and return the experiment id, creating it if missing.

    The experiment gets an explicit artifact location so that artifacts logged from Ray
    workers land in the same place as the driver's. Creation is race-safe: when another
    process creates the experiment first, its id is returned.
    """
    mlflow.set_tracking_uri(cfg.uri)
    mlflow.set_registry_uri(cfg.uri)
    client = client_for(cfg)
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is None:
        try:
            return client.create_experiment(
                cfg.experiment, artifact_location=_experiment_location(cfg)
            )
        except MlflowException as e:
            if e.error_code != ALREADY_EXISTS:
                raise
            exp = client.get_experiment_by_name(cfg.experiment)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        log.warning("restoring deleted MLflow experiment %r", cfg.experiment)
        client.restore_experiment(exp.experiment_id)
    return str(exp.experiment_id)


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return json.dumps(value, default=str, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


def _truncate(text: str, limit: int) -> str:
    marker = "...[truncated]"
    return text if len(text) <= limit else text[: limit - len(marker)] + marker


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into MLflow params: dotted keys, string values within limits.

    Lists and scalars become JSON text; keys keep only characters MLflow accepts.
    """
    flat: dict[str, str] = {}
    for raw_key, value in params.items():
        key = f"{prefix}.{raw_key}" if prefix else str(raw_key)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, key))
            continue
        clean_key = _PARAM_KEY_BAD_CHARS.sub("_", key)[:MAX_ENTITY_KEY_LENGTH]
        flat[clean_key] = _truncate(_stringify(value), MAX_PARAM_VAL_LENGTH)
    return flat


def _log_params(client: MlflowClient, run_id: str, params: dict[str, str], resumed: bool) -> None:
    if resumed:
        # MLflow params are immutable: on resume, log only new keys and report changed ones.
        existing = client.get_run(run_id).data.params
        changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
        if changed:
            log.warning("resumed run %s keeps its original value for params %s", run_id, changed)
            client.set_tag(
                run_id,
                CHANGED_PARAMS_TAG,
                _truncate(",".join(changed), MAX_TAG_VAL_LENGTH),
            )
        params = {k: v for k, v in params.items() if k not in existing}
    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])


def runs_named(cfg: TrackingConfig, run_name: str) -> list[Run]:
    """The runs named `run_name` in cfg's experiment, newest first (at most 50).

    A run name is the key a rerun is matched by: resuming it, or refusing to reuse it.
    """
    experiment_id = setup(cfg)
    escaped = run_name.replace("'", "\\'")
    return list(
        client_for(cfg).search_runs(
            [experiment_id],
            filter_string=f"tags.`{MLFLOW_RUN_NAME}` = '{escaped}'",
            order_by=["attributes.start_time DESC"],
            max_results=50,
        )
    )


def resume_run_id(cfg: TrackingConfig, run_name: str) -> str | None:
    """The newest run named `run_name` in cfg's experiment that did not finish, if any.

    A rerun of the same job (after a crash or a kill) continues that run, so its loss curve
    and artifacts stay in one place.
    """
    for run in runs_named(cfg, run_name):
        if run.info.status not in _NOT_RESUMABLE:
            return str(run.info.run_id)
    return None


def start_run(
    cfg: TrackingConfig,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    config_yaml: str | None = None,
    parent_run_id: str | None = None,
    resume: bool = False,
) -> str:
    """Create (or, with `resume`, reopen) a run on the driver and return its id.

    `params` is the resolved nested config, logged flattened; `config_yaml` is logged as the
    `config.yaml` artifact. Pass the returned id to Ray workers.
    """
    experiment_id = setup(cfg)
    client = client_for(cfg)
    all_tags = {
        str(k): _truncate(_stringify(v), MAX_TAG_VAL_LENGTH) for k, v in (tags or {}).items()
    }
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run_id = resume_run_id(cfg, run_name) if resume else None
    resumed = run_id is not None
    if run_id is not None:
        log.info("resuming MLflow run %s (%s)", run_id, run_name)
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        if ERROR_TAG in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, ERROR_TAG)
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in all_tags.items()])
    else:
        run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        run_id = run.info.run_id
    _log_params(client, run_id, flatten_params(params or {}), resumed)
    if config_yaml is not None:
        client.log_text(run_id, config_yaml, CONFIG_ARTIFACT)
    return str(run_id)


def end_run(cfg: TrackingConfig, run_id: str, error: BaseException | None = None) -> None:
    """End a run: FINISHED, or FAILED/KILLED with the error as a tag and a traceback artifact."""
    client = client_for(cfg)
    if error is None:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        return
    status = RunStatus.KILLED if isinstance(error, KeyboardInterrupt) else RunStatus.FAILED
    # Never let a tracking problem hide the training error: each step is best effort.
    message = _truncate(f"{type(error).__name__}: {error}", MAX_TAG_VAL_LENGTH)
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    for step in (
        lambda: client.set_tag(run_id, ERROR_TAG, message),
        lambda: client.log_text(run_id, tb, TRACEBACK_ARTIFACT),
        lambda: client.set_terminated(run_id, RunStatus.to_string(status)),
    ):
        try:
            step()
        except Exception:
            log.exception("could not record the failure of MLflow run %s", run_id)


@contextlib.contextmanager
def tracked_run(
    cfg: TrackingConfig,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    config_yaml: str | None = None,
    parent_run_id: str | None = None,
    resume: bool = False,
) -> Iterator[str]:
    """`start_run`, yield the run id, then end the run FINISHED or FAILED (re-raising).

    No MLflow "active run" is set: log through the run id (`log_metrics_from_worker`,
    `client_for(cfg)`), which also works from Ray workers.
    """
    run_id = start_run(cfg, run_name, tags, params, config_yaml, parent_run_id, resume)
    try:
        yield run_id
    except BaseException as e:
        end_run(cfg, run_id, e)
        raise
    end_run(cfg, run_id)


def log_metrics_from_worker(
    run_id: str,
    metrics: Mapping[str, float],
    step: int,
    tracking_uri: str | None = None,
) -> None:
    """Log metrics to `run_id` from any process (a Ray worker's rank 0, a subprocess).

    Uses no MLflow global state: pass the driver's `cfg.uri` as `tracking_uri` (a Ray worker
    does not inherit the driver's `mlflow.set_tracking_uri`); without it MLflow's own
    resolution (env `MLFLOW_TRACKING_URI`) applies.
    """
    uri = tracking_uri or mlflow.get_tracking_uri()
    client = client_at(uri)
    now_ms = int(time.time() * 1000)
    items = [Metric(str(k), float(v), now_ms, int(step)) for k, v in metrics.items()]
    for i in range(0, len(items), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[i : i + MAX_METRICS_PER_BATCH])
