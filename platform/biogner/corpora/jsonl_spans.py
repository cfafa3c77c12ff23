"""JSON Lines with character spans: what Prodigy, spaCy, doccano and Label Studio export.

One record per line, its text in `text` (Label Studio: `data.text`) and its mentions in one of
- `spans: [{start, end, label}]` (Prodigy, spaCy; records answered reject/ignore are skipped)
- `label: [[start, end, label]]` or `labels` (doccano), `entities: [[start, end, label]]`
  (spaCy's training tuples) or `entities: [{start_offset, end_offset, label}]` (doccano 1.x)
- `annotations: [{result: [{value: {start, end, text, labels: [...]}}]}]` (Label Studio)
A file that is one JSON array of such records (Label Studio's JSON export) is read as well.
The document id is `id` (or `meta.id`), else `<file>:<line>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biogner.corpora.documents import (
    AnnotatedDocument,
    Mention,
    Report,
    decoded_lines,
    per_file,
)

SUFFIXES = (".jsonl", ".json", ".ndjson")


def _records(file: Path, report: Report) -> Iterator[AnnotatedDocument]:
    records: Iterator[tuple[int, Any]]
    with file.open("rb") as fh:
        head = fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        try:
            array = json.loads(file.read_bytes().decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            report(str(file), 0, "unreadable", f"not a JSON array: {exc!s:.200}")
            return
        records = ((0, item) for item in array)
    else:
        records = _lines(file, report)
    for n, (lineno, record) in enumerate(records):
        where = f"line {lineno}" if lineno else f"record {n}"
        doc = _document(file, lineno, where, record, report)
        if doc is not None:
            yield doc


def _lines(file: Path, report: Report) -> Iterator[tuple[int, Any]]:
    for lineno, line in decoded_lines(file, report):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except ValueError as exc:
            report(str(file), lineno, "unreadable", f"not JSON: {exc}")


def _document(
    file: Path, lineno: int, where: str, record: Any, report: Report
) -> AnnotatedDocument | None:
    if not isinstance(record, dict):
        report(str(file), lineno, "unreadable", f"{where}: not a JSON object")
        return None
    if record.get("answer") in ("reject", "ignore"):
        report(str(file), lineno, "rejected_record", f"{where}: answer {record['answer']!r}")
        return None
    data = record["data"] if isinstance(record.get("data"), dict) else record
    text = data.get("text")
    if not isinstance(text, str):
        report(str(file), lineno, "unreadable", f"{where}: no `text` string")
        return None
    meta = record["meta"] if isinstance(record.get("meta"), dict) else {}
    raw_id = record.get("id", meta.get("id"))
    doc_id = str(raw_id) if raw_id is not None else f"{file.name}:{lineno or where}"
    doc = AnnotatedDocument(doc_id, text, str(file), lineno)
    try:
        doc.mentions = [
            Mention(int(s), int(e), str(label), lineno, stated)
            for s, e, label, stated in _spans(record)
        ]
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        report(str(file), lineno, "unreadable", f"{where}: spans not as expected ({exc!r:.120})")
        return None
    return doc


def _spans(record: dict[str, Any]) -> Iterator[tuple[Any, Any, Any, str | None]]:
    """(start, end, label, stated text or None) of every span, whichever tool wrote it."""
    for span in record.get("spans") or ():
        yield span["start"], span["end"], span.get("label", ""), span.get("text")
    for key in ("label", "labels", "entities"):
        for item in record.get(key) or ():
            if isinstance(item, dict):
                yield item["start_offset"], item["end_offset"], item.get("label", ""), None
            else:
                start, end, label = item
                yield start, end, label, None
    for annotation in record.get("annotations") or ():
        for result in annotation.get("result") or ():
            value = result.get("value") or {}
            if "start" not in value:
                continue  # a relation or a choice, not a span
            for label in value.get("labels") or [""]:
                yield value["start"], value["end"], label, value.get("text")


read_jsonl = per_file(_records, SUFFIXES)
