"""BioC XML and BioC JSON: documents of passages, each passage with its (document-level)
offset, its text and its annotations (`infon key="type"`, one or more `location`s).

The document's text places every passage at its offset, the gaps between them spaces, as the
extraction job reads the same file: BioC's offsets are then the document's. Annotations with
several locations separated by more than spaces are discontinuous (reported); relations are
counted. XML is parsed with line numbers, so a problem names the annotation's line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biogner.corpora.documents import AnnotatedDocument, Mention, Report, files_of

TYPE_KEYS = ("type", "label", "Type")
# spaces a passage's offset may put before it: more is a broken offset, not a layout
MAX_PASSAGE_GAP = 100_000


@dataclass
class _Annotation:
    id: str
    label: str
    locations: list[tuple[int, int]]
    text: str | None
    line: int


@dataclass
class _Passage:
    offset: int
    text: str | None
    line: int
    annotations: list[_Annotation] = field(default_factory=list)


def read_bioc(path: Path, report: Report, as_json: bool) -> Iterator[AnnotatedDocument]:
    for file in files_of(path, (".json",) if as_json else (".xml", ".bioc")):
        parsed = _json_documents(file, report) if as_json else _xml_documents(file, report)
        for doc_id, line, passages, relations in parsed:
            doc = _assemble(file, doc_id, line, passages, report)
            if relations:
                report(str(file), line, "not_entity", f"{doc_id}: {relations} relation(s)")
            if doc is not None:
                yield doc


Parsed = tuple[str, int, list[_Passage], int]


class PassageError(ValueError):
    """A passage that cannot be placed; `index` is its place in the sequence given."""

    def __init__(self, reason: str, index: int) -> None:
        super().__init__(reason)
        self.index = index


def place_passages(passages: Sequence[tuple[int, str | None]]) -> str:
    """A BioC document's text: each passage (offset, text) at its offset, the gaps spaces, so
    that BioC's offsets are the text's. PassageError names what is wrong: a passage without
    text (sentence-level BioC), passages that overlap, or an offset far past the text before
    it (a broken offset would otherwise build a string of that many spaces)."""
    text = ""
    for index in sorted(range(len(passages)), key=lambda i: passages[i][0]):
        offset, body = passages[index]
        if body is None:
            raise PassageError("a passage without text (sentence-level BioC is not read)", index)
        if offset < len(text):
            raise PassageError(f"passages overlap at offset {offset}", index)
        if offset - len(text) > MAX_PASSAGE_GAP:
            raise PassageError(
                f"passage offset {offset} is {offset - len(text)} characters past the text "
                "before it",
                index,
            )
        text += " " * (offset - len(text)) + body
    return text


def _assemble(
    file: Path, doc_id: str, line: int, passages: list[_Passage], report: Report
) -> AnnotatedDocument | None:
    try:
        text = place_passages([(p.offset, p.text) for p in passages])
    except PassageError as exc:
        report(str(file), passages[exc.index].line, "unreadable", f"{doc_id}: {exc}")
        return None
    doc = AnnotatedDocument(doc_id, text, str(file), line)
    for p in passages:
        for a in p.annotations:
            mention = _mention(a, text, doc_id)
            if isinstance(mention, str):
                report(str(file), a.line, "discontinuous", mention)
            else:
                doc.mentions.append(mention)
    return doc


def _mention(a: _Annotation, text: str, doc_id: str) -> Mention | str:
    spans = sorted(a.locations)
    if not spans:
        return f"{doc_id}: annotation {a.id} has no location"
    for (s0, l0), (s1, _) in zip(spans, spans[1:], strict=False):
        if s1 < s0 + l0 or text[s0 + l0 : s1].strip():
            return f"{doc_id}: annotation {a.id} ({a.label}) is in pieces {spans}"
    start, end = spans[0][0], spans[-1][0] + spans[-1][1]
    stated = a.text if len(spans) == 1 else None
    return Mention(start, end, a.label, a.line, stated, a.id)


def _xml_documents(file: Path, report: Report) -> Iterator[Parsed]:
    from lxml import etree

    try:
        for _, elem in etree.iterparse(
            str(file), tag="document", resolve_entities=False, no_network=True, huge_tree=False
        ):
            line = elem.sourceline or 0
            doc_id = elem.findtext("id") or f"{file.name}:{line}"
            relations = len(elem.findall(".//relation"))
            try:
                passages = [_xml_passage(p) for p in elem.iterfind("passage")]
            except (TypeError, ValueError) as exc:
                report(str(file), line, "unreadable", f"{doc_id}: not as BioC ({exc!s:.120})")
                continue
            finally:
                elem.clear()
            yield doc_id, line, passages, relations
    except (etree.XMLSyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", 0) or 0
        report(str(file), line, "unreadable", f"not BioC XML: {exc!s:.200}")


def _xml_passage(p: Any) -> _Passage:
    passage = _Passage(int(p.findtext("offset") or 0), p.findtext("text"), p.sourceline or 0)
    for a in p.iterfind("annotation"):
        infons = {i.get("key"): i.text or "" for i in a.iterfind("infon")}
        label = next((infons[k] for k in TYPE_KEYS if k in infons), "")
        locations = [
            (int(loc.get("offset")), int(loc.get("length"))) for loc in a.iterfind("location")
        ]
        passage.annotations.append(
            _Annotation(a.get("id") or "", label, locations, a.findtext("text"), a.sourceline or 0)
        )
    return passage


def _json_documents(file: Path, report: Report) -> Iterator[Parsed]:
    try:
        collection = json.loads(file.read_bytes().decode("utf-8-sig"))
        documents = collection["documents"]
        if not isinstance(documents, list):
            raise TypeError("`documents` is not a list")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        report(str(file), 0, "unreadable", f"not a BioC JSON collection: {exc!s:.200}")
        return
    for n, doc in enumerate(documents):
        try:
            passages = [_json_passage(p) for p in doc["passages"]]
            relations = len(doc.get("relations") or []) + sum(
                len(p.get("relations") or []) for p in doc["passages"]
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            report(str(file), 0, "unreadable", f"document {n}: not as BioC JSON ({exc!r:.120})")
            continue
        yield str(doc.get("id") or f"{file.name}#{n}"), 0, passages, relations


def _json_passage(p: dict[str, Any]) -> _Passage:
    text = p.get("text")
    if text is not None and not isinstance(text, str):
        raise TypeError(f"passage text is {type(text).__name__}, not a string")
    passage = _Passage(int(p.get("offset", 0)), text, 0)
    for a in p.get("annotations") or ():
        infons = a.get("infons") or {}
        label = next((str(infons[k]) for k in TYPE_KEYS if k in infons), "")
        locations = [(int(loc["offset"]), int(loc["length"])) for loc in a.get("locations", ())]
        passage.annotations.append(
            _Annotation(str(a.get("id", "")), label, locations, a.get("text"), 0)
        )
    return passage
