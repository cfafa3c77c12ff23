"""The environment compute workers start with: jemalloc preloaded where the machine has it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from biogner.runtime import allocator_env, compute_runtime_env, jemalloc_library

PROBE = "from biogner.runtime import jemalloc_loaded; print(jemalloc_loaded())"


@pytest.fixture
def no_preload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("BIOGNER_ALLOCATOR", raising=False)


def test_allocator_env_preloads_jemalloc_unless_told_otherwise(
    no_preload: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = jemalloc_library()
    assert allocator_env() == ({"LD_PRELOAD": library} if library else {})
    assert compute_runtime_env()["env_vars"] == {"RAY_worker_niceness": "0", **allocator_env()}
    monkeypatch.setenv("BIOGNER_ALLOCATOR", "system")
    assert allocator_env() == {}
    monkeypatch.setenv("BIOGNER_ALLOCATOR", "tcmalloc")
    with pytest.raises(ValueError, match="BIOGNER_ALLOCATOR='tcmalloc'"):
        allocator_env()
    monkeypatch.setenv("BIOGNER_ALLOCATOR", "jemalloc")
    monkeypatch.setenv("LD_PRELOAD", "libmine.so")  # the user's preload wins: workers inherit it
    assert allocator_env() == {}


def _child_on_jemalloc(env: dict[str, str]) -> bool:
    env = {**env, "PYTHONPATH": str(Path(__file__).parents[1] / "platform")}
    run = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return {"True": True, "False": False}[run.stdout.strip()]


def test_a_process_started_with_the_allocator_env_runs_on_jemalloc(no_preload: None) -> None:
    """What a Ray worker gets when it starts, read back from the child's own memory map (the
    check each worker logs as worker_jemalloc). CI installs libjemalloc2; without it the
    environment is empty and the child runs on glibc's allocator."""
    env = dict(os.environ)
    assert _child_on_jemalloc(env) is False
    assert _child_on_jemalloc({**env, **allocator_env()}) is (jemalloc_library() is not None)
