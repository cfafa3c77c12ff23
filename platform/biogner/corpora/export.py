"""Write annotated documents as brat and PubTator, formats the readers take.

Why: the worked example (`jobs/examples/build_cdr_example.py`) ships in two formats made from
one source. A document is a title (may be empty) and a body: PubTator keeps them apart, brat
holds `title + " " + body`, the text every reader gives back. (The tests' writers of the other
formats, JSONL spans and BioC, are in `tests/corpus_support.py`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


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
