"""Where a lone one-sentence request's time goes, model side: per sentence of bench/serve.py,
the `Generator`'s whole call against its forward passes (how many, and each one's ms).

A lone request decodes one row, so every pass reads all the weights whatever its width: its
latency is passes x the cost of reading the model, plus what runs between passes (grammar,
drafts, the LM head). Each repeat starts with an empty mention memory: the time of a
sentence the model has not answered before (bench/serve.py --teach-from measures a replica
that has). Prints a line per sentence, writes bench/results/<name>.json.

Usage: python bench/lone.py --model <model dir> [--format multi_inline] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import cpu_flags, write_json  # noqa: E402
from serve import TEXTS  # noqa: E402

from biogner.generation import Generator  # noqa: E402
from biogner.generation.memory import MentionMemory  # noqa: E402
from biogner.models.config import GenerationConfig  # noqa: E402
from biogner.serve.text import tokenize_text  # noqa: E402
from biogner.types import Sentence  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--format", default="multi_inline")
    parser.add_argument("--types", default="Disease", help="comma-separated entity types")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--name", default="lone")
    args = parser.parse_args(argv)

    gen = Generator(args.model, GenerationConfig(device="cpu", dtype=args.dtype))
    body = gen.model.base_model
    started: list[float] = []
    passes: list[float] = []
    body.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))
    body.register_forward_hook(lambda *_: passes.append(time.perf_counter() - started[-1]))
    types = args.types.split(",")
    sentences = [
        Sentence.from_tokens(f"lone-{k}", [text[a:b] for a, b in tokenize_text(text)])
        for k, text in enumerate(TEXTS)
    ]
    for s in sentences:  # warm: prefix cache, grammar compiler
        gen.extract([s], args.format, types)
    rows: list[dict[str, Any]] = []
    for s in sentences:
        totals, forwards = [], []
        for _ in range(args.repeats):
            gen.memory = MentionMemory()  # a sentence the model has not answered before
            passes.clear()
            start = time.perf_counter()
            generation = gen.extract([s], args.format, types)[0]
            totals.append(time.perf_counter() - start)
            forwards.append(sum(passes))
        rows.append(
            {
                "sentence": s.text,
                "total_ms": 1000 * statistics.median(totals),
                "forward_ms": 1000 * statistics.median(forwards),
                "passes": len(passes),
                "pass_ms": [round(1000 * p, 1) for p in passes],
                "generated_tokens": generation.generated_tokens,
            }
        )
        r = rows[-1]
        print(
            f"{r['total_ms']:6.0f} ms, forward passes {r['forward_ms']:5.0f} ms "
            f"({r['passes']}: {r['pass_ms']}), {r['generated_tokens']} tokens: {s.text[:50]}"
        )
    median_total = statistics.median(r["total_ms"] for r in rows)
    print(f"median over the sentences: {median_total:.0f} ms; cpu {cpu_flags()}")
    path = write_json(
        args.name,
        {
            "command": " ".join(["python", "bench/lone.py", *(argv or sys.argv[1:])]),
            "cpu_flags": cpu_flags(),
            "rows": rows,
            "median_total_ms": median_total,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
