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
import numpy as np
import pandas as pd
from mlflow.models import Model
from mlflow.pyfunc import PythonModel, PythonModelContext

from biogner.models.card import card_json, has_card, read_card
from biogner.models.config import METADATA_FILE
from biogner.tracking.config import TrackingConfig
from biogner.tracking.runs import client_at, setup

HF_ARTIFACT_KEY = "hf_dir"
# Pickle-based weight files: refused so that a logged model is always loadable without
# executing pickled code (training_args.bin from HF Trainer is such a pickle too).
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")

# The models-from-code entry point written next to each logged model. It only refers to the
# class below by import, so nothing is pickled and the model loads wherever biogner is
# installed. (Models logged before `tracking` became a package import it from
# `biogner.tracking`, which still provides it.)
_PYFUNC_CODE = '''"""MLflow models-from-code entry for a biogner HF model directory."""

import mlflow

from biogner.tracking.models import BiognerHFModel

mlflow.models.set_model(BiognerHFModel())
'''


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema(
            [ColSpec("string", "text"), ColSpec(Array("string"), "entity_types", required=False)]
        ),
        outputs=Schema([ColSpec("string", "entities")]),
        params=ParamSchema(
            [
                ParamSpec("entity_types", "string", [], shape=(-1,)),
                ParamSpec("batch_size", "long", 64),
                ParamSpec("max_new_tokens_cap", "long", 0),
                ParamSpec("min_score", "double", 0.0),
            ]
        ),
    )


PYFUNC_SIGNATURE = _signature()
PYFUNC_INPUT_EXAMPLE = pd.DataFrame({"text": ["Cisplatin induced nephrotoxicity in rats."]})


class BiognerHFModel(PythonModel):
    """The pyfunc face of a logged biogner model: MLflow's own tools can run it.

    `mlflow.pyfunc.load_model(uri).predict(texts)`, `mlflow models serve` and
    `mlflow.pyfunc.spark_udf` get each text's entities with character offsets into it, by
    the same pieces as the endpoint (its text windows, the shared `Generator` under the
    format's grammar, its offset mapping). `hf_dir` and `metadata` stay exposed.
    Input: a DataFrame with a `text` column and an optional `entity_types` column (each
    row's types: a list, empty or missing for the default) (`mlflow models serve`:
    `{"dataframe_split": {"columns": ["text"], "data": [[...], ...]}}`); params:
    `entity_types` (the default of rows that name none; default: all the model knows),
    `batch_size`, `max_new_tokens_cap` (0: the generation default; an endpoint's own cap
    gives its answers), `min_score` (leave out entities scored below it). Output: one JSON
    string per text, `[{"start", "end", "label", "text", "score"}, ...]` (a string column
    works in every MLflow tool).
    """

    hf_dir: Path | None = None
    metadata: dict[str, Any] | None = None
    _generator: Any = None

    def load_context(self, context: PythonModelContext) -> None:
        self.hf_dir = Path(context.artifacts[HF_ARTIFACT_KEY])
        self.metadata = card_json(self.hf_dir) if has_card(self.hf_dir) else {}

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> list[str]:
        from biogner.generation import Generator
        from biogner.models.config import GenerationConfig
        from biogner.serve.engine import assemble
        from biogner.serve.requests import prepare
        from biogner.serve.schema import Limits

        if self.hf_dir is None:
            raise RuntimeError("load the model with mlflow.pyfunc.load_model first")
        params = dict(params or {})
        texts, per_row = _rows_of(model_input)
        card = read_card(self.hf_dir)
        default = list(params.get("entity_types") or card.entity_types)
        wanted = [row or default for row in per_row]
        unknown = sorted({t for row in wanted for t in row} - set(card.entity_types))
        if unknown:
            raise ValueError(
                f"unknown entity types {unknown}; this model knows {card.entity_types}"
            )
        base = GenerationConfig(device="auto")
        if self._generator is None:  # loaded on first use: load_model stays cheap
            self._generator = Generator(self.hf_dir, base)
        given = ("batch_size", "max_new_tokens_cap")  # 0 or absent: the generation default
        update = {k: int(params[k]) for k in given if int(params.get(k) or 0) > 0}
        self._generator.cfg = base.model_copy(update=update)
        min_score = float(params.get("min_score") or 0.0)
        out: list[str] = [""] * len(texts)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, row in enumerate(wanted):  # rows asking the same types are generated together
            groups.setdefault(tuple(t for t in card.entity_types if t in set(row)), []).append(i)
        for asked, rows in groups.items():
            group_texts = [texts[i] for i in rows]
            limits = Limits(max_windows=10**9, max_texts=max(len(group_texts), 1))
            windows = prepare(group_texts, limits)
            flat = [w.sentence for ws in windows for w in ws]
            generations = self._generator.extract(flat, card.format, list(asked)) if flat else []
            results = assemble(group_texts, windows, generations, set(asked), min_score)
            for i, result in zip(rows, results, strict=True):
                out[i] = json.dumps([e.model_dump() for e in result.entities], ensure_ascii=False)
        return out


def _rows_of(model_input: Any) -> tuple[list[str], list[list[str]]]:
    """(texts, each text's requested types, [] for the default) from what MLflow hands
    `predict`: a DataFrame (its `text` column, else its only column; an optional
    `entity_types` column), a list or Series of strings, a dict of columns, or one string.
    MLflow packs a dict of columns (`{"inputs": {"text": [...]}}`) into one row holding the
    lists: such a row is unpacked."""
    if isinstance(model_input, str):
        return [model_input], [[]]
    if isinstance(model_input, dict):
        model_input = pd.DataFrame({k: list(np.atleast_1d(v)) for k, v in model_input.items()})
    columns = getattr(model_input, "columns", None)
    types_column: list[Any] = []
    if columns is not None:
        if "entity_types" in columns:
            types_column = list(model_input["entity_types"])
        if "text" in columns:
            model_input = model_input["text"]
        elif len(columns) == 1:
            model_input = model_input[columns[0]]
        else:
            raise ValueError(f"expected a 'text' column, got columns {list(columns)}")
    texts = list(model_input)
    if len(texts) == 1 and isinstance(texts[0], list | tuple | np.ndarray):  # a packed row
        texts = list(texts[0])
        types_column = types_column * len(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts must be strings: row {bad[0]} is {type(texts[bad[0]]).__name__}")
    types = [_row_types(v, i) for i, v in enumerate(types_column)] or [[] for _ in texts]
    return [str(t) for t in texts], types


def _row_types(value: Any, row: int) -> list[str]:
    """One row's `entity_types` cell: a list of names, one name, or missing ([])."""
    if value is None or (isinstance(value, float) and value != value):  # missing / NaN
        return []
    items = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(t, str) for t in items):
        raise ValueError(f"entity_types of row {row} must be strings, got {items!r}")
    return [str(t) for t in items]


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
        code.write_text(_PYFUNC_CODE)
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
