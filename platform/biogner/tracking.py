"""MLflow tracking for biogner: experiments, runs, model logging and the registry.

Why this module exists: Ray workers run in other processes (and other working directories), so
every MLflow object is addressed explicitly -- tracking URI, experiment artifact location, run
id -- instead of through MLflow's process-global "active run". The driver creates the
experiment and the run; workers log by run id; models are logged as plain files (safetensors,
HF configs, a JSON metadata file) behind a pyfunc "models from code" entry, never as pickles.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.entities.model_registry.model_version_status import ModelVersionStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)
from pydantic import BaseModel, model_validator

log = logging.getLogger(__name__)

HOME_ENV = "BIOGNER_HOME"
METADATA_FILE = "biogner_model.json"
CONFIG_ARTIFACT = "config.yaml"
TRACEBACK_ARTIFACT = "error_traceback.txt"
ERROR_TAG = "error"
# An evaluation of the first N sentences of a split ("true"): shown, never selected.
SUBSET_TAG = "subset"
HF_ARTIFACT_KEY = "hf_dir"
# Pickle-based weight files: refused so that a logged model is always loadable without
# executing pickled code (training_args.bin from HF Trainer is such a pickle too).
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
# Terminal statuses after which a run with the same name is *not* resumed.
_NOT_RESUMABLE = ("FINISHED",)
_READY = ModelVersionStatus.to_string(ModelVersionStatus.READY)
_PENDING = ModelVersionStatus.to_string(ModelVersionStatus.PENDING_REGISTRATION)
_PARAM_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
_DIR_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_SEARCH_PAGE = 1000
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")

# The models-from-code entry point written next to each logged model. It only refers to the
# class below by import, so nothing is pickled and the model loads wherever biogner is installed.
_PYFUNC_CODE = '''"""MLflow models-from-code entry for a biogner HF model directory."""

import mlflow

from biogner.tracking import BiognerHFModel

mlflow.models.set_model(BiognerHFModel())
'''


def biogner_home() -> Path:
    """The directory holding `.biogner/` (env BIOGNER_HOME, else the current directory)."""
    return Path(os.environ.get(HOME_ENV) or os.getcwd()).resolve()


def _is_local_store(uri: str) -> bool:
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
        if self.artifact_root is None and _is_local_store(self.tracking_uri):
            # A remote tracking server has its own artifact root; a local store needs an
            # explicit one, or MLflow defaults to ./mlruns relative to each process.
            self.artifact_root = (home / "artifacts").as_uri()
        return self

    @property
    def uri(self) -> str:
        """The resolved tracking URI (never None after validation)."""
        assert self.tracking_uri is not None
        return self.tracking_uri


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
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _client(uri: str) -> MlflowClient:
    """One client per store and process: opening a SQLite store checks its schema (slow).

    The lock keeps threads of one process from creating a new store's schema twice at once.
    """
    with _CLIENT_LOCK:
        return _new_client(uri)


def client_for(cfg: TrackingConfig) -> MlflowClient:
    """An MlflowClient bound to cfg's store (tracking and registry)."""
    return _client(cfg.uri)


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
            if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
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
                "biogner.changed_params_on_resume",
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
    client = _client(uri)
    now_ms = int(time.time() * 1000)
    items = [Metric(str(k), float(v), now_ms, int(step)) for k, v in metrics.items()]
    for i in range(0, len(items), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[i : i + MAX_METRICS_PER_BATCH])


# ---------------------------------------------------------------------------------------------
# Models


class BiognerHFModel(PythonModel):
    """The pyfunc face of a logged HF directory: loading gives the local directory path.

    Inference lives in `biogner.serve` (batched generation + format parsing); this class only
    makes `mlflow.pyfunc.load_model(uri)` work and expose `hf_dir` and `metadata`.
    """

    hf_dir: Path | None = None
    metadata: dict[str, Any] | None = None

    def load_context(self, context: PythonModelContext) -> None:
        self.hf_dir = Path(context.artifacts[HF_ARTIFACT_KEY])
        meta_file = self.hf_dir / METADATA_FILE
        self.metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}

    def predict(
        self,
        context: PythonModelContext,
        model_input: list[str],
        params: dict[str, Any] | None = None,
    ) -> list[str]:
        raise NotImplementedError(
            "biogner models are served by `biogner serve` (Ray Serve), which loads the HF "
            f"directory at {self.hf_dir}; pyfunc predict is not implemented"
        )


