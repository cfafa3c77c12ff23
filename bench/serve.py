"""Serving throughput and latency: the batched NER endpoint vs the same one unbatched.

One Ray, one Serve on 127.0.0.1. The same application is deployed twice, once with
`@serve.batch` (max batch size --batch) and once with max batch size 1; against each, a closed
loop of N concurrent HTTP clients (httpx, one request in flight per client) sends
/v1/extract requests for --duration seconds at N = 1, 8, 32, 64. Reported per level:
requests/s, texts/s, p50/p95/p99 latency, mean batch size (from the replica's /v1/stats),
errors; and batched/unbatched ratios. Prints a table, writes bench/results/serve.json.

The default model is `tiny-llama` built from config (random weights, answers capped at
--max-new-tokens tokens), so the numbers measure the serving path, not a model's speed; pass
--model-uri (models:/name@champion, runs:/..., a directory) to serve a trained model.
Usage:
    python -m bench.serve [--levels 1,8,32,64] [--duration 15] [--batch 16] [--model-uri URI]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.common import command, table, write_json
from biogner.models.load import save_model_dir
from biogner.serve.app import parse_config, resolve_locations
from biogner.serve.local import start_app, stop_app, wait_ready

APP = "bench-serve"
TEXTS = [
    "Germline mutations in the BRCA1 gene predispose women to early-onset breast cancer.",
    "Patients with ataxia-telangiectasia showed an increased risk of leukaemia.",
    "Duchenne muscular dystrophy and cystic fibrosis were absent in 120 families.",
    "Hereditary nonpolyposis colorectal cancer is caused by mismatch repair defects.",
]
META = {"format": "conv_term", "entity_types": ["Disease"], "base_model": "tiny-llama"}


def build_tiny_model(out: Path) -> Path:
    """A tiny-llama saved as a biogner model directory (built from config, no training)."""
    return save_model_dir("tiny-llama", out, META)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def closed_loop(
    url: str,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    texts_per_request: int,
    texts: list[str] = TEXTS,
) -> dict[str, Any]:
    """`concurrency` clients, each sending its next request when the last one is answered
    (the next of `texts`, round robin); requests started during the warm-up are not
    counted."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # /v1/stats goes through its own client: the load's pool, busy at low concurrency, would
    # delay the snapshot until the load stops
    async with (
        httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client,
        httpx.AsyncClient(base_url=url, timeout=60) as probe,
    ):
        stats_before: dict[str, Any] = {}
        t0 = time.perf_counter()
        measure_from = t0 + warmup_s
        stop_at = measure_from + duration_s

        async def worker(k: int) -> None:
            i = k
            while True:
                start = time.perf_counter()
                if start >= stop_at:
                    return
                body = {"texts": [texts[(i + j) % len(texts)] for j in range(texts_per_request)]}
                i += concurrency
                try:
                    r = await client.post("/v1/extract", json=body)
                    status = str(r.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                if start < measure_from:
                    continue
                if status == "200":
                    latencies.append(time.perf_counter() - start)
                else:
                    errors[status] = errors.get(status, 0) + 1

        async def snapshot() -> None:
            nonlocal stats_before
            await asyncio.sleep(warmup_s)
            stats_before = (await probe.get("/v1/stats")).json()

        await asyncio.gather(snapshot(), *(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - measure_from
        stats_after = (await probe.get("/v1/stats")).json()
    batches = stats_after["batches"] - stats_before["batches"]
    served = stats_after["requests"] - stats_before["requests"]
    done = len(latencies)
    ms = sorted(x * 1000 for x in latencies)
    return {
        "concurrency": concurrency,
        "requests": done,
        "errors": errors,
        "seconds": elapsed,
        "requests_per_s": done / elapsed,
        "texts_per_s": done * texts_per_request / elapsed,
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_batch_size": served / batches if batches else 0.0,
        # requests that joined a running batch (not counted in the batches' sizes)
        "joined": stats_after.get("joined", 0) - stats_before.get("joined", 0),
    }


def run_variant(
    name: str,
    model_uri: str,
    max_batch_size: int,
    args: argparse.Namespace,
    wait_s: float = 0.0,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Deploy the app with this batch size, teach it `args.teach` (when given), run every
    concurrency level, delete the app."""
    max_level = max(args.levels)
    cfg = resolve_locations(
        parse_config(
            {
                "model_uri": model_uri,
                "generation": {
                    "device": "cpu",
                    "batch_size": max(args.batch, 1),
                    "max_new_tokens_cap": args.max_new_tokens,
                    "threads": args.threads,
                    **(overrides or {}).get("generation", {}),
                },
                "batching": {
                    "max_batch_size": max_batch_size,
                    "batch_wait_timeout_s": wait_s,
                    "max_concurrent_batches": args.concurrent_batches,
                    **(overrides or {}).get("batching", {}),
                },
                # every request of the biggest level may wait at the replica, so a batch
                # never starves on the router side (>= max_batch_size in both variants)
                "model": {
                    "max_ongoing_requests": max(
                        max_level, max_batch_size * args.concurrent_batches
                    ),
                    "ray_actor_options": {"num_cpus": 1},
                },
                # (at least a batch: the config refuses an ingress that would cap batches)
                "ingress": {"max_ongoing_requests": max(4 * max_level, max_batch_size)},
            }
        )
    )
    started = time.perf_counter()
    base = start_app(cfg, "127.0.0.1", args.port, APP)
    wait_ready(base)
    print(
        f"[{name}] max_batch_size={max_batch_size} ready in {time.perf_counter() - started:.0f} s"
    )
    rows = []
    try:
        if args.teach:
            teach(base, args.teach)
        for level in args.levels:
            row = asyncio.run(
                closed_loop(
                    base, level, args.duration, args.warmup, args.texts_per_request, args.texts
                )
            )
            row = {"variant": name, "max_batch_size": max_batch_size, **row}
            print(
                f"[{name}] c={level:>3}: {row['requests_per_s']:.1f} req/s, "
                f"p50 {row['p50_ms']:.0f} ms, mean batch {row['mean_batch_size']:.1f}, "
                f"joined {row['joined']}, "
                f"errors {row['errors'] or 0}",
                flush=True,
            )
            rows.append(row)
    finally:
        stop_app(APP)
    return rows


def corpus_texts(where: str) -> list[str]:
    """The sentences of `CORPUS:SPLIT` (the corpora of BIOGNER_DATA_DIR), in order."""
    from biogner.corpora import load_split, resolve_data_dir

    corpus, _, split = where.partition(":")
    return [s.text for s in load_split(corpus, split or "test", resolve_data_dir())]


def teach(base: str, texts: list[str]) -> None:
    """Post `texts` once, 16 a request: the traffic a replica answered before (its mention
    memory learns from its answers), not measured."""
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=600) as client:
        for k in range(0, len(texts), 16):
            client.post("/v1/extract", json={"texts": texts[k : k + 16]}).raise_for_status()
    print(f"taught {len(texts)} texts in {time.perf_counter() - started:.0f} s")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="1,8,32,64", help="client concurrency levels")
    parser.add_argument("--duration", type=float, default=15.0, help="measured s per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured s per level")
    parser.add_argument("--batch", type=int, default=16, help="max batch size when batched")
    parser.add_argument(
        "--wait-s",
        default="0.0",
        help="batch_wait_timeout_s; several (comma-separated) deploy one batched variant each",
    )
    parser.add_argument(
        "--no-unbatched", action="store_true", help="skip the unbatched variant (no ratios)"
    )
    parser.add_argument("--name", default="serve", help="bench/results/<name>.json")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--model-uri", help="default: a tiny-llama built from config")
    parser.add_argument(
        "--threads", type=int, help="torch threads of the replica (default: all cores)"
    )
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument(
        "--texts-from",
        help="CORPUS:SPLIT: requests send that split's sentences in order (none seen twice "
        "while the split lasts) instead of the four built-in texts",
    )
    parser.add_argument(
        "--teach-from",
        help="CORPUS:SPLIT: post that split once after each deploy, unmeasured (what the "
        "replica answered before: its mention memory learns from it)",
    )
    parser.add_argument(
        "--concurrent-batches",
        type=int,
        default=1,
        help="batching.max_concurrent_batches: batches a replica runs at once",
    )
    parser.add_argument(
        "--mention-memory",
        default="on",
        help="on, off or off,on: generation.mention_memory of the batched variants",
    )
    parser.add_argument(
        "--compare",
        help="[SECTION.]KEY=V1,V2: a batched variant per value of generation.KEY or "
        "batching.KEY (JSON values, e.g. batching.join_running=false,true)",
    )
    args = parser.parse_args(argv)
    args.texts = corpus_texts(args.texts_from) if args.texts_from else TEXTS
    args.teach = corpus_texts(args.teach_from) if args.teach_from else []
    args.levels = [int(x) for x in args.levels.split(",")]
    args.port = args.port or free_port()

    from biogner.runtime import init_ray

    total = time.perf_counter()
    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        model_uri = args.model_uri or str(build_tiny_model(Path(tmp) / "tiny-llama"))
        waits = [float(w) for w in str(args.wait_s).split(",")]
        rows = []
        memories = args.mention_memory.split(",")
        key, _, values = (args.compare or "").partition("=")
        section, _, field = key.rpartition(".")
        compared = [
            (f", {key}={v}", {section or "generation": {field: json.loads(v)}})
            for v in values.split(",")
            if key
        ]
        for memory in memories:
            for label, override in compared or [("", {})]:
                for wait in waits:
                    name = "batched" if len(waits) == 1 else f"batched wait {wait:g}s"
                    if len(memories) > 1:
                        name += f", memory {memory}"
                    generation = {
                        "mention_memory": memory == "on",
                        **override.get("generation", {}),
                    }
                    overrides = {**override, "generation": generation}
                    rows += run_variant(name + label, model_uri, args.batch, args, wait, overrides)
        if not args.no_unbatched:
            rows += run_variant("unbatched", model_uri, 1, args)
    by_level = {(r["variant"], r["concurrency"]): r for r in rows}
    ratios = []
    first = rows[0]["variant"]
    for level in args.levels if not args.no_unbatched else []:
        b, u = by_level[(first, level)], by_level[("unbatched", level)]
        ratios.append(
            {
                "concurrency": level,
                "rps_ratio": b["requests_per_s"] / u["requests_per_s"]
                if u["requests_per_s"]
                else 0.0,
                "p50_ratio": b["p50_ms"] / u["p50_ms"] if u["p50_ms"] else 0.0,
                "p99_ratio": b["p99_ms"] / u["p99_ms"] if u["p99_ms"] else 0.0,
            }
        )
    columns = [
        "variant",
        "concurrency",
        "requests",
        "requests_per_s",
        "texts_per_s",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "mean_batch_size",
        "joined",
    ]
    print(table(rows, columns))
    print()
    if ratios:
        print("batched / unbatched:")
        print(table(ratios, ["concurrency", "rps_ratio", "p50_ratio", "p99_ratio"]))
    path = write_json(
        args.name,
        {
            "command": command("bench.serve", argv),
            "model_uri": args.model_uri or "tiny-llama (built from config)",
            "levels": args.levels,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "batch": args.batch,
            "batch_wait_timeout_s": args.wait_s,
            "texts_per_request": args.texts_per_request,
            "max_new_tokens": args.max_new_tokens,
            "threads": args.threads,
            "concurrent_batches": args.concurrent_batches,
            "texts_from": args.texts_from or "the four built-in texts",
            "teach_from": args.teach_from,
            "mention_memory": args.mention_memory,
            "compare": args.compare,
            "rows": rows,
            "ratios_batched_over_unbatched": ratios,
            "total_s": time.perf_counter() - total,
        },
    )
    print(f"wrote {path}  (total {time.perf_counter() - total:.0f} s)")


if __name__ == "__main__":
    main()
