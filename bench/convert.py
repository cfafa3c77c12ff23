"""Conversion throughput: Ray Data pipeline vs a plain single-process loop, same input.

Both read the IOB2 files, render every format and write Parquet. Prints a table, writes
bench/results/convert.json. Usage:
    python -m bench.convert [--corpus NCBI-disease,BC5CDR,JNLPBA] [--format all] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import median, table, write_json
from biogner.corpora import load_split
from biogner.data import ConvertConfig, convert, render_rows


def plain_loop(cfg: ConvertConfig, out: Path) -> int:
    """The baseline: one process, no Ray."""
    rows = []
    for corpus in cfg.corpora:
        for split in cfg.splits:
            for sent in load_split(corpus, split, cfg.data_dir, cfg.limit):
                rows.extend(render_rows(sent, corpus, split, cfg.formats))
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / "rows.parquet")
    return len(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", default="NCBI-disease,BC5CDR,JNLPBA")
    parser.add_argument("--format", default="all")
    parser.add_argument("--split", default="train,dev,test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)

    from biogner.runtime import init_ray

    init_ray()
    cfg = ConvertConfig(
        corpora=args.corpus.split(","),
        formats=args.format.split(","),
        splits=args.split.split(","),
        data_dir=args.data_dir,
    ).resolved()
    times: dict[str, list[float]] = {"ray_data": [], "plain_loop": []}
    n_rows = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            start = time.perf_counter()
            summary = convert(cfg.model_copy(update={"out": f"{tmp}/ray{i}"}))
            times["ray_data"].append(time.perf_counter() - start)
            start = time.perf_counter()
            n_plain = plain_loop(cfg, Path(tmp) / f"plain{i}")
            times["plain_loop"].append(time.perf_counter() - start)
            n_rows = summary.total_rows
            assert n_rows == n_plain, (n_rows, n_plain)
    rows = []
    for name, secs in times.items():
        rows.append(
            {
                "pipeline": name,
                "rows": n_rows,
                "median_s": median(secs),
                "rows_per_s": n_rows / median(secs),
            }
        )
    ratio = rows[0]["rows_per_s"] / rows[1]["rows_per_s"]
    print(table(rows, ["pipeline", "rows", "median_s", "rows_per_s"]))
    print(f"ray_data / plain_loop throughput ratio: {ratio:.2f}x  ({args.repeats} repeats)")
    path = write_json(
        "convert",
        {
            "corpora": cfg.corpora,
            "formats": cfg.formats,
            "splits": cfg.splits,
            "repeats": args.repeats,
            "times_s": times,
            "rows": rows,
            "ratio_ray_over_plain": ratio,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
