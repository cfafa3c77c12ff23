"""`BiognerHFModel`: the pyfunc face of a logged biogner model, so that MLflow's own tools
(`mlflow.pyfunc.load_model`, `mlflow models serve`, `spark_udf`) extract entities with it,
through the same `annotate.Annotator` as `biogner.load`, the extraction job and the endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from biogner.annotate.annotator import Annotator
from biogner.models.card import card_json, has_card
from biogner.models.config import GenerationConfig
from biogner.pyfunc.contract import HF_ARTIFACT_KEY


class BiognerHFModel(PythonModel):
    """The pyfunc face of a logged biogner model: MLflow's own tools can run it.

    `mlflow.pyfunc.load_model(uri).predict(texts)`, `mlflow models serve` and
    `mlflow.pyfunc.spark_udf` get each text's entities with character offsets into it, by
    the same `annotate.Annotator` as the endpoint, the extraction job and `biogner.load`.
    `hf_dir` and `metadata` stay exposed.
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
    _annotator: Annotator | None = None

    def load_context(self, context: PythonModelContext) -> None:
        self.hf_dir = Path(context.artifacts[HF_ARTIFACT_KEY])
        self.metadata = card_json(self.hf_dir) if has_card(self.hf_dir) else {}

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> list[str]:
        if self.hf_dir is None:
            raise RuntimeError("load the model with mlflow.pyfunc.load_model first")
        params = dict(params or {})
        texts, per_row = _rows_of(model_input)
        base = GenerationConfig(device="auto")
        if self._annotator is None:  # loaded on first use: load_model stays cheap
            self._annotator = Annotator.from_dir(self.hf_dir, base)
        annotator = self._annotator
        default = list(params.get("entity_types") or annotator.entity_types)
        given = ("batch_size", "max_new_tokens_cap")  # 0 or absent: the generation default
        update = {k: int(params[k]) for k in given if int(params.get(k) or 0) > 0}
        annotator.generator.cfg = base.model_copy(update=update)
        results = annotator.annotate_rows(  # bad types: EntityTypeError, a ValueError
            texts, [row or default for row in per_row], float(params.get("min_score") or 0.0)
        )
        return [
            json.dumps([e.model_dump() for e in r.entities], ensure_ascii=False) for r in results
        ]


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


__all__ = ["BiognerHFModel"]
