"""Every project import in bench/ resolves, at module level and inside functions, so that a
rename in platform/biogner that breaks a benchmark fails the suite (bench/serve.py imported a
removed module for a while, unnoticed: most bench imports sit in functions, which importing the
module never runs). bench/archive is left out: its studies compare against code paths the
package no longer has and are kept as a record, not run (bench/archive/README.md)."""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]
BENCH = ROOT / "bench"
ARCHIVE = BENCH / "archive"
PROJECT = ("biogner", "bench")
# A project import statement as text, at any indentation: the walk below must find each.
STATEMENT = re.compile(
    r"^[ \t]*(?:from\s+(?:biogner|bench)\b[\w.]*\s+import|import\s+(?:biogner|bench)\b)", re.M
)


def bench_files(archive: bool = False) -> list[Path]:
    return sorted(p for p in BENCH.rglob("*.py") if archive or ARCHIVE not in p.parents)


@dataclass(frozen=True)
class ProjectImport:
    where: str  # file:line
    module: str
    name: str | None  # None: `import module`
    in_function: bool


def project_imports(path: Path, root: Path = ROOT) -> list[ProjectImport]:
    """Every `import biogner.x`, `from biogner.x import y` and `from bench.x import y` of a file,
    wherever it stands: module level, function bodies, `if TYPE_CHECKING:` blocks; in the
    order of the file."""
    tree = ast.parse(path.read_text(), str(path))
    in_functions = {
        id(node)
        for func in ast.walk(tree)
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(func)
    }
    found: list[ProjectImport] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        where = f"{path.relative_to(root)}:{node.lineno}"
        inside = id(node) in in_functions
        if isinstance(node, ast.Import):
            found += [
                ProjectImport(where, alias.name, None, inside)
                for alias in node.names
                if alias.name.split(".")[0] in PROJECT
            ]
        elif node.level == 0 and (node.module or "").split(".")[0] in PROJECT:
            assert node.module is not None
            found += [ProjectImport(where, node.module, a.name, inside) for a in node.names]
    return sorted(found, key=lambda imp: int(imp.where.rsplit(":", 1)[1]))


def unresolved(imp: ProjectImport) -> str | None:
    """Why the import would fail, or None: the module imports and holds the name (an
    attribute, or a submodule of that name)."""
    try:
        module = importlib.import_module(imp.module)
    except ImportError as exc:
        return f"{imp.where}: import {imp.module}: {exc}"
    if imp.name is None or imp.name == "*" or hasattr(module, imp.name):
        return None
    if not hasattr(module, "__path__"):  # a plain module: no submodule can hold the name
        return f"{imp.where}: {imp.module} has no {imp.name!r}"
    try:
        importlib.import_module(f"{imp.module}.{imp.name}")
    except ImportError as exc:
        return f"{imp.where}: from {imp.module} import {imp.name}: {exc}"
    return None


IMPORTS = [imp for path in bench_files() for imp in project_imports(path)]


def test_every_project_import_in_bench_resolves() -> None:
    broken = [reason for reason in map(unresolved, IMPORTS) if reason]
    assert not broken, "\n".join(broken)


def test_the_walk_finds_every_import_statement_including_those_in_functions() -> None:
    """Cross-check against the text: as many import statements as lines that start one (a
    walk of the top level alone would miss those in functions, most of them)."""
    statements = {
        f"{path.relative_to(ROOT)}:{path.read_text().count(chr(10), 0, m.start()) + 1}"
        for path in bench_files()
        for m in STATEMENT.finditer(path.read_text())
    }
    assert {imp.where for imp in IMPORTS} == statements
    inside = [imp for imp in IMPORTS if imp.in_function]
    assert inside and len(inside) < len(IMPORTS)


def test_an_import_the_package_lacks_is_reported(tmp_path: Path) -> None:
    """The check fails on a missing name, a missing module and a missing bench helper."""
    source = tmp_path / "renamed.py"
    source.write_text(
        "from biogner.formats import get_format\n"
        "def run():\n"
        "    from biogner.formats import no_such_name\n"
        "    import biogner.no_such_module\n"
        "    from bench.common import no_such_helper\n"
    )
    found = project_imports(source, root=tmp_path)
    assert [unresolved(i) is None for i in found] == [True, False, False, False]
    assert [i.in_function for i in found] == [False, True, True, True]


def test_bench_runs_as_a_package_without_sys_path_edits() -> None:
    """`python -m bench.<name>` from the repository root: every folder holding a benchmark is
    a package, no module edits `sys.path`, and none imports a sibling relatively or by its bare
    name (shared helpers are `bench.<module>`)."""
    files = bench_files(archive=True)
    assert all((p.parent / "__init__.py").is_file() for p in files)
    siblings = {p.stem for p in files} - {"__init__"}
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            edits_path = (
                isinstance(node, ast.Attribute)
                and node.attr == "path"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            )
            relative = isinstance(node, ast.ImportFrom) and node.level > 0
            bare = (
                isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in siblings
            ) or (isinstance(node, ast.Import) and any(a.name in siblings for a in node.names))
            if edits_path or relative or bare:
                offenders.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}")
    assert not offenders, offenders


def test_the_archive_readme_names_each_archived_bench() -> None:
    readme = (ARCHIVE / "README.md").read_text()
    archived = [p for p in ARCHIVE.glob("*.py") if p.name != "__init__.py"]
    assert archived
    assert [p.name for p in archived if f"`{p.name}`" not in readme] == []
