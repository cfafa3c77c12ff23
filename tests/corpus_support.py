"""A user's corpus for the tests: case-report-like documents with types of their own (Drug,
AdverseEvent), written as a brat export with its card; and the writers of the formats the
package itself never writes (JSONL spans in Prodigy or doccano style, BioC XML and JSON), so
that one corpus written every way can be read back by every reader."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import bioc
from bioc import biocjson, biocxml

from biogner.corpora.export import ExportDocument, write_brat

DRUGS = ["amoxicillin", "warfarin", "cisplatin", "lithium", "metformin", "heparin"]
EVENTS = ["rash", "bleeding", "renal failure", "tremor", "lactic acidosis", "thrombocytopenia"]


def adverse_event_docs(n: int, seed: int, prefix: str) -> list[ExportDocument]:
    """Case-report-like documents with Drug and AdverseEvent mentions of their own."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        title = f"Case {i + 1} of {prefix}"
        body = ""
        mentions = []
        for _ in range(3):
            drug, event = rng.choice(DRUGS), rng.choice(EVENTS)
            sentence = f"The patient developed {event} after {drug} was started."
            base = len(title) + 1 + len(body)
            e0 = base + sentence.index(event)
            d0 = base + sentence.index(drug)
            mentions += [(e0, e0 + len(event), "AdverseEvent"), (d0, d0 + len(drug), "Drug")]
            body += sentence + " "
        docs.append(ExportDocument(f"{prefix}{i:02d}", title, body.rstrip(), tuple(mentions)))
    return docs


def write_ade_card(root: Path) -> Path:
    """`ade-reports`: 8 / 3 / 3 brat documents of 3 sentences, 6 mentions each."""
    for split, (n, seed) in {"train": (8, 1), "dev": (3, 2), "test": (3, 3)}.items():
        write_brat(adverse_event_docs(n, seed, split), root / "export" / split)
    path = root / "card.yaml"
    path.write_text(
        "name: ade-reports\nformat: brat\ntrain: export/train\ndev: export/dev\n"
        "test: export/test\nentity_types: [Drug, AdverseEvent]\nlicense: CC0\n"
    )
    return path


def write_jsonl(
    docs: Sequence[ExportDocument], path: Path, style: Literal["prodigy", "doccano"] = "prodigy"
) -> Path:
    """One record per document, its spans as Prodigy (`spans`) or doccano (`label`) write them."""
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


def _bioc_collection(docs: Sequence[ExportDocument]) -> bioc.BioCCollection:
    collection = bioc.BioCCollection()
    collection.source = "biogner"
    for doc in docs:
        document = bioc.BioCDocument()
        document.id = doc.id
        pieces = [("title", 0, doc.title), ("abstract", len(doc.title) + 1, doc.body)]
        if not doc.title:
            pieces = [("abstract", 0, doc.body)]
        n = 0
        for kind, offset, text in pieces:
            passage = bioc.BioCPassage()
            passage.offset = offset
            passage.text = text
            passage.infons["type"] = kind
            for start, end, label in doc.mentions:
                if offset <= start and end <= offset + len(text):
                    n += 1
                    ann = bioc.BioCAnnotation()
                    ann.id = f"T{n}"
                    ann.infons["type"] = label
                    ann.text = doc.text[start:end]
                    ann.add_location(bioc.BioCLocation(start, end - start))
                    passage.add_annotation(ann)
            document.add_passage(passage)
        collection.add_document(document)
    return collection


def write_bioc(docs: Sequence[ExportDocument], path: Path, as_json: bool) -> Path:
    """BioC XML or JSON; a mention across the title and the body cannot be written."""
    for doc in docs:
        edge = len(doc.title)
        for start, end, label in doc.mentions:
            if doc.title and start < edge < end:
                raise ValueError(f"document {doc.id}: {label} {start}-{end} spans two passages")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        (biocjson if as_json else biocxml).dump(_bioc_collection(docs), fh)
    return path
