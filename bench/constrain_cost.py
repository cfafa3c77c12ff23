"""What constrained decoding costs per writing: the same model, sentences and batches,
generated free and constrained (`generation.constrained`).

Per format: sentences/s and generated tokens/s each way, the ratios, and what the answers
were (parse problems, invented mentions). The two ways may write answers of different
lengths, so the per-token ratio isolates the mask's own cost (compile per answer + one mask
per step) and the per-sentence ratio is what a user waits.

Usage: python bench/constrain_cost.py --model DIR [--formats all] [--split dev] [--limit 64]
           [--batch-size 32]
Prints a table, writes bench/results/constrain_cost.json. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table, write_json  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model directory (biogner export)")
    parser.add_argument("--formats", default="all")
    parser.add_argument("--corpus", default="NCBI-disease")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=64, help="sentences (a speed sample)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)

    from biogner.corpora import get_corpus, load_split
    from biogner.formats import resolve_formats
    from biogner.generation import Generator
    from biogner.models.config import GenerationConfig

    corpus = get_corpus(args.corpus)
    types = list(corpus.entity_types)
    sentences = load_split(corpus, args.split, args.data_dir, args.limit)
    generators = {
        c: Generator(
            args.model,
            GenerationConfig(batch_size=args.batch_size, constrained=c, dtype="float32"),
        )
        for c in (False, True)
    }
    generators[True].vocabulary()  # built once per model, not per format: not timed
    rows = []
    for fmt in resolve_formats(args.formats):
        row: dict[str, object] = {"format": fmt.name, "sentences": len(sentences)}
        rate: dict[str, float] = {}
        for constrained, gen in generators.items():
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
        "constrain_cost",
        {
            "model": args.model,
            "corpus": args.corpus,
            "split": args.split,
            "limit": args.limit,
            "batch_size": args.batch_size,
            "rows": rows,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
