"""What constrained decoding costs per writing: the same model, sentences and batches,
generated free and constrained (`generation.constrained`).

Per format: sentences/s and generated tokens/s each way, the ratios, and what the answers
were (parse problems, invented mentions). The two ways may write answers of different
lengths, so the per-token ratio isolates the mask's own cost (compile per answer + one mask
per step) and the per-sentence ratio is what a user waits.

A format study gives each writing its own checkpoint: `--cell FORMAT=DIR` (repeatable) times
each format on the model trained in it, so its answers are that writing's, not another's
squeezed into it; that is the study's sentences/s per writing.

Usage: python -m bench.constrain_cost --model DIR [--formats all] [--split dev] [--limit 64]
           [--batch-size 32] [--dtype auto]
       python -m bench.constrain_cost --cell conv_term=DIR --cell conv_bio=DIR ... [--name N]
Prints a table, writes bench/results/<name>.json (default constrain_cost). Run it alone on the
machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bench.common import table, write_json

if TYPE_CHECKING:
    from biogner.generation import Generator


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model directory (biogner export), for --formats")
    parser.add_argument("--formats", default="all")
    parser.add_argument(
        "--cell",
        action="append",
        default=[],
        metavar="FORMAT=DIR",
        help="a format timed on its own model (repeatable; instead of --model/--formats)",
    )
    parser.add_argument("--corpus", default="NCBI-disease")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=64, help="sentences (a speed sample)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-dir")
    parser.add_argument(
        "--dtype",
        default="float32",
        help="float32 (the first runs) or auto (bf16 where the CPU has it, as evaluation loads)",
    )
    parser.add_argument(
        "--name", default="constrain_cost", help="the JSON's name under bench/results"
    )
    args = parser.parse_args(argv)
    if bool(args.model) == bool(args.cell):
        parser.error("give --model (with --formats) or --cell FORMAT=DIR, not both")

    from biogner.corpora import get_corpus, load_split
    from biogner.formats import resolve_formats

    corpus = get_corpus(args.corpus)
    types = list(corpus.entity_types)
    sentences = load_split(corpus, args.split, args.data_dir, args.limit)
    if args.model:
        cells = [(fmt, args.model) for fmt in resolve_formats(args.formats)]
    else:
        pairs = [cell.split("=", 1) for cell in args.cell]
        if any(len(p) != 2 for p in pairs):
            parser.error("--cell takes FORMAT=DIR")
        cells = [(resolve_formats(name)[0], model) for name, model in pairs]
    rows = []
    loaded_model, gens = None, {}  # one model in memory at a time: cells are loaded in turn
    for fmt, model in cells:
        if model != loaded_model:
            loaded_model, gens = model, generators(model, args.batch_size, args.dtype)
            for gen in gens.values():  # first-call costs (kernels, caches): not timed
                gen.extract(sentences[:2], fmt, types)
        row: dict[str, object] = {"format": fmt.name, "sentences": len(sentences)}
        rate: dict[str, float] = {}
        for constrained, gen in gens.items():
            key = "constrained" if constrained else "free"
            start = time.perf_counter()
            out = gen.extract(sentences, fmt, types)
            wall = time.perf_counter() - start
            tokens = sum(g.generated_tokens for g in out)
            rate[f"{key}_sent_s"] = len(out) / wall
            rate[f"{key}_tok_s"] = tokens / wall
            row[f"{key}_problems"] = sum(bool(g.parse.problems) for g in out) / len(out)
            row[f"{key}_invented"] = sum(g.parse.hallucinated for g in out)
        row["cost_per_sentence"] = rate["free_sent_s"] / rate["constrained_sent_s"]
        row["cost_per_token"] = rate["free_tok_s"] / rate["constrained_tok_s"]
        row.update(rate)
        rows.append(row)
        print(f"{fmt.name}: done", flush=True)
    columns = [
        "format",
        "free_sent_s",
        "constrained_sent_s",
        "cost_per_sentence",
        "free_tok_s",
        "constrained_tok_s",
        "cost_per_token",
        "free_problems",
        "constrained_problems",
        "free_invented",
        "constrained_invented",
    ]
    print(table(rows, columns))
    print(
        "cost = free / constrained (sentences/s or tokens/s): 1.0 = free of charge; "
        "problems = share of sentences with a parse problem; invented = mentions not in the text"
    )
    path = write_json(
        args.name,
        {
            "cells": {fmt.name: model for fmt, model in cells},
            "corpus": args.corpus,
            "split": args.split,
            "limit": args.limit,
            "batch_size": args.batch_size,
            "dtype": args.dtype,
            "rows": rows,
        },
    )
    print(f"wrote {path}")
    return 0


def generators(model: str, batch_size: int, dtype: str) -> dict[bool, Generator]:
    """The model loaded once per way of decoding; the constrained one's vocabulary is built
    here, once per model, so that no format's timing pays for it."""
    from biogner.generation import Generator
    from biogner.models.config import GenerationConfig

    out = {
        c: Generator(model, GenerationConfig(batch_size=batch_size, constrained=c, dtype=dtype))
        for c in (False, True)
    }
    out[True].vocabulary()
    return out


if __name__ == "__main__":
    sys.exit(main())
