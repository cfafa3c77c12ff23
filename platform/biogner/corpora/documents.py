"""One model for every annotation format: documents of running text with typed character
spans (brat, JSONL, PubTator, BioC), or of tokenized sentences (IOB2/CoNLL).

Why: each reader only turns its files into `AnnotatedDocument`s and reports what it could not
read; the checks every mention needs (offsets, text, type, nesting) are written once here, so
the readers cannot disagree on them and `biogner corpora check` reports them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from biogner.corpora.problems import TYPE_NAME, Problem
from biogner.types import Sentence

Report = Callable[[str, int, str, str], None]  # (file, line, kind, message)


@dataclass(frozen=True)
class Mention:
    """A typed character span of a document, with where it was written."""

    start: int
    end: int
    label: str
    line: int = 0
    text: str | None = None  # the text the annotation says it covers, when it says
    id: str = ""


@dataclass
class AnnotatedDocument:
    """A document as read. `sentences` is set for tokenized formats (IOB2/CoNLL), whose
    sentences are given; running text is split by `corpora.segment`."""

    id: str
    text: str
    file: str
    line: int
    mentions: list[Mention] = field(default_factory=list)
    sentences: list[Sentence] | None = None
    # a document the reader made up from one sentence (IOB2 with no -DOCSTART-): it is not
    # compared across splits, where short sentences (`Results .`) repeat by nature
    is_sentence: bool = False


class Problems:
    """The problems found while reading one corpus, in the order they were found."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def __call__(self, file: str, line: int, kind: str, message: str) -> None:
        self.items.append(Problem(str(file), int(line), kind, message))

    def blocking(self, accepted: Sequence[str] = ()) -> list[Problem]:
        return [p for p in self.items if p.blocks(set(accepted))]


def files_of(path: Path, suffixes: Sequence[str] | None = None) -> list[Path]:
    """A file, or a folder's files (with one of `suffixes`, when given), recursively, sorted
    by path."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found")
    found = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and (suffixes is None or p.suffix.lower() in suffixes)
    )
    if not found:
        kind = "/".join(suffixes) if suffixes is not None else "any"
        raise FileNotFoundError(f"{path}: no {kind} files in this folder")
    return found


def per_file(
    read_file: Callable[[Path, Report], Iterator[AnnotatedDocument]], suffixes: Sequence[str]
) -> Callable[[Path, Report], Iterator[AnnotatedDocument]]:
    """A reader of one file made a reader of a file or a folder of such files."""

    def read(path: Path, report: Report) -> Iterator[AnnotatedDocument]:
        for file in files_of(path, suffixes):
            yield from read_file(file, report)

    return read


def document_id(path: Path, root: Path) -> str:
    """A file's document id: its path under the split's folder, without the suffix."""
    base = root if root.is_dir() else root.parent
    return path.relative_to(base).with_suffix("").as_posix()


def decoded_lines(path: Path, report: Report) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) of a UTF-8 text file; a line that is not UTF-8
    is reported and skipped (the rest of the file is still read)."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield lineno, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                report(str(path), lineno, "unreadable", f"not valid UTF-8 (byte {exc.start})")


def clean_mentions(
    doc: AnnotatedDocument, entity_types: Sequence[str] | None, report: Report
) -> list[Mention]:
    """The document's mentions that can be kept, each problem reported at its line:
    offsets outside the text, empty, edges on spaces (trimmed), stated text differing,
    no type or an undeclared one, repeated, nested or crossing another."""
    kept: list[Mention] = []
    declared = set(entity_types) if entity_types is not None else None
    where = f"document {doc.id}"
    for m in doc.mentions:
        if not m.label.strip():
            report(doc.file, m.line, "missing_type", f"{where}: mention {m.start}-{m.end}")
            continue
        if not TYPE_NAME.match(m.label) or not _encodable(m.label):
            report(doc.file, m.line, "unusable_type", f"{where}: type {m.label!r}")
            continue
        if declared is not None and m.label not in declared:
            report(
                doc.file,
                m.line,
                "undeclared_type",
                f"{where}: type {m.label!r} is not in entity_types {sorted(declared)}",
            )
            continue
        if not 0 <= m.start < m.end <= len(doc.text):
            report(
                doc.file,
                m.line,
                "offset_out_of_range" if m.start < m.end else "empty_mention",
                f"{where}: offsets {m.start}-{m.end} ({m.label}), text length {len(doc.text)}",
            )
            continue
        covered = doc.text[m.start : m.end]
        if m.text is not None and covered != m.text:
            report(
                doc.file,
                m.line,
                "text_mismatch",
                f"{where}: {m.start}-{m.end} says {m.text!r}, the text there is {covered!r}",
            )
        start = m.start + (len(covered) - len(covered.lstrip()))
        end = m.end - (len(covered) - len(covered.rstrip()))
        if start >= end:
            report(doc.file, m.line, "empty_mention", f"{where}: {m.start}-{m.end} is blank")
            continue
        if (start, end) != (m.start, m.end):
            report(
                doc.file,
                m.line,
                "whitespace_edge",
                f"{where}: {covered!r} trimmed to {doc.text[start:end]!r}",
            )
        kept.append(Mention(start, end, m.label, m.line, None, m.id))
    return _without_duplicates(doc, kept, report)


def _encodable(text: str) -> bool:
    """Whether `text` is valid Unicode (JSON may carry a lone surrogate, which no file holds)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def valid_text(doc: AnnotatedDocument, report: Report) -> bool:
    """Whether the document's text can be stored and tokenized; reported if not."""
    if _encodable(doc.text):
        return True
    report(doc.file, doc.line, "unreadable", f"document {doc.id}: a lone surrogate in its text")
    return False


def _without_duplicates(
    doc: AnnotatedDocument, mentions: list[Mention], report: Report
) -> list[Mention]:
    seen: set[tuple[int, int, str]] = set()
    unique: list[Mention] = []
    for m in sorted(mentions, key=lambda m: (m.start, -m.end, m.label)):
        key = (m.start, m.end, m.label)
        if key in seen:
            report(
                doc.file,
                m.line,
                "duplicate_mention",
                f"document {doc.id}: {doc.text[m.start : m.end]!r} ({m.label}) twice",
            )
            continue
        seen.add(key)
        for other in unique:  # sorted by start, the longest first: `other` began earlier
            if other.end <= m.start:
                continue
            inside = m.end <= other.end
            report(
                doc.file,
                m.line,
                "nested" if inside else "overlap",
                f"document {doc.id}: {doc.text[m.start : m.end]!r} ({m.label}) "
                f"{'inside' if inside else 'crosses'} {doc.text[other.start : other.end]!r} "
                f"({other.label})",
            )
            break
        unique.append(m)
    return unique