def _check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    names = {p.name for p in model_dir.iterdir()}
    if not names & {"config.json", "adapter_config.json"}:
        raise ValueError(
            f"{model_dir} is not a HF model directory: no config.json or adapter_config.json"
        )
    pickles = sorted(
        str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.suffix in PICKLE_SUFFIXES
    )
    if pickles:
        raise ValueError(
            f"{model_dir} holds pickle files {pickles}: save weights with safetensors "
            "(save_pretrained(safe_serialization=True)) and drop pickled files before logging"
        )
    if not any(p.suffix == ".safetensors" for p in model_dir.rglob("*")):
        raise ValueError(f"{model_dir} holds no .safetensors weights")


def _stage_model_dir(model_dir: Path, metadata: Mapping[str, Any] | None, staging: Path) -> Path:
    """A copy of model_dir plus biogner_model.json, for MLflow to log.

    Files are hard-linked when possible (no bytes copied); MLflow rejects symlinks.
    """
    hf = staging / "hf_model"
    for src in sorted(model_dir.rglob("*")):
        rel = src.relative_to(model_dir)
        if metadata is not None and rel == Path(METADATA_FILE):
            continue
        dst = hf / rel
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src.resolve(), dst)
        except OSError:  # another filesystem, or links not supported
            shutil.copy2(src, dst)
    hf.mkdir(exist_ok=True)
    if metadata is not None:
        try:
            text = json.dumps(dict(metadata), indent=2, sort_keys=True)
        except TypeError as e:
            raise ValueError(f"model metadata for {model_dir} is not JSON-serializable: {e}") from e
        (hf / METADATA_FILE).write_text(text + "\n")
    elif not (model_dir / METADATA_FILE).is_file():
        raise ValueError(f"{model_dir} has no {METADATA_FILE} and no metadata was given")
    return hf


def _pip_requirements() -> list[str]:
    """Pinned explicitly: MLflow would otherwise infer them by loading the model (slow)."""
    reqs = []
    for dist in ("mlflow", "transformers", "safetensors", "peft"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
    return reqs


def log_hf_model(
    run_id: str,
    model_dir: Path,
    artifact_path: str = "model",
    metadata: Mapping[str, Any] | None = None,
    cfg: TrackingConfig | None = None,
) -> str:
    """Log an HF model directory to `run_id` as an MLflow pyfunc model; return its model URI.

    The directory (config.json + safetensors, or a PEFT adapter dir) is stored as files, with
    `biogner_model.json` written from `metadata` (base model spec, output format, entity
    types, corpus). `model_dir` itself is not modified. The store is cfg's, else MLflow's
    current one. Returns `runs:/<run_id>/<artifact_path>`.
    """
    model_dir = Path(model_dir)
    _check_model_dir(model_dir)
    if cfg is not None:
        setup(cfg)
    client = _client(cfg.uri if cfg is not None else mlflow.get_tracking_uri())
    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="biogner-model-") as tmp:
        staging = Path(tmp)
        hf = _stage_model_dir(model_dir, metadata, staging)
        code = staging / "biogner_pyfunc.py"
        code.write_text(_PYFUNC_CODE)
        meta = json.loads((hf / METADATA_FILE).read_text())
        logged = mlflow.initialize_logged_model(
            name=artifact_path,
            source_run_id=run_id,
            experiment_id=run.info.experiment_id,
            model_type="biogner-hf",
        )
        mlflow.models.Model.log(
            artifact_path=None,
            name=artifact_path,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            python_model=str(code),
            artifacts={HF_ARTIFACT_KEY: str(hf)},
            metadata={"biogner": meta},
            pip_requirements=_pip_requirements(),
        )
    return f"runs:/{run_id}/{artifact_path}"


