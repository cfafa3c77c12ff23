"""What the corpora hold: per built-in corpus, the splits in the data directory, their sentence
counts and whether their SHA-256 matches its card; per registered card, its splits as read
(`biogner corpora list`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TypedDict

from biogner.corpora.card import CorpusCard
from biogner.corpora.download import sha256_file
from biogner.corpora.iob import DOCSTART
from biogner.corpora.load import read_corpus
from biogner.corpora.registry import CORPORA, SPLITS, registered_corpora, resolve_data_dir


def count_sentences(path: Path) -> int:
    """Sentences in an IOB2 file without building them (same count as `read_iob2`)."""
    docstart = DOCSTART.encode() + b"\t"
    count = 0
    in_sentence = False
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                count += in_sentence
                in_sentence = False
            elif not line.startswith(docstart):
                in_sentence = True
    return count + in_sentence


class CorpusStatus(TypedDict):
    name: str
    source: str  # "built-in" or the registered card's path
    entity_types: tuple[str, ...]
    folder: str
    splits: list[str]
    sentences: dict[str, int]
    verified: bool | None
    mismatched: list[str]


def corpora_status(
    data_dir: str | os.PathLike[str] | None = None, verify: bool = True
) -> list[CorpusStatus]:
    """Per registry corpus: which splits are under `data_dir`, their sentence counts and
    whether they match the registered checksums (`verified` is None when nothing is
    present, no checksum is registered, or `verify` is off)."""
    root = resolve_data_dir(data_dir)
    rows: list[CorpusStatus] = []
    for corpus in CORPORA.values():
        folder = root / corpus.folder
        present = [s for s in SPLITS if (folder / f"{s}.tsv").is_file()]
        sentences = {s: count_sentences(folder / f"{s}.tsv") for s in present}
        mismatched: list[str] = []
        checked = 0
        if verify:
            for split in present:
                expected = corpus.sha256(split)
                if expected is None:
                    continue
                checked += 1
                if sha256_file(folder / f"{split}.tsv") != expected:
                    mismatched.append(split)
        verified: bool | None = None
        if mismatched:
            verified = False
        elif checked and checked == len(present):
            verified = True
        rows.append(
            CorpusStatus(
                name=corpus.name,
                source="built-in",
                entity_types=corpus.types,
                folder=str(folder),
                splits=present,
                sentences=sentences,
                verified=verified,
                mismatched=mismatched,
            )
        )
    return rows + [_registered_status(card) for card in registered_corpora().values()]


def _registered_status(card: CorpusCard) -> CorpusStatus:
    """A registered card as read now (its files are the user's: no checksum to verify)."""
    try:
        read = read_corpus(card)
    except (OSError, KeyError, ValueError) as exc:
        folder = f"unreadable: {exc}"
        types, counts = card.entity_types or (), {}
    else:
        folder = card.root or ""
        types = read.types
        counts = {s: len(r.sentences) for s, r in read.splits.items()}
    return CorpusStatus(
        name=card.name,
        source=card.card_path or "",
        entity_types=tuple(types),
        folder=folder,
        splits=list(counts),
        sentences=counts,
        verified=None,
        mismatched=[],
    )


def _verified_cell(row: CorpusStatus) -> str:
    if row["verified"] is True:
        return "yes"
    if row["verified"] is False:
        return f"NO ({','.join(row['mismatched'])})"
    return "-" if not row["splits"] else "unknown"


def format_corpora_table(rows: Iterable[CorpusStatus]) -> str:
    """An aligned text table of `corpora_status` rows (for `biogner corpora list`)."""
    header = ("CORPUS", "ENTITY TYPES", "SPLITS", "SENTENCES train/dev/test", "VERIFIED", "CARD")
    table = [header]
    for row in rows:
        counts = "/".join(str(row["sentences"].get(s, "-")) for s in SPLITS)
        table.append(
            (
                row["name"],
                ",".join(row["entity_types"]),
                ",".join(row["splits"]) or "-",
                counts,
                _verified_cell(row),
                row["source"],
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table
    ]
    return "\n".join(lines) + "\n"
