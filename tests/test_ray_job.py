"""`ray job submit` of jobs/train.py against a real local Ray head (started by `ray start`).

The head runs in its own temp dir and on free ports, and is stopped by terminating its
`--block` process: `ray stop` would also kill the suite's own local Ray (`ray_session`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from corpus_support import write_ade_card
from mlflow.tracking import MlflowClient
from support import free_port

pytestmark = pytest.mark.slow  # Ray in a subprocess or a cluster of its own

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
HEAD_START_TIMEOUT_S = 60
JOB_TIMEOUT_S = 300  # a 4-step job took 113 s on an idle 2-core box: leave room for a busy one
# What the head (and so every job driver and worker it starts) runs with.
HEAD_ENV = {
    "RAY_AUTH_MODE": "disabled",  # else `ray job submit` needs a token (STACK.md)
    "RAY_USAGE_STATS_ENABLED": "0",
    "DS_ACCELERATOR": "cpu",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
}


def client_env() -> dict[str, str]:
    env = {**os.environ, **HEAD_ENV}
    env.pop("RAY_ADDRESS", None)  # the CLI gets --address; nothing else may redirect it
    # As a user with the venv activated: the job's `python` entrypoint (run by the head's job
    # supervisor, which inherits the head's environment) must be the venv's, not the system's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@dataclass
class Head:
    dashboard: str  # http://127.0.0.1:<port>, the job submission address
    temp_dir: Path


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the `ray start --block` process (it stops the head it started), then kill."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_head(data_dir: Path) -> Iterator[Head]:
    # AF_UNIX socket paths are limited to ~107 bytes: keep the session dir short.
    temp_dir = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))
    dashboard_port = free_port()
    cmd = [
        RAY,
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={free_port()}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        "--num-cpus=4",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    log = open(temp_dir / "head.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, env=client_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.monotonic() + HEAD_START_TIMEOUT_S
        while not _answers(f"{url}/api/jobs/"):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    f"ray head did not answer at {url} within {HEAD_START_TIMEOUT_S}s "
                    f"(exit code {proc.poll()}):\n{(temp_dir / 'head.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield Head(url, temp_dir)
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


DRIVER_MARK = "SHIPPED-DRIVER-CODE"


def marked_copy(out: Path) -> Path:
    """The working tree as `git ls-files` sees it (tracked and new files, not ignored ones),
    its CLI printing a mark and its training workers logging a metric that no installed
    biogner has: what the job runs is then visible in its logs and in MLflow."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for rel in listed:
        source = REPO / rel
        if source.is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, out / rel)
    cli = out / "platform" / "biogner" / "cli" / "__init__.py"
    text = cli.read_text()
    cli.write_text(
        text.replace(
            "    args = build_parser()", f"    print({DRIVER_MARK!r})\n    args = build_parser()", 1
        )
    )
    loop = out / "platform" / "biogner" / "train" / "loop.py"
    text = loop.read_text()
    marked = text.replace(
        '"worker_niceness": os.nice(0),', '"worker_niceness": os.nice(0), "shipped_code": 1.0,', 1
    )
    assert marked != text and DRIVER_MARK in cli.read_text()
    loop.write_text(marked)
    return out


