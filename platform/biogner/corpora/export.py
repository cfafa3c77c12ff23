"""Write annotated documents in the formats the readers take: brat, PubTator, JSONL spans
(Prodigy or doccano style), BioC XML and BioC JSON.

Why: one corpus written five ways and read back must give the same sentences and mentions
(that is how the readers are tested), and the worked example ships in two formats made from
one source. A document is a title (may be empty) and a body: PubTator and BioC keep them apart,
the others hold `title + " " + body`, the text every reader gives back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class ExportDocument:
    id: str
    title: str
    body: str
    mentions: Sequence[tuple[int, int, str]] = field(default_factory=tuple)  # document offsets

    @property
    def text(self) -> str:
        return f"{self.title} {self.body}" if self.title else self.body


def write_brat(docs: Sequence[ExportDocument], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for doc in docs:
        (folder / f"{doc.id}.txt").write_bytes(doc.text.encode("utf-8"))
        lines = [
            f"T{n}\t{label} {start} {end}\t{doc.text[start:end]}"
            for n, (start, end, label) in enumerate(doc.mentions, start=1)
        ]
        (folder / f"{doc.id}.ann").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    return folder


def write_pubtator(docs: Sequence[ExportDocument], path: Path) -> Path:
    """PubTator holds one-line titles and abstracts: text with a line break is refused."""
    blocks = []
    for doc in docs:
        if any(ch in doc.title + doc.body for ch in "\r\n"):
            raise ValueError(f"document {doc.id}: PubTator cannot hold a line break")
        lines = [f"{doc.id}|t|{doc.title}", f"{doc.id}|a|{doc.body}"]
        lines += [
            f"{doc.id}\t{start}\t{end}\t{doc.text[start:end]}\t{label}"
            for start, end, label in doc.mentions
        ]
        blocks.append("\n".join(lines) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


def write_jsonl(
    docs: Sequence[ExportDocument], path: Path, style: Literal["prodigy", "doccano"] = "prodigy"
) -> Path:
    records: list[dict[str, Any]] = []
    for doc in docs:
        if style == "prodigy":
            spans = [{"start": s, "end": e, "label": label} for s, e, label in doc.mentions]
            records.append({"id": doc.id, "text": doc.text, "spans": spans})
        else:
            labels = [[s, e, label] for s, e, label in doc.mentions]
            records.append({"id": doc.id, "text": doc.text, "label": labels})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    return path


def _bioc_collection(docs: Sequence[ExportDocument]):  # -> bioc.BioCCollection
    from bioc import BioCAnnotation, BioCCollection, BioCDocument, BioCLocation, BioCPassage

    collection = BioCCollection()
    collection.source = "biogner"
    for doc in docs:
        document = BioCDocument()
        document.id = doc.id
        pieces = [("title", 0, doc.title), ("abstract", len(doc.title) + 1, doc.body)]
        if not doc.title:
            pieces = [("abstract", 0, doc.body)]
        n = 0
        for kind, offset, text in pieces:
            passage = BioCPassage()
            passage.offset = offset
            passage.text = text
            passage.infons["type"] = kind
            for start, end, label in doc.mentions:
                if offset <= start and end <= offset + len(text):
                    n += 1
                    ann = BioCAnnotation()
                    ann.id = f"T{n}"
                    ann.infons["type"] = label
                    ann.text = doc.text[start:end]
                    ann.add_location(BioCLocation(start, end - start))
                    passage.add_annotation(ann)
            document.add_passage(passage)
        collection.add_document(document)
    return collection


def write_bioc(docs: Sequence[ExportDocument], path: Path, as_json: bool) -> Path:
    """BioC XML or JSON; a mention across the title and the body cannot be written."""
    from bioc import biocjson, biocxml

    for doc in docs:
        edge = len(doc.title)
        for start, end, label in doc.mentions:
            if doc.title and start < edge < end:
                raise ValueError(f"document {doc.id}: {label} {start}-{end} spans two passages")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        (biocjson if as_json else biocxml).dump(_bioc_collection(docs), fh)
    return path