def _hf_dir_in(model_root: Path) -> Path:
    """The HF directory inside a downloaded MLflow model (from its MLmodel), or model_root."""
    mlmodel = model_root / "MLmodel"
    if mlmodel.is_file():
        from mlflow.models import Model

        flavor = Model.load(str(mlmodel)).flavors.get("python_function", {})
        rel = flavor.get("artifacts", {}).get(HF_ARTIFACT_KEY, {}).get("path")
        if rel is None:
            raise ValueError(f"{mlmodel} is not a biogner model: no '{HF_ARTIFACT_KEY}' artifact")
        return model_root / rel
    if (model_root / METADATA_FILE).is_file():
        return model_root
    raise ValueError(f"{model_root} holds neither an MLmodel file nor {METADATA_FILE}")


def download_model_dir(model_uri: str, dst_path: Path | None = None) -> Path:
    """Resolve a model URI to a local HF directory holding the weights and biogner_model.json.

    Accepts `runs:/<id>/model`, `models:/<name>@<alias>`, `models:/<name>/<version>`, any
    MLflow artifact URI, or a local directory (returned in place, nothing copied). Remote
    URIs use MLflow's current tracking/registry URI (call `setup(cfg)` first).
    """
    if not _URI_SCHEME.match(model_uri):
        local = Path(model_uri)
        if not local.is_dir():
            raise FileNotFoundError(f"model directory {local} does not exist")
        return _hf_dir_in(local)
    if dst_path is not None:
        Path(dst_path).mkdir(parents=True, exist_ok=True)
    root = mlflow.artifacts.download_artifacts(
        artifact_uri=model_uri, dst_path=str(dst_path) if dst_path else None
    )
    return _hf_dir_in(Path(root))


# ---------------------------------------------------------------------------------------------
# Registry and selection


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
        if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    mv = client.create_model_version(
        model_name, f"models:/{model_id}", model_id=model_id, await_creation_for=0
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
            hf_rel = _hf_dir_in(root).relative_to(root).as_posix()
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
    """The model version `alias` points to, or None when the model or alias does not exist."""
    setup(cfg)
    try:
        return client_for(cfg).get_model_version_by_alias(model_name, alias)
    except MlflowException as e:
        if e.error_code in (
            ErrorCode.Name(RESOURCE_DOES_NOT_EXIST),
            ErrorCode.Name(INVALID_PARAMETER_VALUE),
        ):
            return None
        raise


def search_finished_runs(
    cfg: TrackingConfig, experiment: str, metric: str, filter_string: str = ""
) -> list[Run]:
    """FINISHED runs of `experiment` that logged `metric`, best (highest) first."""
    setup(cfg)
    client = client_for(cfg)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} in {cfg.uri}")
    parts = ["attributes.status = 'FINISHED'"]
    if filter_string.strip():
        parts.append(filter_string)  # MLflow filters only know AND
    query = " and ".join(parts)
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            [exp.experiment_id],
            filter_string=query,
            max_results=_SEARCH_PAGE,
            order_by=[f"metrics.`{metric}` DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    ranked = [r for r in runs if metric in r.data.metrics]
    ranked.sort(key=lambda r: r.data.metrics[metric], reverse=True)
    return ranked


__all__ = [
    "BiognerHFModel",
    "TrackingConfig",
    "biogner_home",
    "check_model_version",
    "client_for",
    "download_model_dir",
    "end_run",
    "flatten_params",
    "get_alias_version",
    "log_hf_model",
    "log_metrics_from_worker",
    "logged_model_id",
    "register_champion",
    "register_version",
    "resume_run_id",
    "runs_named",
    "search_finished_runs",
    "setup",
    "start_run",
    "tracked_run",
]


def model_uri_run_id(model_uri: str, cfg: TrackingConfig | None = None) -> str | None:
    """The training run behind `models:/<name>@<alias>` or `models:/<name>/<version>`."""
    if not model_uri.startswith("models:/"):
        return None
    if cfg is not None:
        setup(cfg)
    client = MlflowClient(registry_uri=mlflow.get_registry_uri())
    ref = model_uri[len("models:/") :].strip("/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        name, number = ref.rsplit("/", 1)
        version = client.get_model_version(name, number)
    return str(version.run_id) if version.run_id else None
