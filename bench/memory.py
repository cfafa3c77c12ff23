"""What the mention memory buys a lone request: the sentences of one split sent one at a time
(as lone requests come), with the memory a model learned from answering another split, and
with none; forward passes and milliseconds per sentence, and the answers that differ.

The memory learns from the model's own answers (`biogner.generation.memory`), so a replica
that answered the dev split has learned what it marks there; the test sentences it then
gets are new to it. Each sentence's answer is also learned as it goes, as a replica would.
Prints a table, writes bench/results/<name>.json.

Usage: python -m bench.memory --model <model dir> [--teach-from NCBI-disease:dev]
       [--texts-from NCBI-disease:test] [--limit 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import command, cpu_flags, table, write_json
from biogner.corpora import load_split, resolve_data_dir
from biogner.generation import Generator
from biogner.generation.memory import MentionMemory
from biogner.models.config import GenerationConfig
from biogner.types import Sentence


def split(where: str, limit: int | None = None) -> list[Sentence]:
    corpus, _, name = where.partition(":")
    return load_split(corpus, name or "test", resolve_data_dir(), limit=limit)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--format", default="multi_inline")
    parser.add_argument("--types", default="Disease", help="comma-separated entity types")
    parser.add_argument("--teach-from", default="NCBI-disease:dev")
    parser.add_argument("--texts-from", default="NCBI-disease:test")
    parser.add_argument("--limit", type=int, default=200, help="first N sentences sent")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--name", default="memory")
    args = parser.parse_args(argv)

    types = args.types.split(",")
    gen = Generator(args.model, GenerationConfig(device="cpu", dtype=args.dtype))
    passes = {"n": 0}
    gen.model.base_model.register_forward_hook(lambda *_: passes.__setitem__("n", passes["n"] + 1))
    started = time.perf_counter()
    gen.extract(split(args.teach_from), args.format, types)  # its answers teach the memory
    taught, taught_s = gen.memory, time.perf_counter() - started
    print(f"taught {len(taught)} mention texts from {args.teach_from} in {taught_s:.0f} s")
    sentences = split(args.texts_from, args.limit)
    rows: list[dict[str, Any]] = []
    answers: dict[str, list[list[str]]] = {}
    for mode, memory in (("none", MentionMemory()), ("taught", taught)):
        gen.cfg.mention_memory = mode != "none"
        gen.memory = memory
        counts, seconds, answers[mode] = [], [], []
        for s in sentences:
            passes["n"] = 0
            start = time.perf_counter()
            answers[mode].append(gen.extract([s], args.format, types)[0].answers)
            seconds.append(1000 * (time.perf_counter() - start))
            counts.append(passes["n"])
        rows.append(
            {
                "memory": mode,
                "sentences": len(sentences),
                "passes/sentence": statistics.mean(counts),
                "median ms": statistics.median(seconds),
                "mean ms": statistics.mean(seconds),
                "p95 ms": statistics.quantiles(seconds, n=20)[-1],
                "differ": sum(a != b for a, b in zip(answers[mode], answers["none"], strict=True)),
            }
        )
    print(table(rows, list(rows[0])))
    path = write_json(
        args.name,
        {
            "command": command("bench.memory", argv),
            "cpu_flags": cpu_flags(),
            "taught_texts": len(taught),
            "taught_s": taught_s,
            "rows": rows,
        },
    )
    print(f"wrote {path}; cpu {cpu_flags()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