def test_ray_job_submit_trains_and_logs_a_finished_run(ray_head: Head, data_dir: Path) -> None:
    """Submitted with `--working-dir` a tree whose code differs from the installed biogner:
    the job's driver and its training workers run the submitted code. A user's corpus card
    on the cluster's shared storage (outside the working dir) is read there."""
    tree = marked_copy(ray_head.temp_dir / "tree")
    store = ray_head.temp_dir / "store"
    card = write_ade_card(ray_head.temp_dir / "shared" / "ade")
    uri = f"sqlite:///{store}/mlflow.db"
    cmd = [
        RAY,
        "job",
        "submit",
        "--address",
        ray_head.dashboard,
        "--working-dir",
        str(tree),
        "--",
        "python",
        "jobs/train.py",
        "--config",
        "jobs/configs/tiny.yaml",
        "run_name=job-test",
        "optim.max_steps=4",
        f"tracking.tracking_uri={uri}",
        f"tracking.artifact_root={store}/artifacts",
        f"scaling.storage_path={store}/ray",
        f"data.converted_dir={store}/conv",
        f"data.data_dir={data_dir}",
        f"data.corpora=[NCBI-disease, {card}]",
    ]
    done = subprocess.run(
        cmd, env=client_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S
    )
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-5000:]
    assert DRIVER_MARK in logs  # the job's driver ran the submitted code
    found = re.search(r"run ([0-9a-f]{32}): FINISHED after 4 steps", logs)
    assert found, f"no 'run <id>: FINISHED' line in the job logs:\n{logs[-5000:]}"

    # The job driver joined this cluster (RAY_ADDRESS) instead of starting its own Ray:
    # its working dir was unpacked into this head's session, without ignored folders.
    unpacked = ray_head.temp_dir.glob("session_2*/runtime_resources/working_dir_files/_ray_pkg_*")
    uploads = [p for p in unpacked if p.is_dir()]
    assert len(uploads) == 1, uploads
    assert (uploads[0] / "jobs" / "train.py").is_file()
    assert (uploads[0] / "platform" / "biogner" / "train" / "loop.py").is_file()
    for ignored in (".venv", ".mypy_cache", ".git"):
        assert not (uploads[0] / ignored).exists(), f"{ignored} was uploaded with the job"

    client = MlflowClient(uri)
    run = client.get_run(found.group(1))
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "job-test"
    assert run.data.params["optim.max_steps"] == "4"
    assert run.data.tags["corpora"] == "NCBI-disease,ade-reports"
    cards = [f.path for f in client.list_artifacts(run.info.run_id, "corpora")]
    assert "corpora/ade-reports.yaml" in cards
    assert run.data.metrics["shipped_code"] == 1.0  # and so did its Ray Train worker
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4]
    models = [client.get_logged_model(o.model_id) for o in run.outputs.model_outputs]
    assert [m.name for m in models] == ["model"]
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(store)


def test_ray_job_extract_stopped_and_rerun_writes_every_document_once(
    ray_head: Head, data_dir: Path
) -> None:
    """`jobs/extract.py` through `ray job submit --working-dir`: a job stopped half way (as
    if killed: `stop_after_blocks`) and submitted again finishes the rest, each document once,
    every entity's offsets into its document."""
    import json

    from conftest import write_noise_model

    from biogner.corpora import load_split

    work = ray_head.temp_dir / "extract"
    model = write_noise_model(work / "model", seed=5)
    card = {"format": "multi_term", "entity_types": ["Disease"], "base_model": "noise"}
    (model / "biogner_model.json").write_text(json.dumps(card))
    sentences = [s.text for s in load_split("NCBI-disease", "dev", data_dir, limit=80)]
    docs = {f"d{i}": f"{sentences[2 * i]} {sentences[2 * i + 1]}" for i in range(40)}
    source = work / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in docs.items()))
    out = work / "out"
    submit = [
        RAY, "job", "submit", "--address", ray_head.dashboard, "--working-dir", str(REPO),
        "--", "python", "jobs/extract.py", "--model", str(model), "--input", str(source),
        "--output", str(out), "docs_per_block=10", "generation.max_new_tokens_cap=16",
        f"tracking.tracking_uri=sqlite:///{work}/mlflow.db",
    ]  # fmt: skip
    first = subprocess.run(
        [*submit, "stop_after_blocks=2"], env=client_env(), capture_output=True, text=True,
        timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    assert "4 blocks: 2 written, 0 done before" in first.stdout + first.stderr
    assert first.returncode != 0  # stopped short: the job says so
    second = subprocess.run(
        submit, env=client_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S
    )
    logs = second.stdout + second.stderr
    assert second.returncode == 0, logs[-4000:]
    assert "4 blocks: 2 written, 2 done before" in logs
    rows = [json.loads(line) for p in sorted(out.glob("part-*.jsonl")) for line in p.open()]
    assert sorted(r["id"] for r in rows) == sorted(docs)
    for row in rows:
        assert row["text"] == docs[row["id"]]
        assert all(row["text"][e["start"] : e["end"]] == e["text"] for e in row["entities"])
