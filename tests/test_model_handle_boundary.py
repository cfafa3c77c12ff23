"""One model handle: no module outside it parses or builds a model URI, or reads a model's
card. Held by reading the package's source (AST), so a new module that parses `models:/` by
hand, or opens `biogner_model.json` itself, fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "biogner"
SCHEMES = ("models:/", "runs:/")
URI_MODULES = {"tracking/uris.py", "tracking/models.py"}  # the parser, and `run_model_uri`
# where the card's file name may appear: defined, read (the card), written (export, logging)
CARD_FILE_MODULES = {"models/config.py", "models/card.py", "models/load.py", "tracking/models.py"}
CARD_READERS = {"models/card.py", "tracking/open.py", "tracking/models.py"}
# the directory the handle gave them (the annotator and its generator), and the folder MLflow
# hands a logged model's pyfunc
CARD_READERS |= {"generation/generator.py", "annotate/annotator.py", "pyfunc/model.py"}


def _is_docstring(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    parent = parents.get(node)
    return isinstance(parent, ast.Expr)


def boundary_problems(source: str, module: str) -> list[str]:
    """Where `source` (module path relative to the package) crosses the handle's boundary."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and module not in URI_MODULES:
            parts = node.values
            for part, after in zip(parts, parts[1:], strict=False):
                literal = part.value if isinstance(part, ast.Constant) else None
                if (
                    isinstance(literal, str)
                    and literal.endswith(SCHEMES)
                    and isinstance(after, ast.FormattedValue)
                ):
                    problems.append(f"{module}:{node.lineno}: builds a model URI by hand")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if module not in URI_MODULES and node.value in SCHEMES:
                problems.append(f"{module}:{node.lineno}: the bare scheme {node.value!r}")
            if (
                "biogner_model.json" in node.value
                and module != "models/config.py"
                and not _is_docstring(node, parents)
            ):
                problems.append(f"{module}:{node.lineno}: names the card's file")
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name == "METADATA_FILE" and module not in CARD_FILE_MODULES:
                problems.append(f"{module}:{node.lineno}: uses METADATA_FILE")
            if name in ("read_card", "card_json") and module not in CARD_READERS:
                problems.append(f"{module}:{node.lineno}: reads a card itself")
    return problems


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_outside_the_handle_parses_uris_or_reads_cards() -> None:
    problems = []
    for path in _modules():
        module = path.relative_to(PACKAGE).as_posix()
        problems += boundary_problems(path.read_text(encoding="utf-8"), module)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('uri = f"models:/{name}@champion"', "builds a model URI"),
        ('uri = f"runs:/{run_id}/model"', "builds a model URI"),
        ('ok = uri.startswith("models:/")', "bare scheme"),
        ('meta = json.loads((d / "biogner_model.json").read_text())', "card's file"),
        ("from biogner.models.config import METADATA_FILE", None),  # an import names no node
        ("p = model_dir / METADATA_FILE", "METADATA_FILE"),
        ("card = read_card(model_dir)", "reads a card"),
    ],
)
def test_the_boundary_check_catches_each_crossing(source: str, expected: str | None) -> None:
    problems = boundary_problems(source, "serve/some_new_module.py")
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems
    assert boundary_problems('msg = f"{uri} is not models:/<name>@<alias>"', "x.py") == []
