"""A multi-corpus model asked every type it knows: its type groups one after the other
(`before`: a batch per group, as `Generator.extract` did) against all groups as rows of the
same batches (`after`, today's `extract`).

Runs the `Generator` on free-text sentences (bench/free_text_probe.py's, written outside every
corpus), split into tokens as the endpoint splits them. Per mode: lone sentences one at a time
(the endpoint's lone request: median and p95 ms), then all sentences in one call
(sentences/s); the count of sentences whose answers differ between the modes. Prints a table,
writes bench/results/<name>.json.

Usage: python -m bench.archive.groups --model <multi-corpus model dir> [--repeats 3] [--dtype auto]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import command, cpu_flags, table, write_json
from bench.free_text_probe import SENTENCES
from biogner.annotate.text import tokenize_text
from biogner.formats import get_format
from biogner.generation import Generator
from biogner.generation.generated import Generation, join_generations
from biogner.generation.routing import ask_plan
from biogner.models.config import GenerationConfig
from biogner.types import Sentence


def as_sentence(k: int, text: str) -> Sentence:
    """The sentence the endpoint would make of `text` (its tokens, joined by one space)."""
    return Sentence.from_tokens(f"free-{k}", [text[a:b] for a, b in tokenize_text(text)])


def extract(gen: Generator, sentences: list[Sentence], types: list[str], mode: str) -> list[Any]:
    """`after`: one call; `before`: one call per type group, joined as extract joins them."""
    fmt = get_format(gen.card.format if gen.card else "multi_inline")
    if mode == "after":
        return gen.extract(sentences, fmt, types)
    plan = ask_plan(types, gen.type_groups)
    per_group = [gen.extract(sentences, fmt, group) for group in plan]  # each group whole
    return [join_generations(list(parts), types) for parts in zip(*per_group, strict=True)]


def answers(generations: Sequence[Generation]) -> list[list[list[int]]]:
    return [g.answer_tokens for g in generations]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3, help="lone passes over the sentences")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--name", default="groups")
    args = parser.parse_args(argv)

    cfg = GenerationConfig(device="cpu", dtype=args.dtype, batch_size=args.batch_size)
    gen = Generator(args.model, cfg)
    types = list(dict.fromkeys(t for group in gen.type_groups for t in group))
    plan = ask_plan(types, gen.type_groups)
    sentences = [as_sentence(k, text) for k, text in enumerate(SENTENCES)]
    print(f"model {args.model}: {len(types)} types in {len(plan)} questions; cpu {cpu_flags()}")
    for mode in ("before", "after"):  # warm both paths (prefix caches, grammars)
        extract(gen, sentences[:2], types, mode)

    rows: list[dict[str, Any]] = []
    outputs: dict[str, list[Any]] = {}
    for mode in ("before", "after"):
        lone: list[float] = []
        for _ in range(args.repeats):
            for s in sentences:
                start = time.perf_counter()
                extract(gen, [s], types, mode)
                lone.append(time.perf_counter() - start)
        start = time.perf_counter()
        outputs[mode] = extract(gen, sentences, types, mode)
        batch_s = time.perf_counter() - start
        rows.append(
            {
                "mode": mode,
                "questions": len(plan),
                "lone_p50_ms": 1000 * statistics.median(lone),
                "lone_p95_ms": 1000 * statistics.quantiles(lone, n=20)[-1],
                "batch_sentences_per_s": len(sentences) / batch_s,
            }
        )
    differ = sum(
        a != b for a, b in zip(answers(outputs["before"]), answers(outputs["after"]), strict=True)
    )
    for row in rows:
        row["differ"] = differ if row["mode"] == "after" else "-"
    before, after = rows
    ratio = before["lone_p50_ms"] / after["lone_p50_ms"]
    print(table(rows, list(rows[0])))
    print(f"lone request: {ratio:.2f}x faster; {differ} of {len(sentences)} answers differ")
    path = write_json(
        args.name,
        {
            "command": command("bench.archive.groups", argv),
            "cpu_flags": cpu_flags(),
            "model": str(args.model),
            "types": types,
            "questions": plan,
            "rows": rows,
            "lone_ratio": ratio,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
