"""A user's corpus for the tests: case-report-like documents with types of their own (Drug,
AdverseEvent), written as a brat export with its card."""

from __future__ import annotations

import random
from pathlib import Path

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
