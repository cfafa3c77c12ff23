"""What a training worker holds of the training set: the rows it reads and keeps, before
(every row as Python lists, `iter_rows` of the whole set, then its share) and now (two
streaming passes, its own share only, int32 arrays), for a config's tokenized set and
world sizes 1 and 8, and extrapolated per token to the whole seven local corpora and to the
GPU grid's ten-format mix.

Memory is traced with tracemalloc (Python objects and numpy buffers; Arrow blocks that Ray
Data streams through are transient in both and not counted), so the figures do not depend
on what else the machine runs; the seconds do (quote them as upper bounds beside other work).

Usage: python -m bench.archive.train_data --config jobs/configs/corpora_cpu.yaml [key=value ...]
Prints a table, writes bench/results/train_data.json.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from bench.common import table, write_json

MB = 1024 * 1024


def traced(fn: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """(result, MB retained by the result, MB at the peak, seconds)."""
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, retained / MB, peak / MB, seconds


def before(iterator: Any, rank: int, world: int) -> list[tuple[str, list[int], list[int]]]:
    """The worker's former path: every row as Python objects, then its strided share."""
    rows = list(iterator.iter_rows())
    ordered = sorted(rows, key=lambda r: str(r["id"]))
    per_rank = len(ordered) // world
    return [
        (str(r["id"]), list(r["input_ids"]), list(r["labels"]))
        for r in ordered[rank::world][:per_rank]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--name", default="train_data")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from biogner.config import load_config
    from biogner.corpora import load_split
    from biogner.runtime import init_ray
    from biogner.train.batching import rank_examples
    from biogner.train.config import TrainConfig
    from biogner.train.dataset import training_dataset

    cfg = load_config(TrainConfig, args.config, args.overrides)
    init_ray()
    ds, counts = training_dataset(cfg)
    iterator = ds.iterator()
    tokens = int(ds.sum("length"))
    rows = counts["rows"]
    whole = sum(len(load_split(c, "train", cfg.data.data_dir)) for c in cfg.data.corpora)
    out: list[dict[str, Any]] = []
    for world in (1, 8):
        kept, retained, peak, seconds = traced(lambda w=world: before(iterator, 0, w))
        out.append(_row("before", world, len(kept), retained, peak, seconds, tokens, rows, whole))
        del kept

        def now(w: int = world) -> Any:
            return rank_examples(
                lambda: iterator.iter_batches(batch_size=1024, batch_format="numpy"), 0, w
            )

        kept, retained, peak, seconds = traced(now)
        out.append(_row("now", world, len(kept), retained, peak, seconds, tokens, rows, whole))
        del kept
    headers = [
        "path",
        "world",
        "rows kept",
        "MB kept",
        "MB peak",
        "s",
        "peak B/token",
        "7 corpora MB",
        "x10 formats MB",
    ]
    print(
        f"{cfg.run_name}: {rows} rows, {tokens} tokens ({tokens / rows:.0f} a row); "
        f"the seven corpora's whole train splits: {whole} sentences"
    )
    print(table(out, headers))
    write_json(args.name, {"config": args.config, "rows": rows, "tokens": tokens, "cells": out})


def _row(
    path: str,
    world: int,
    kept: int,
    retained: float,
    peak: float,
    seconds: float,
    tokens: int,
    rows: int,
    whole: int,
) -> dict[str, Any]:
    per_token = peak * MB / tokens
    scale = whole / rows  # every sentence of every corpus, one format
    return {
        "path": path,
        "world": world,
        "rows kept": kept,
        "MB kept": round(retained, 1),
        "MB peak": round(peak, 1),
        "s": round(seconds, 1),
        "peak B/token": round(per_token, 1),
        "7 corpora MB": round(peak * scale),
        "x10 formats MB": round(peak * scale * 10),
    }


if __name__ == "__main__":
    main()
