"""Where a lone one-sentence request's time goes, model side: per sentence of bench/serve.py,
the `Generator`'s whole call against its forward passes (how many, and each one's ms).

A lone request decodes one row, so every pass reads all the weights whatever its width: its
latency is passes x the cost of reading the model, plus what runs between passes (grammar,
drafts, the LM head). Each repeat starts with an empty mention memory: the time of a
sentence the model has not answered before (`python -m bench.serve --teach-from` measures a replica
that has). Prints a line per sentence, writes bench/results/<name>.json.

Usage: python -m bench.lone --model <model dir> [--format multi_inline] [--repeats 7]
       [--compare packed_linear=false,true]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import command, cpu_flags, write_json
from bench.serve import TEXTS
from biogner.annotate.text import tokenize_text
from biogner.generation import Generation, Generator
from biogner.generation.memory import MentionMemory
from biogner.models.config import GenerationConfig
from biogner.types import Sentence


def variants(compare: str | None) -> list[tuple[str, dict[str, Any]]]:
    """`--compare key=v1,v2`: one generation config per value (JSON values: true, 0, "x");
    none: the defaults alone."""
    if not compare:
        return [("default", {})]
    key, _, values = compare.partition("=")
    return [(f"{key}={v}", {key: json.loads(v)}) for v in values.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--format", default="multi_inline")
    parser.add_argument("--types", default="Disease", help="comma-separated entity types")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--compare",
        help="KEY=V1,V2: a generation config per value, their repeats interleaved "
        "(e.g. packed_linear=false,true)",
    )
    parser.add_argument("--name", default="lone")
    args = parser.parse_args(argv)

    types = args.types.split(",")
    sentences = [
        Sentence.from_tokens(f"lone-{k}", [text[a:b] for a, b in tokenize_text(text)])
        for k, text in enumerate(TEXTS)
    ]
    timed = [Timed(args.model, label, cfg, args.dtype) for label, cfg in variants(args.compare)]
    for t in timed:
        for s in sentences:  # warm: prefix cache, grammar compiler
            t.gen.extract([s], args.format, types)
    rows: list[dict[str, Any]] = []
    for s in sentences:
        runs: dict[str, list[tuple[float, float, list[float]]]] = {t.label: [] for t in timed}
        answers: dict[str, list[str]] = {}
        for _ in range(args.repeats):  # the variants interleaved: drift hits them alike
            for t in timed:
                generation, run = t.run(s, args.format, types)
                runs[t.label].append(run)
                answers[t.label] = generation.answers
        for t in timed:
            totals = [r[0] for r in runs[t.label]]
            forwards = [r[1] for r in runs[t.label]]
            passes = runs[t.label][-1][2]
            rows.append(
                {
                    "variant": t.label,
                    "sentence": s.text,
                    "total_ms": 1000 * statistics.median(totals),
                    "forward_ms": 1000 * statistics.median(forwards),
                    "passes": len(passes),
                    "pass_ms": [round(1000 * p, 1) for p in passes],
                    "same_answer": answers[t.label] == answers[timed[0].label],
                }
            )
            r = rows[-1]
            print(
                f"{t.label:>24} {r['total_ms']:6.0f} ms, forward passes {r['forward_ms']:5.0f} ms "
                f"({r['passes']}: {r['pass_ms']}): {s.text[:40]}"
            )
    medians = {
        t.label: statistics.median(r["total_ms"] for r in rows if r["variant"] == t.label)
        for t in timed
    }
    for label, ms in medians.items():
        print(f"{label}: median over the sentences {ms:.0f} ms")
    print(f"cpu {cpu_flags()}")
    path = write_json(
        args.name,
        {
            "command": command("bench.lone", argv),
            "cpu_flags": cpu_flags(),
            "rows": rows,
            "median_total_ms": medians,
            "answers_differ": sum(not r["same_answer"] for r in rows),
        },
    )
    print(f"wrote {path}")
    return 0


class Timed:
    """A `Generator` under one config, its forward passes timed."""

    def __init__(self, model: Path, label: str, cfg: dict[str, Any], dtype: str) -> None:
        self.label = label
        self.gen = Generator(model, GenerationConfig(device="cpu", dtype=dtype, **cfg))
        body = self.gen.model.base_model
        self.started: list[float] = []
        self.passes: list[float] = []
        body.register_forward_pre_hook(lambda *_: self.started.append(time.perf_counter()))
        body.register_forward_hook(
            lambda *_: self.passes.append(time.perf_counter() - self.started[-1])
        )

    def run(
        self, sentence: Sentence, fmt: str, types: list[str]
    ) -> tuple[Generation, tuple[float, float, list[float]]]:
        """One answer from an empty mention memory (a sentence not answered before):
        (generation, (seconds, seconds in forward passes, each pass's seconds))."""
        self.gen.memory = MentionMemory()
        self.passes.clear()
        start = time.perf_counter()
        generation = self.gen.extract([sentence], fmt, types)[0]
        total = time.perf_counter() - start
        return generation, (total, sum(self.passes), list(self.passes))


if __name__ == "__main__":
    raise SystemExit(main())
