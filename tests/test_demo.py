"""`biogner demo --tiny`: the whole platform path (convert, train two formats, evaluate,
select, serve, query over HTTP) with tiny-llama, then a second run that reuses everything."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest
from conftest import library_lines
from mlflow.tracking import MlflowClient
from support import free_port, wait_until

from biogner.cli import main
from biogner.demo import SAMPLE_ABSTRACT
from biogner.tracking.config import TrackingConfig
from biogner.tracking.registry import get_alias_version

pytestmark = pytest.mark.slow  # Ray in a subprocess or a cluster of its own


@pytest.fixture(scope="module")
def demo_home(ray_session, small_data_dir, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo") / ".biogner"


def run_demo(home: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> str:
    argv = ["demo", "--tiny", "--home", str(home), "--port", str(free_port())]
    code = main([*argv, "--data-dir", str(data)])
    out = capsys.readouterr().out
    assert code == 0, out[-4000:]
    return out


def test_tiny_demo_runs_every_stage_and_prints_entities(demo_home, small_data_dir, capsys):
    out = run_demo(demo_home, small_data_dir, capsys)
    for stage in range(1, 7):
        assert f"[{stage}/6]" in out
    # Stage 1 converted all ten formats of the three splits.
    assert len(list((demo_home / "converted").glob("*/split=*/format=*"))) == 30
    # Both cells trained and were scored; the champion alias exists and names one of them.
    cfg = TrackingConfig(
        tracking_uri=f"sqlite:///{demo_home}/mlflow.db",
        artifact_root=str(demo_home / "artifacts"),
    )
    version = get_alias_version(cfg, "biogner-tiny", "champion")
    assert version is not None
    run = MlflowClient(cfg.uri).get_run(version.run_id)
    # chosen on the whole dev split, then scored on the whole test split, with intervals
    assert run.info.status == "FINISHED" and run.data.metrics["dev_sentences"] == 40
    assert run.data.metrics["test_sentences"] == 40 and "test_f1_low" in run.data.metrics
    assert "choose on the whole dev split" in out and "test F1" in out
    # The endpoint answered for the abstract: the count line, and each entity line's offsets
    # slice the abstract to the printed text.
    found = re.search(r"(\d+) entities:", out)
    assert found, out[-3000:]
    for start, end, text in re.findall(r"\[\s*(\d+),\s*(\d+)\) \S+\s+(.+)", out):
        assert SAMPLE_ABSTRACT[int(start) : int(end)] == text.strip()
    assert "mlflow ui --backend-store-uri" in out and "/v1/extract" in out
    # The demo's endpoint is gone afterwards (it prints how to serve the champion again).
    from ray import serve

    from biogner.serve.demo import DEMO_APP

    assert DEMO_APP not in serve.status().applications


def test_second_run_reuses_conversion_and_finished_cells(demo_home, small_data_dir, capsys):
    out = run_demo(demo_home, small_data_dir, capsys)
    assert "reusing" in out
    assert out.count("SKIPPED") >= 2 and "FAILED" not in out


def _carries(proc: psutil.Process, marker: str) -> bool:
    try:
        return proc.environ().get("BIOGNER_TEST_PROCESS_MARK") == marker
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def test_no_process_outlives_the_demo_command(small_data_dir, tmp_path):
    """`biogner demo --tiny` in its own process with its own Ray: once it has exited, no
    process it started (they all inherit the marker variable) is left running."""
    marker = uuid.uuid4().hex
    env = {**os.environ, "BIOGNER_TEST_PROCESS_MARK": marker}
    env.pop("RAY_ADDRESS", None)
    argv = ["demo", "--tiny", "--home", str(tmp_path / ".biogner"), "--port", str(free_port())]
    done = subprocess.run(
        [sys.executable, "-m", "biogner.cli", *argv, "--data-dir", str(small_data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # a new store, Ray started and stopped, six stages: only the demo's own words
    noise = library_lines(done.stdout + done.stderr)
    assert noise == [], "\n".join(noise)
    left = [p for p in psutil.process_iter() if _carries(p, marker)]

    def reaped() -> bool:  # the kernel reaps what was killed at exit, soon but not at once
        left[:] = [p for p in left if p.is_running() and _carries(p, marker)]
        return not left

    with contextlib.suppress(AssertionError):  # the assert below names what is left
        wait_until(reaped, 30, poll_s=0.2)
    assert not left, [(p.pid, " ".join(p.cmdline())[:120]) for p in left]
