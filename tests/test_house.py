"""The house stays in order (#43): no module of the package over 400 lines, no function over 80,
and no project module imported inside a function, where it would hide an import circle or a
layer that points the wrong way from `farm-studio look` and from the reader.

Some places may import the project inside a function: the command line's handlers
(`biogner/cli/`, so that `biogner --help` does not load every stage), the package's
`__getattr__` (`biogner/__init__.py`), which loads the public API when it is first used, and
the two forwarders of `BiognerHFModel` for models logged before `biogner.pyfunc` existed
(`biogner/tracking/__init__.py`, `biogner/tracking/models.py`).
Read from the source with `ast`: nothing is imported, so the test takes about a second.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "biogner"
ROOT = PACKAGE.parents[1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LAZY_LOADING_DIR = PACKAGE / "cli"
# modules whose module-level `__getattr__` (PEP 562) may import the project: the public API,
# and the forwarders old logged models' entries import through
LAZY_GETATTR = frozenset(
    {
        PACKAGE / "__init__.py",
        PACKAGE / "tracking" / "__init__.py",
        PACKAGE / "tracking" / "models.py",
    }
)

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def _functions(tree: ast.AST) -> Iterator[Function]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def long_functions(tree: ast.AST, limit: int = MAX_FUNCTION_LINES) -> list[tuple[int, str, int]]:
    """(line, name, length) of every function (methods and nested ones too) over `limit`
    lines, from its `def` to its last line."""
    found = []
    for fn in _functions(tree):
        length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
        if length > limit:
            found.append((fn.lineno, fn.name, length))
    return sorted(found)


def _names_project(node: ast.AST) -> str | None:
    """The project module `node` imports, or None: `import biogner...`, `from biogner...`,
    a relative import, or `importlib.import_module("biogner...")` / `__import__("biogner...")`."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name.split(".")[0] == "biogner"]
        return names[0] if names else None
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level > 0:
            return "." * node.level + module
        return module if module.split(".")[0] == "biogner" else None
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        arg = node.args[0]
        if name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
            text = str(arg.value)
            return text if text.split(".")[0] == "biogner" else None
    return None


def function_imports(tree: ast.AST, allowed: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, module) of every project import inside a function, except in the top-level
    functions named in `allowed` (and what they nest)."""
    skipped = {
        id(node)
        for top in getattr(tree, "body", [])
        if isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef) and top.name in allowed
        for node in ast.walk(top)
    }
    found = set()
    for fn in _functions(tree):
        for node in ast.walk(fn):
            module = _names_project(node)
            if module is not None and id(node) not in skipped:
                found.add((node.lineno, module))
    return sorted(found)


def test_no_module_of_the_package_is_over_400_lines() -> None:
    too_long = []
    for path in _modules():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            too_long.append(f"{_where(path, MAX_MODULE_LINES + 1)}: {n} lines")
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(too_long)


def test_no_function_of_the_package_is_over_80_lines() -> None:
    too_long = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, name, length in long_functions(tree):
            too_long.append(f"{_where(path, line)}: {name} is {length} lines")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long)


def test_no_project_import_inside_a_function_outside_the_command_line() -> None:
    hidden = []
    for path in _modules():
        if path.is_relative_to(LAZY_LOADING_DIR):
            continue
        allowed = frozenset({"__getattr__"}) if path in LAZY_GETATTR else frozenset()
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, module in function_imports(tree, allowed):
            hidden.append(f"{_where(path, line)}: imports {module} inside a function")
    assert not hidden, (
        "project imports inside functions (move the import to the top; where that makes a "
        "circle, the layering is wrong):\n" + "\n".join(hidden)
    )


SAMPLE = """
import biogner.types
from biogner.formats import get_format


def __getattr__(name):
    from biogner.annotate import Annotator
    return Annotator


def light():
    import json
    return json


class Stage:
    def run(self):
        from biogner.corpora import get_corpus
        from . import sibling

        def inner():
            import biogner.data as data
            return importlib.import_module("biogner.study.report"), data

        return get_corpus, sibling, inner
"""


def test_the_checks_see_every_kind_of_hidden_import_and_spare_only_the_allowed_function() -> None:
    tree = ast.parse(SAMPLE)
    assert function_imports(tree) == [
        (7, "biogner.annotate"),
        (18, "biogner.corpora"),
        (19, "."),
        (22, "biogner.data"),
        (23, "biogner.study.report"),
    ]
    assert [line for line, _ in function_imports(tree, frozenset({"__getattr__"}))] == [
        18,
        19,
        22,
        23,
    ]
    assert long_functions(tree, limit=8) == [(17, "run", 9)]
    assert long_functions(tree) == []
