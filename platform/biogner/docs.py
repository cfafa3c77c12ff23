"""The README's configuration reference, generated from the pydantic config models so that
documentation and code cannot drift (a test compares them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from biogner.data import ConvertConfig
from biogner.evaluate.config import EvalConfig
from biogner.serve.schema import ServeConfig
from biogner.study.config import SweepConfig
from biogner.train.config import TrainConfig

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _models() -> list[tuple[str, type[BaseModel]]]:
    models: list[tuple[str, type[BaseModel]]] = [
        ("Training (`biogner train`, `jobs/train.py`)", TrainConfig),
        ("Evaluation (`biogner evaluate`)", EvalConfig),
        ("Sweep (`biogner sweep`, `jobs/sweep.py`)", SweepConfig),
        ("Conversion (`biogner convert`)", ConvertConfig),
        ("Serving (`serve_configs/*.yaml` application args, `biogner serve`)", ServeConfig),
    ]
    return models


def _default(field: Any) -> str:
    if field.is_required():
        return "*required*"
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(factory)"
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{value!r}`"
    return f"`{field.default!r}`"


def _rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, f"{key}."))
            continue
        kind = re.sub(r"typing\.|<class '([^']*)'>", r"\1", str(annotation)).replace("|", "\\|")
        doc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {kind} | {_default(field)} | {doc} |")
    return rows


def config_reference() -> str:
    parts = []
    for title, model in _models():
        parts += [f"#### {title}", "", "| key | type | default | meaning |"]
        parts.append("| --- | --- | --- | --- |")
        parts += _rows(model)
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def update_readme(path: Path) -> bool:
    """Rewrite the marked section of the README; returns True when it changed."""
    text = path.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{path}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{config_reference()}{END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text
