"""Trained models as MLflow models: plain files (safetensors, HF configs, `biogner_model.json`)
behind a pyfunc "models from code" entry, never pickles; and back to a local HF directory.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import Model

from biogner.models.card import card_json
from biogner.models.config import METADATA_FILE
from biogner.pyfunc.contract import (
    ENTRY_CODE,
    HF_ARTIFACT_KEY,
    PYFUNC_INPUT_EXAMPLE,
    PYFUNC_SIGNATURE,
)
from biogner.tracking.config import TrackingConfig
from biogner.tracking.runs import client_at, setup

# Pickle-based weight files: refused so that a logged model is always loadable without
# executing pickled code (training_args.bin from HF Trainer is such a pickle too).
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


def __getattr__(name: str) -> Any:
    # Models logged before `biogner.pyfunc` existed load through
    # `from biogner.tracking.models import BiognerHFModel` (their code file): forwarded, on
    # first use only, so that logging a model never loads torch.
    if name == "BiognerHFModel":
        return importlib.import_module("biogner.pyfunc.model").BiognerHFModel
    raise AttributeError(f"module 'biogner.tracking.models' has no attribute {name!r}")


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


MODEL_ARTIFACT = "model"  # where a training run logs its model


def run_model_uri(run_id: str) -> str:
    """The model a training run logged: `runs:/<id>/model` (built here only)."""
    return f"runs:/{run_id}/{MODEL_ARTIFACT}"


def log_hf_model(
    run_id: str,
    model_dir: Path,
    artifact_path: str = MODEL_ARTIFACT,
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
    client = client_at(cfg.uri if cfg is not None else mlflow.get_tracking_uri())
    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="biogner-model-") as tmp:
        staging = Path(tmp)
        hf = _stage_model_dir(model_dir, metadata, staging)
        code = staging / "biogner_pyfunc.py"
        code.write_text(ENTRY_CODE)
        meta = card_json(hf)
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
            signature=PYFUNC_SIGNATURE,
            input_example=PYFUNC_INPUT_EXAMPLE,
        )
    return f"runs:/{run_id}/{artifact_path}"


def hf_dir_in(model_root: Path) -> Path:
    """The HF directory inside a downloaded MLflow model (from its MLmodel), or model_root."""
    mlmodel = model_root / "MLmodel"
    if mlmodel.is_file():
        flavor = Model.load(str(mlmodel)).flavors.get("python_function", {})
        rel = flavor.get("artifacts", {}).get(HF_ARTIFACT_KEY, {}).get("path")
        if rel is None:
            raise ValueError(f"{mlmodel} is not a biogner model: no '{HF_ARTIFACT_KEY}' artifact")
        root = model_root.resolve()
        target = (root / str(rel)).resolve()
        if target == root or not target.is_relative_to(root):
            # an absolute path or `..` would make a replica load any directory of its machine
            raise ValueError(
                f"{mlmodel}: artifact {HF_ARTIFACT_KEY!r} path {rel!r} is not inside the model"
            )
        return target
    if (model_root / METADATA_FILE).is_file():
        return model_root
    raise ValueError(f"{model_root} holds neither an MLmodel file nor {METADATA_FILE}")


def is_artifact_uri(uri: str) -> bool:
    """The one rule telling a store or artifact URI (`runs:/`, `models:/`, `s3://`, `file:/`:
    a scheme followed by `:/`) from a local path (`runs/x`, `./model`, `/srv/m`)."""
    return bool(_URI_SCHEME.match(uri))


def download_model_dir(model_uri: str, dst_path: Path | None = None) -> Path:
    """Resolve a model URI to a local HF directory holding the weights and biogner_model.json.

    Accepts `runs:/<id>/model`, `models:/<name>@<alias>`, `models:/<name>/<version>`, any
    MLflow artifact URI, or a local directory (returned in place, nothing copied). Remote
    URIs use MLflow's current tracking/registry URI (call `setup(cfg)` first).
    """
    if not is_artifact_uri(model_uri):
        local = Path(model_uri)
        if not local.is_dir():
            raise FileNotFoundError(f"model directory {local} does not exist")
        return hf_dir_in(local)
    if dst_path is not None:
        Path(dst_path).mkdir(parents=True, exist_ok=True)
    root = mlflow.artifacts.download_artifacts(
        artifact_uri=model_uri, dst_path=str(dst_path) if dst_path else None
    )
    return hf_dir_in(Path(root))
