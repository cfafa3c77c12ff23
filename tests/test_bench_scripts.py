"""Every benchmark script still imports and parses its arguments: `--help` of each, in a
fresh interpreter (bench/serve.py imported a removed module for a while, unnoticed)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).parents[1] / "bench"
SCRIPTS = sorted(p for p in [*BENCH.glob("*.py"), *BENCH.glob("gpu/*.py")] if p.name != "common.py")


def help_of(script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300
    )


def test_every_bench_script_answers_help() -> None:
    assert len(SCRIPTS) >= 12
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(SCRIPTS, pool.map(help_of, SCRIPTS), strict=True))
    broken = {
        p.name: (r.stderr or r.stdout)[-400:]
        for p, r in done.items()
        if r.returncode != 0 or "usage:" not in r.stdout
    }
    assert not broken, broken
