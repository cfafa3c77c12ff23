"""Tokens per training example, per format: what each step and each generation pays for.

Renders the first N sentences of a corpus's train split in every format, tokenizes the chat
as training does (`tokenize_chat`), and reports the mean total length, the supervised
(answer) tokens and the prompt overhead. Token counts, not timings: any machine gives the
same table. Prints it and writes bench/results/prompt_tokens.json.

    python -m bench.prompt_tokens [--model smollm2-135m] [--corpus NCBI-disease] [--limit 400]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from bench.common import command, table, write_json


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default="NCBI-disease")
    parser.add_argument("--limit", type=int, default=400)
    args = parser.parse_args(argv)

    from biogner.chat_tokens import tokenize_chat
    from biogner.corpora import get_corpus, load_split
    from biogner.formats import FORMATS
    from biogner.models.load import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    types = list(get_corpus(args.corpus).entity_types)
    sentences = load_split(args.corpus, "train", limit=args.limit)
    text_tokens = statistics.mean(
        len(tokenizer(s.text, add_special_tokens=False)["input_ids"]) for s in sentences
    )
    rows = []
    for name, fmt in FORMATS.items():
        totals, answers = [], []
        for s in sentences:
            toks = tokenize_chat(tokenizer, fmt.render(s, types))
            totals.append(len(toks["input_ids"]))
            answers.append(sum(1 for label in toks["labels"] if label != -100))
        total, answer = statistics.mean(totals), statistics.mean(answers)
        rows.append(
            {
                "format": name,
                "tokens": total,
                "answer": answer,
                "text": text_tokens,
                "overhead": total - answer - text_tokens,
            }
        )
    print(table(rows, ["format", "tokens", "answer", "text", "overhead"]))
    record = {"command": command("bench.prompt_tokens", argv), "rows": rows}
    print(f"wrote {write_json('prompt_tokens', record)}")


if __name__ == "__main__":
    main()
