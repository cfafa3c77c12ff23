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


def test_profile_split_counts_matmuls_and_attention_apart() -> None:
    """bench/generation.py's `--profile` split: a real profiled run of products and
    attention, each in its kind, the parts summing to the wall time."""
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, str(BENCH))
    from generation import split_time

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
