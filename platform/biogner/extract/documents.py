"""Documents in, one shape out: an id, the text entities are offset into, and where it came
from. Readers never stop at a bad document: it becomes a `BadDocument` (id, source, reason)
that the job writes to its errors file and goes on.

Offsets: a PubTator document is its title, one space, its abstract (PubTator's own offsets);
a JSONL document with a `title` likewise; a `.txt` file is one document, its whole text; a
BioC document is its passages placed at their own (document-level) offsets, the gaps between
them spaces, so that BioC's offsets and the document's are the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from biogner.corpora.bioc_annotations import PassageError, place_passages
from biogner.extract.config import InputFormat

FORMATS_BY_SUFFIX = {
    ".jsonl": "jsonl",
    ".txt": "text",
    ".pubtator": "pubtator",
    ".xml": "bioc-xml",
    ".json": "bioc-json",  # a .json file is one JSON document (BioC), not JSON Lines
}
Passage = tuple[int, int, str]  # (offset, length, infons as JSON) of a BioC passage


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    source: str  # file:line where it starts
    title_length: int | None = None  # characters of the title (title + " " + abstract)
    passages: tuple[Passage, ...] = ()  # a BioC document's passages, to write them back


@dataclass(frozen=True)
class BadDocument:
    id: str
    source: str
    reason: str


Read = Document | BadDocument


def input_format(path: Path, requested: InputFormat) -> str:
    """The reader for `path`: the one asked for, else by suffix (`auto`)."""
    if requested != "auto":
        return requested
    fmt = FORMATS_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: cannot tell its format from the suffix {path.suffix!r}; pass "
            "--input-format jsonl|text|pubtator|bioc-xml|bioc-json"
        )
    return fmt


def read_documents(path: Path, fmt: InputFormat, max_chars: int) -> Iterator[Read]:
    """Every document of one input file, in order; bad ones as BadDocument."""
    reader = {
        "jsonl": _jsonl,
        "text": _text,
        "pubtator": _pubtator,
        "bioc-xml": _bioc,
        "bioc-json": _bioc,
    }[input_format(path, fmt)]
    for item in reader(path):
        if isinstance(item, Document):
            if not item.text.strip():
                item = BadDocument(item.id, item.source, "no text")
            elif len(item.text) > max_chars:
                item = BadDocument(
                    item.id, item.source, f"{len(item.text)} characters; at most {max_chars}"
                )
        yield item


def _lines(path: Path) -> Iterator[tuple[int, str | None, str]]:
    """(line number, the line or None when it is not UTF-8, the reason) of a text file."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8").rstrip("\r\n"), ""
            except UnicodeDecodeError as exc:
                yield lineno, None, f"not valid UTF-8 (byte {exc.start})"


def _jsonl(path: Path) -> Iterator[Read]:
    for lineno, line, problem in _lines(path):
        where = f"{path}:{lineno}"
        if line is None:
            yield BadDocument(f"{path.name}:{lineno}", where, problem)
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            yield BadDocument(f"{path.name}:{lineno}", where, f"not JSON: {exc}")
            continue
        if not isinstance(record, dict):
            yield BadDocument(f"{path.name}:{lineno}", where, "not a JSON object")
            continue
        doc_id = str(record.get("id", f"{path.name}:{lineno}"))
        text, title = record.get("text"), record.get("title")
        if not isinstance(text, str) or (title is not None and not isinstance(title, str)):
            yield BadDocument(doc_id, where, "`text` (and `title`, if given) must be strings")
            continue
        if title:
            yield Document(doc_id, f"{title} {text}", where, len(title))
        else:
            yield Document(doc_id, text, where)


def _text(path: Path) -> Iterator[Read]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        yield BadDocument(path.stem, str(path), f"not valid UTF-8 (byte {exc.start})")
        return
    yield Document(path.stem, text, str(path))


def _pubtator(path: Path) -> Iterator[Read]:
    """`id|t|title`, `id|a|abstract`, annotation lines (ignored), a blank line between."""
    title: tuple[str, str, int] | None = None  # (id, title, line)
    for lineno, line, problem in _lines(path):
        where = f"{path}:{lineno}"
        if line is None:
            yield BadDocument(title[0] if title else f"{path.name}:{lineno}", where, problem)
            title = None
            continue
        if not line.strip() or "\t" in line.split("|", 1)[0]:
            continue  # separators and annotation lines (`id<TAB>start<TAB>...`)
        parts = line.split("|", 2)
        if len(parts) != 3 or parts[1] not in ("t", "a") or not parts[0]:
            yield BadDocument(f"{path.name}:{lineno}", where, f"not a PubTator line: {line!r:.80}")
            title = None
            continue
        doc_id, kind, body = parts
        if kind == "t":
            if title is not None:
                yield BadDocument(title[0], f"{path}:{title[2]}", "a title without its abstract")
            title = (doc_id, body, lineno)
            continue
        if title is None or title[0] != doc_id:
            yield BadDocument(doc_id, where, "an abstract without its title")
            title = None
            continue
        yield Document(doc_id, f"{title[1]} {body}", f"{path}:{title[2]}", len(title[1]))
        title = None
    if title is not None:
        yield BadDocument(title[0], f"{path}:{title[2]}", "a title without its abstract")


def _bioc(path: Path) -> Iterator[Read]:
    """Every document of a BioC collection (XML or JSON, by the `bioc` package)."""
    from bioc import biocjson, biocxml

    module = biocjson if path.suffix.lower() == ".json" else biocxml
    try:
        with path.open("rb") as fh:
            collection = module.load(fh)
    except Exception as exc:  # the bioc package raises lxml's, json's and its own errors
        yield BadDocument(path.name, str(path), f"not a BioC collection: {exc!s:.200}")
        return
    for n, doc in enumerate(collection.documents):
        where = f"{path}#document{n}"
        doc_id = str(doc.id or f"{path.name}#{n}")
        ordered = sorted(doc.passages, key=lambda p: int(p.offset))
        try:
            text = place_passages([(int(p.offset), p.text) for p in ordered])
        except PassageError as exc:
            yield BadDocument(doc_id, where, str(exc))
            continue
        passages = tuple(
            (int(p.offset), len(p.text), json.dumps(dict(p.infons), sort_keys=True))
            for p in ordered
        )
        yield Document(doc_id, text, where, passages=passages)
