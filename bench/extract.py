"""`biogner extract` over abstracts built from NCBI-disease: documents/s and sentences/s of the
whole job (Ray start, model load, the actor pool, writing the blocks and the manifest).

The documents are NCBI-disease's sentences (train, dev, test, in file order) grouped by
`--sentences-per-document` into pseudo-abstracts (about a PubMed abstract's length), written
as one JSONL file; the job runs with `--actors` generation actors of one thread each, as
`biogner extract` would. Prints a table and writes bench/results/<name>.json.

Usage: python -m bench.extract --model /path/to/model [--documents 1000] [--actors 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import cpu_flags, table, write_json
from biogner.corpora import load_split
from biogner.corpora.registry import resolve_data_dir
from biogner.extract.config import ExtractConfig
from biogner.extract.job import run_extract


def build_documents(data_dir: str | None, documents: int, per_document: int, out: Path) -> int:
    """Write `documents` pseudo-abstracts to `out` (JSONL); returns the sentences used."""
    sentences = [
        s for split in ("train", "dev", "test") for s in load_split("NCBI-disease", split, data_dir)
    ]
    needed = documents * per_document
    if needed > len(sentences):
        raise SystemExit(
            f"{documents} documents of {per_document} sentences need {needed} sentences; "
            f"NCBI-disease has {len(sentences)}"
        )
    with out.open("w", encoding="utf-8") as fh:
        for d in range(documents):
            part = sentences[d * per_document : (d + 1) * per_document]
            fh.write(json.dumps({"id": f"doc{d}", "text": " ".join(s.text for s in part)}) + "\n")
    return needed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model dir or models:/, runs:/ URI")
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--sentences-per-document", type=int, default=7)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--tracking-uri", default=None, help="default: a temporary SQLite store")
    parser.add_argument("--name", default="extract")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        root = Path(tmp)
        inputs = root / "abstracts.jsonl"
        used = build_documents(
            str(resolve_data_dir(args.data_dir)),
            args.documents,
            args.sentences_per_document,
            inputs,
        )
        cfg = ExtractConfig(
            model=args.model,
            inputs=[str(inputs)],
            output=str(root / "out"),
            num_actors=args.actors,
            tracking={"tracking_uri": args.tracking_uri or f"sqlite:///{root}/mlflow.db"},
        )
        start = time.perf_counter()
        summary = run_extract(cfg)
        wall = time.perf_counter() - start
    row = {
        "documents": summary.documents,
        "sentences": summary.sentences,
        "entities": summary.entities,
        "actors": args.actors,
        "wall_s": wall,
        "documents_per_s": summary.documents / wall,
        "sentences_per_s": summary.sentences / wall,
    }
    print(table([row], list(row)))
    print(f"cpu flags: {' '.join(cpu_flags())}; source sentences: {used}")
    path = write_json(
        args.name,
        {"model": args.model, "cpu_flags": cpu_flags(), "args": vars(args), "result": row},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
