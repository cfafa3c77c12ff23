"""A command's own Ray beside a `ray start` cluster on the same machine (live or stopped):
it starts a private local Ray unless RAY_ADDRESS names a cluster to join (#29 item 18).

Each case runs in a fresh interpreter with its own Ray temp folder (RAY_TMPDIR), so the
record it plants, or the head it starts, touches nothing else on the machine."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support import free_port

pytestmark = pytest.mark.slow  # each case starts Ray (and a `ray start` head) of its own

PROBE = """
import json, ray
from biogner.runtime import init_ray
init_ray(num_cpus=3)
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address,
                  "cpus": ray.cluster_resources().get("CPU")}))
"""


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    # short: Ray's unix sockets live under it (a socket path has at most ~107 bytes)
    path = Path(tempfile.mkdtemp(prefix="brt", dir="/tmp"))
    yield path
    for proc in psutil.process_iter(["cmdline"]):
        if str(path) in " ".join(proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error, OSError):
                proc.send_signal(signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


def env_for(ray_tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # a `ray start` head asks clients for a token unless auth is off (STACK.md)
    return {**env, "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "disabled", **extra}


def probe(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_stale_cluster_record_is_ignored(ray_tmp: Path) -> None:
    """A stopped `ray start` head leaves `ray_current_cluster` behind."""
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")
    got = probe(env_for(ray_tmp))
    assert got["cpus"] == 3 and got["gcs"] != "127.0.0.1:1"


def test_a_live_head_is_joined_only_when_named(ray_tmp: Path) -> None:
    port = free_port()
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = env_for(ray_tmp)
    started = subprocess.run(
        [
            ray_bin,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=1",
            "--include-dashboard=false",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr[-3000:]
    private = probe(env)  # not named: a private Ray, with the CPUs asked for
    assert private["cpus"] == 3 and not str(private["gcs"]).endswith(f":{port}")
    joined = probe(env_for(ray_tmp, RAY_ADDRESS=f"127.0.0.1:{port}"))
    assert joined["cpus"] == 1 and str(joined["gcs"]).endswith(f":{port}")
