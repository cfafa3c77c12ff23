"""The README's generated parts: the configuration reference, from the pydantic config models,
and its figures (speed, per-corpus quality), copied from the marked sections of
bench/RESULTS.md where they are measured, so that documentation, code and measurements cannot
drift (tests compare them)."""

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
# the marked blocks of bench/RESULTS.md the README quotes, each as `<!-- NAME:start -->` ...
FIGURE_BLOCKS = (
    "yourcorpus-figures",
    "recipe-figures",
    "study-figures",
    "speed-figures",
    "demo-figures",
    "corpora-figures",
    "turns-figures",
)


def block_markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


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


def marked(text: str, start: str, end: str, where: str) -> str:
    """The text between two markers."""
    if start not in text or end not in text:
        raise ValueError(f"{where}: markers {start} / {end} not found")
    return text.split(start, 1)[1].split(end, 1)[0]


def figures(results: Path, name: str) -> str:
    """One of the README's figure blocks: the marked section of bench/RESULTS.md, as measured."""
    start, end = block_markers(name)
    return marked(results.read_text(), start, end, str(results)).strip() + "\n"


def _replace(text: str, start: str, end: str, body: str, where: str) -> str:
    marked(text, start, end, where)
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}{end}{tail}"


def update_readme(path: Path, results: Path | None = None) -> bool:
    """Rewrite the README's generated sections; returns True when it changed. `results`:
    bench/RESULTS.md beside the README by default."""
    text = path.read_text()
    new = _replace(text, START, END, config_reference(), str(path))
    results = results or path.parent / "bench" / "RESULTS.md"
    for name in FIGURE_BLOCKS:
        start, end = block_markers(name)
        new = _replace(new, start, end, figures(results, name), str(path))
    if new != text:
        path.write_text(new)
    return new != text
