"""brat standoff: `doc.txt` and `doc.ann` side by side (brat, INCEpTION and many tools export it).

Text-bound annotations (`T1<TAB>Type start end<TAB>text`) are the mentions. Fragments that
brat split at a line break (`0 5;6 12` over `cell\\nline`) are one mention; fragments with
text between them are a discontinuous mention, which no writing holds: reported. Relations,
events, attributes, normalizations and notes are not entities: counted per file and reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from biogner.corpora.documents import (
    AnnotatedDocument,
    Mention,
    Report,
    document_id,
    files_of,
)

NOT_ENTITIES = {
    "R": "relation",
    "E": "event",
    "A": "attribute",
    "M": "attribute",
    "N": "normalization",
    "#": "note",
    "*": "equivalence",
}


def read_brat(path: Path, report: Report) -> Iterator[AnnotatedDocument]:
    """Every `.txt` document under `path` (a folder, or one `.txt`/`.ann` file) with the
    mentions of its `.ann`, in path order."""
    texts = [p if p.suffix == ".txt" else p.with_suffix(".txt") for p in files_of(path, (".txt",))]
    if path.is_dir():
        for ann in sorted(path.rglob("*.ann")):
            if not ann.with_suffix(".txt").is_file():
                report(str(ann), 0, "unreadable", "an .ann file without its .txt: not read")
    for txt in texts:
        ann = txt.with_suffix(".ann")
        try:
            raw = txt.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            report(str(txt), 0, "unreadable", f"not valid UTF-8 (byte {exc.start})")
            continue
        doc = AnnotatedDocument(document_id(txt, path), raw, str(ann), 0)
        if not ann.is_file():
            report(str(txt), 0, "unreadable", f"no {ann.name} beside it: its annotations are lost")
            continue
        doc.mentions = list(_mentions(ann, raw, report))
        if raw.startswith("\ufeff"):
            doc.text = _without_uncounted_mark(raw, doc.mentions)
        yield doc


def _mentions(ann: Path, text: str, report: Report) -> Iterator[Mention]:
    skipped: Counter[str] = Counter()
    first_skipped = 0
    try:
        lines = ann.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        report(str(ann), 0, "unreadable", f"not valid UTF-8 (byte {exc.start})")
        return
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        kind = NOT_ENTITIES.get(line[0])
        if kind is not None:
            skipped[kind] += 1
            first_skipped = first_skipped or lineno
            continue
        mention = _text_bound(line, text)
        if isinstance(mention, str):
            report(str(ann), lineno, *_problem(mention, line))
            continue
        yield Mention(mention.start, mention.end, mention.label, lineno, mention.text, mention.id)
    if skipped:
        counts = ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in sorted(skipped.items()))
        report(str(ann), first_skipped, "not_entity", f"{counts}: not entities, not read")


def _problem(reason: str, line: str) -> tuple[str, str]:
    if reason.startswith("discontinuous"):
        return "discontinuous", f"{reason}: {line!r:.120}"
    return "unreadable", f"{reason}: {line!r:.120}"


def _text_bound(line: str, text: str) -> Mention | str:
    """A `T` line as a mention, or the reason it is not one."""
    parts = line.split("\t")
    if len(parts) < 2 or not parts[0].startswith("T"):
        return "not a brat annotation line"
    label, _, offsets = parts[1].partition(" ")
    try:
        pieces = [tuple(int(x) for x in frag.split()) for frag in offsets.split(";")]
    except ValueError:
        return "offsets are not integers"
    if not pieces or any(len(p) != 2 for p in pieces):
        return "expected `T<id><TAB><type> <start> <end><TAB><text>`"
    for (_, end), (start, _) in zip(pieces, pieces[1:], strict=False):
        if text[end:start].strip() or start < end:
            return "discontinuous mention (fragments with text between them)"
    stated = parts[2] if len(parts) > 2 else None
    if stated is not None and len(pieces) > 1:
        stated = None  # brat joins fragments with a space; the text between them may differ
    return Mention(pieces[0][0], pieces[-1][1], label, 0, stated, parts[0])


def _without_uncounted_mark(text: str, mentions: list[Mention]) -> str:
    """The text as the tool counted it: without its byte-order mark when more mentions' stated
    text matches that way (tools differ; kept as a character on a tie)."""

    def matches(body: str) -> int:
        return sum(m.text is not None and body[m.start : m.end] == m.text for m in mentions)

    return text[1:] if matches(text[1:]) > matches(text) else text
