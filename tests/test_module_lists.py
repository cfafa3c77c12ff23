"""Module lists stay true to the tree: every repository path, package module and `biogner.*`
name the README, the docs and DESIGN-NOTES write in code spans exists, and every module a
package's docstring lists is a module of that package. The tree is read, not listed here, so
a module renamed or removed without its mention fails."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "platform" / "biogner"
DOCS = [ROOT / "README.md", ROOT / "DESIGN-NOTES.md", *sorted((ROOT / "docs").rglob("*.md"))]
_SPAN = re.compile(r"`([^`\s]+)`")
# an item of a module list: `name` (what it does), `name`: what it does, or `a`, `b`
_CLAIM = re.compile(r"`([a-z_][a-z0-9_]*)`(?=\s*[(:,])")


def _top_level() -> set[str]:
    return {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}


def _packages() -> list[Path]:
    return sorted(p.parent for p in PACKAGE.rglob("__init__.py"))


def path_exists(token: str) -> bool | None:
    """Whether a code span naming a repository path (`jobs/train.py`, `serve/app.py` under
    platform/biogner, a glob) names something that exists; None where it is not such a path
    (an example path of the user's, a placeholder, a single word)."""
    token = token.rstrip(".,;:")
    if "/" not in token or re.search(r"[<>{}$]|^\.|//|:", token):
        return None
    first = token.split("/", 1)[0]
    if first in _top_level():
        base = ROOT
    elif (PACKAGE / first / "__init__.py").exists() and re.search(r"(\.py|/)$", token):
        base = PACKAGE
    else:
        return None
    if "*" in token:
        return any(base.glob(token))
    return (base / token).exists() and (not token.endswith("/") or (base / token).is_dir())


def _defines(module: Path, name: str) -> bool:
    """Whether a module's top level defines or imports `name` (or its module `__getattr__`
    answers it: a forwarder kept for old import paths)."""
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                return True
            if node.name == "__getattr__" and any(
                isinstance(c, ast.Constant) and c.value == name for c in ast.walk(node)
            ):
                return True
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
            exported = any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)
            listed = isinstance(node.value, ast.List | ast.Tuple) and any(
                isinstance(e, ast.Constant) and e.value == name for e in node.value.elts
            )
            if exported and listed:  # a lazy export (PEP 562)
                return True
    return False


@functools.cache
def _string_literals() -> frozenset[str]:
    """Every string constant of the package's code: the names it writes (MLflow tags such as
    `biogner.kind`) are names of the tree too."""
    found: set[str] = set()
    for module in PACKAGE.rglob("*.py"):
        found |= {
            node.value
            for node in ast.walk(ast.parse(module.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
    return frozenset(found)


def dotted_exists(name: str, literals: frozenset[str] = frozenset()) -> bool:
    """`biogner.a.b` names a module or package, something a module's top level defines, or a
    string the code writes (`literals`)."""
    if name in literals:
        return True
    parts = name.split(".")[1:]
    here = PACKAGE
    for i, part in enumerate(parts):
        if here.is_dir() and (here / part / "__init__.py").exists():
            here = here / part
        elif here.is_dir() and (here / f"{part}.py").exists():
            here = here / f"{part}.py"
        else:
            module = here / "__init__.py" if here.is_dir() else here
            return i == len(parts) - 1 and _defines(module, part)
    return True


def test_the_checks_tell_real_names_from_stale_ones():
    assert path_exists("platform/biogner/generation/") is True
    assert path_exists("serve/app.py") is True
    assert path_exists("serve/ingress.py") is False
    assert path_exists("jobs/configs/*.yaml") is True
    assert path_exists("my-ade/card.yaml") is None  # the user's own path
    assert path_exists("corpora/<name>.yaml") is None
    assert dotted_exists("biogner.generation.memory")
    assert dotted_exists("biogner.docs.config_reference")
    assert not dotted_exists("biogner.serve.ingress")
    assert not dotted_exists("biogner.docs.no_such_function")
    assert dotted_exists("biogner.kind", _string_literals())  # an MLflow tag


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_paths_and_modules_named_in_the_docs_exist(doc: Path):
    spans = _SPAN.findall(doc.read_text())
    missing = [s for s in spans if path_exists(s) is False]
    dotted = [s for s in spans if re.fullmatch(r"biogner(\.\w+)+", s)]
    if dotted:
        literals = _string_literals()
        missing += [s for s in dotted if not dotted_exists(s, literals)]
    assert not missing, f"{doc.relative_to(ROOT)} names what the tree lacks: {missing}"


def test_readme_links_stay_inside_the_repository():
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path = (ROOT / target).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), f"README links to {target}"


def module_claims(text: str) -> set[str]:
    """The names a module list claims as modules: the list's own items, not what their
    parenthesised descriptions name (functions, classes, tags)."""
    depth, outside = 0, []
    for char in text:
        if char == "(":
            outside.append("(" if depth == 0 else " ")
            depth += 1
        elif char == ")" and depth:
            depth -= 1
            outside.append(" ")
        else:
            outside.append(char if depth == 0 else " ")
    return set(_CLAIM.findall("".join(outside)))


def _modules(package: Path) -> set[str]:
    return {p.stem for p in package.glob("*.py")} | {
        p.parent.name for p in package.glob("*/__init__.py")
    }


def test_module_claims_are_the_lists_own_items():
    text = "`decode` (the loop, `row`: a row), `kv`: the cache, `prefix`, `add` adds, `gen` (it)."
    assert module_claims(text) == {"decode", "kv", "prefix", "gen"}


@pytest.mark.parametrize("package", _packages(), ids=lambda p: p.name)
def test_package_docstrings_list_their_own_modules(package: Path):
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    claimed = module_claims(doc)
    assert claimed <= _modules(package), (
        f"{package.relative_to(ROOT)}/__init__.py names modules it lacks: "
        f"{sorted(claimed - _modules(package))}"
    )


def test_design_notes_layout_lists_each_packages_modules():
    """DESIGN-NOTES' layout table: a package's row lists modules that package has."""
    rows = re.findall(r"^\| `(\w+)/` \| (.*) \|$", (ROOT / "DESIGN-NOTES.md").read_text(), re.M)
    assert rows
    wrong = {
        package: sorted(module_claims(cell) - _modules(PACKAGE / package))
        for package, cell in rows
        if module_claims(cell) - _modules(PACKAGE / package)
    }
    assert not wrong, f"DESIGN-NOTES.md's layout names modules the packages lack: {wrong}"
