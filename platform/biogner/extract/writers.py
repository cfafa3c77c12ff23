"""Extraction output, one file per input block, written whole or not at all (a temporary
file renamed into place), so a killed job never leaves half a block that looks done.

JSONL: one line per document, `{"id", "text", "entities": [{"start", "end", "label",
"text", "score"}]}`; Parquet: the same columns (entities as a list of structs); PubTator: the
document's title and abstract lines and one line per entity (the format has no score
column); BioC (XML or JSON): a collection whose documents keep their passages (a BioC
input's own, else title and abstract) with one annotation per entity, its score in the
annotation's `score` infon. Tools of the field read the last two back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biogner.extract.config import OutputFormat

SUFFIX = {
    "jsonl": ".jsonl",
    "parquet": ".parquet",
    "pubtator": ".pubtator",
    "bioc-xml": ".xml",
    "bioc-json": ".json",
}


def block_file(out: Path, block: int, fmt: OutputFormat) -> Path:
    return out / f"part-{block:05d}{SUFFIX[fmt]}"


def write_block(path: Path, rows: Sequence[dict[str, Any]], fmt: OutputFormat) -> None:
    """Write a block's documents (in input order) atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = ("id", "text", "entities")
        pq.write_table(pa.Table.from_pylist([{k: r[k] for k in columns} for r in rows]), tmp)
    elif fmt in ("bioc-xml", "bioc-json"):
        _write_bioc(tmp, rows, fmt)
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


def _passages(row: dict[str, Any]) -> list[tuple[int, int, dict[str, str]]]:
    """(offset, length, infons) of a document's passages: its own (BioC input), else its
    title and abstract, else one passage of all its text."""
    if row.get("passages"):
        return [(int(o), int(n), dict(json.loads(i))) for o, n, i in row["passages"]]
    split = row.get("title_length")
    if split is None:
        return [(0, len(row["text"]), {"type": "text"})]
    rest = len(row["text"]) - split - 1
    return [(0, split, {"type": "title"}), (split + 1, rest, {"type": "abstract"})]


def _write_bioc(path: Path, rows: Sequence[dict[str, Any]], fmt: OutputFormat) -> None:
    from bioc import (
        BioCAnnotation,
        BioCCollection,
        BioCDocument,
        BioCLocation,
        BioCPassage,
        biocjson,
        biocxml,
    )

    collection = BioCCollection()
    collection.source = "biogner extract"
    for row in rows:
        doc = BioCDocument()
        doc.id = row["id"]
        passages = []
        for offset, length, infons in _passages(row):
            passage = BioCPassage()
            passage.offset = offset
            passage.text = row["text"][offset : offset + length]
            passage.infons.update(infons)
            doc.add_passage(passage)
            passages.append((offset, offset + length, passage))
        for n, e in enumerate(row["entities"]):
            home = next((p for s, t, p in passages if s <= e["start"] and e["end"] <= t), None)
            target = home if home is not None else passages[0][2]
            ann = BioCAnnotation()
            ann.id = f"T{n}"
            ann.infons["type"] = e["label"]
            if e.get("score") is not None:
                ann.infons["score"] = f"{e['score']:.4f}"
            ann.text = e["text"]
            ann.add_location(BioCLocation(offset=e["start"], length=e["end"] - e["start"]))
            target.add_annotation(ann)
        collection.add_document(doc)
    with path.open("w", encoding="utf-8") as fh:
        (biocjson if fmt == "bioc-json" else biocxml).dump(collection, fh)
