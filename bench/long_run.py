"""Does a CPU training step keep its speed over a long run?

`bench/train.py` times a dozen steps; the reference recipe's run (950 steps over the whole
split) logged 25-30 % fewer real tokens/s, and its worker's memory kept growing. One
suspect: oneDNN, which runs bf16 matmuls on the CPU, compiles and caches a kernel per
distinct shape, at most `ONEDNN_PRIMITIVE_CACHE_CAPACITY` of them (1024 by default).
Length-grouped batches of a whole split bring a new sequence length (and a new count of
answer positions for the head) at most steps: once more shapes are live than the cache
holds, kernels are evicted and compiled again.

This runs the plain training loop of `bench/train.py` (the Ray worker's step: bf16 autocast,
fused AdamW, answer-only loss; no Ray, so nothing else moves) over `--steps` length-grouped
batches of the whole train split, once per variant, each in a fresh process, and reports
real tokens/s and memory per window of steps. Variants: `glibc` (alias `default`: glibc's
allocator, which bench/train.py's plain loop no longer uses by default), and `cacheN` (the oneDNN
primitive cache set to N kernels), `jemalloc` (jemalloc instead of glibc's allocator,
LD_PRELOAD: a varying tensor size fragments glibc's heap).

Found (bench/results/archive/training.md, "The champion on a bf16 CPU", 2026-11-29): the
oneDNN cache is not the cause (16384 kernels change
nothing); glibc's allocator is (jemalloc: 1.33x tokens/s, memory flat instead of growing).

Usage: python -m bench.long_run [--steps 160] [--window 20] [--variants glibc,jemalloc,cache16384]
           [--format conv_term]
Prints a table, writes bench/results/long_run.json. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import command, median, table, write_json
from bench.train import bench_config, run_plain
from biogner.runtime import jemalloc_library

CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def variant_env(name: str) -> dict[str, str]:
    """The environment a variant's process starts with (before torch loads)."""
    if name in ("default", "glibc"):
        return {}
    if name.startswith("cache") and name[5:].isdigit():
        return {CACHE_ENV: name[5:]}
    if name == "jemalloc":
        library = jemalloc_library()
        if library is None:
            raise SystemExit("variant jemalloc: no libjemalloc on this machine (apt: libjemalloc2)")
        return {"LD_PRELOAD": library}
    raise SystemExit(f"unknown variant {name!r}: glibc, jemalloc or cacheN (e.g. cache16384)")


def windows(per_step: dict[str, list[float]], size: int) -> list[dict[str, Any]]:
    """Real tokens/s (total tokens / total time) and memory per window of `size` steps; the
    first step (warm-up) is left out."""
    step_s, tokens, rss = (per_step[k][1:] for k in ("step_s", "real_tokens", "rss_gib"))
    out = []
    for start in range(0, len(step_s), size):
        end = min(start + size, len(step_s))
        out.append(
            {
                "steps": f"{start + 2}-{end + 1}",
                "tok_s": sum(tokens[start:end]) / sum(step_s[start:end]),
                "step_s": median(step_s[start:end]),
                "rss_gib": rss[end - 1],
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--format", default="conv_term")
    parser.add_argument("--corpus", default="NCBI-disease")
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--variants", default="glibc,jemalloc")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    envs = {name: variant_env(name) for name in names}
    # bench_config's knobs: the whole split, one worker's batches, the machine's precision
    args.limit, args.precision, args.gpu, args.cpus_per_worker = 10**7, None, False, None
    results: dict[str, Any] = {}
    rows = []
    for name in names:
        cfg = bench_config(args, args.model, False, 1, 0, Path("/tmp/bench-long-run"))
        print(f"== {name}: {args.steps} steps of {args.format}", flush=True)
        result = run_plain(cfg, use_gpu=False, env=envs[name])
        per_window = windows(result.pop("per_step"), args.window)
        results[name] = {**result, "windows": per_window}
        for w in per_window:
            rows.append({"variant": name, **w})
    print(table(rows, ["variant", "steps", "tok_s", "step_s", "rss_gib"]))
    print("tok_s = real tokens / seconds over the window; rss_gib = the process's RSS at its end")
    path = write_json(
        "long_run",
        {
            "command": command("bench.long_run", argv),
            "model": args.model,
            "format": args.format,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "variants": results,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
