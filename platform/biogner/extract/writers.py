"""Extraction output, one file per input block, written whole or not at all (a temporary
file renamed into place), so a killed job never leaves half a block that looks done.

JSONL: one line per document, `{"id", "text", "entities": [{"start", "end", "label",
"text"}]}`; Parquet: the same columns (entities as a list of structs); PubTator: the
document's title and abstract lines and one line per entity, tools of the field read it back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

OutputFormat = Literal["jsonl", "parquet", "pubtator"]
SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet", "pubtator": ".pubtator"}


def block_file(out: Path, block: int, fmt: OutputFormat) -> Path:
    return out / f"part-{block:05d}{SUFFIX[fmt]}"


def write_block(path: Path, rows: Sequence[dict[str, Any]], fmt: OutputFormat) -> None:
    """Write a block's documents (in input order) atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([dict(r) for r in rows]), tmp)
    else:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(_jsonl(row) if fmt == "jsonl" else _pubtator(row))
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def _jsonl(row: dict[str, Any]) -> str:
    record = {"id": row["id"], "text": row["text"], "entities": row["entities"]}
    return json.dumps(record, ensure_ascii=False) + "\n"


def _pubtator(row: dict[str, Any]) -> str:
    """PubTator: a document with a title keeps its title/abstract split (offsets are the
    joined text's, `title + " " + abstract`, as PubTator defines them); one without is all
    title with an empty abstract, so that the same offsets hold."""
    doc_id, text = row["id"], row["text"]
    split = row.get("title_length")
    title, abstract = (text[:split], text[split + 1 :]) if split is not None else (text, "")
    lines = [f"{doc_id}|t|{_one_line(title)}", f"{doc_id}|a|{_one_line(abstract)}"]
    for e in row["entities"]:
        mention = _one_line(e["text"])
        lines.append(f"{doc_id}\t{e['start']}\t{e['end']}\t{mention}\t{e['label']}\t-")
    return "\n".join(lines) + "\n\n"


def _one_line(text: str) -> str:
    """PubTator is line-based: a line break inside a title or abstract becomes a space (one
    character for one: the offsets stay those of the text)."""
    return text.replace("\r", " ").replace("\n", " ")
