"""Every benchmark answers `--help`: its module imports and its argument parser builds. In this
process (the libraries are loaded once for the suite, not once per benchmark), and in a fresh
interpreter the way a user runs them, `python -m bench.<name>` from the repository root."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from bench.generation import split_time

ROOT = Path(__file__).parents[1]
BENCH = ROOT / "bench"
# every benchmark but the archived ones (bench/archive/README.md) and the shared helpers
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in BENCH.rglob("*.py")
    if p.name not in ("__init__.py", "common.py") and BENCH / "archive" not in p.parents
)


def runs_main_as_a_script(source: str) -> bool:
    """Whether the module ends in `if __name__ == "__main__":` calling its `main`."""
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__"
        ):
            return any(
                isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "main"
                for n in ast.walk(node)
            )
    return False


@pytest.mark.parametrize("name", MODULES)
def test_a_bench_answers_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert runs_main_as_a_script(Path(module.__file__).read_text())
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out


def test_the_benches_are_found() -> None:
    assert len(MODULES) >= 12
    assert "bench.gpu.check" in MODULES


@pytest.mark.parametrize("name", ["bench.long_run", "bench.gpu.check"])
def test_a_bench_runs_as_a_module_from_the_repository_root(name: str) -> None:
    """A top-level benchmark that imports another (bench.long_run: bench.train) and one in a
    subpackage (the GPU check's entry point, as bench/gpu/check.sh runs it)."""
    done = subprocess.run(
        [sys.executable, "-m", name, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_profile_split_counts_matmuls_and_attention_apart() -> None:
    """bench/generation.py's `--profile` split: a real profiled run of products and
    attention, each in its kind, the parts summing to the wall time."""
    x, w = torch.randn(64, 256), torch.randn(512, 256)
    q = torch.randn(2, 4, 16, 32)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(20):
            torch.nn.functional.linear(x, w)
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
            x.sin()
        wall = time.perf_counter() - start
    kinds = split_time(prof.key_averages(), wall)
    assert set(kinds) == {"matmul", "attention", "other ops", "outside ops"}
    assert kinds["matmul"] > 0 and kinds["attention"] > 0 and kinds["other ops"] > 0
    assert abs(sum(kinds.values()) - wall) < 1e-6 or kinds["outside ops"] == 0.0
