"""IOB2 TSV reader: `token<TAB>tag` lines, blank lines between sentences.

Invalid IOB2 (an `I-X` that does not continue an `X` entity) is repaired the way the CoNLL
evaluation script reads it, as the start of a new entity, and counted so users can see how
clean a corpus is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from biogner.types import Sentence, Span

DOCSTART = "-DOCSTART-"


class IOBError(ValueError):
    """A malformed IOB2 file; the message names the file and line."""

    def __init__(self, path: Path | str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


@dataclass
class ReadStats:
    sentences: int = 0
    tokens: int = 0
    entities: int = 0
    repaired_tags: int = 0
    docstarts: int = 0


def tags_to_spans(tokens: list[str], tags: list[str]) -> tuple[list[Span], int]:
    """Spans from IOB2 tags; returns (spans, number of repaired `I-` tags)."""
    spans: list[Span] = []
    repaired = 0
    pos = 0
    start = -1
    end = -1
    label = ""
    for tok, tag in zip(tokens, tags, strict=True):
        prefix, _, tag_label = tag.partition("-")
        continues = prefix == "I" and start >= 0 and tag_label == label
        if start >= 0 and not continues:
            spans.append(Span(start, end, label))
            start = -1
        if prefix == "B" or (prefix == "I" and not continues):
            if prefix == "I":
                repaired += 1
            start, label = pos, tag_label
        if start >= 0:
            end = pos + len(tok)
        pos += len(tok) + 1
    if start >= 0:
        spans.append(Span(start, end, label))
    return spans, repaired


def spans_to_tags(
    sentence: Sentence, spans: list[Span] | tuple[Span, ...] | None = None
) -> list[str]:
    """IOB2 tags for token-aligned, non-overlapping spans (later overlapping spans are dropped)."""
    spans = sentence.spans if spans is None else spans
    offsets = sentence.token_offsets()
    tags = ["O"] * len(offsets)
    for span in sorted(spans):
        idx = [i for i, (s, e) in enumerate(offsets) if s >= span.start and e <= span.end]
        if not idx or any(tags[i] != "O" for i in idx):
            continue
        tags[idx[0]] = f"B-{span.label}"
        for i in idx[1:]:
            tags[i] = f"I-{span.label}"
    return tags


MAX_LINE_BYTES = 1 << 20  # a token and its tag; a longer line is not IOB2 (and is not read whole)


def read_iob2(
    path: Path | str, id_prefix: str | None = None, stats: ReadStats | None = None
) -> Iterator[Sentence]:
    """Yield sentences of an IOB2 file; raise IOBError naming file and line on bad input."""
    path = Path(path)
    prefix = id_prefix if id_prefix is not None else path.stem
    stats = stats if stats is not None else ReadStats()
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> Sentence:
        spans, repaired = tags_to_spans(tokens, tags)
        stats.sentences += 1
        stats.tokens += len(tokens)
        stats.entities += len(spans)
        stats.repaired_tags += repaired
        return Sentence.from_tokens(f"{prefix}-{stats.sentences - 1}", list(tokens), spans)

    with path.open("rb") as fh:
        for lineno, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise IOBError(path, lineno, f"line longer than {MAX_LINE_BYTES} bytes")
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise IOBError(path, lineno, f"not valid UTF-8 ({exc.reason})") from None
            if not line.strip():
                if tokens:
                    yield flush()
                    tokens, tags = [], []
                continue
            if "\t" not in line:
                raise IOBError(path, lineno, f"expected 'token<TAB>tag', got {line!r}")
            token, _, tag = line.partition("\t")
            tag = tag.strip()
            if "\t" in tag or " " in tag:
                raise IOBError(path, lineno, f"expected 2 columns 'token<TAB>tag', got {line!r}")
            if token == DOCSTART:
                stats.docstarts += 1
                continue
            if not token or any(ch.isspace() for ch in token):
                raise IOBError(path, lineno, f"token {token!r} is empty or contains whitespace")
            if tag != "O" and (tag[:2] not in ("B-", "I-") or len(tag) < 3):
                raise IOBError(
                    path, lineno, f"unknown tag {tag!r} (expected O, B-<type>, I-<type>)"
                )
            tokens.append(token)
            tags.append(tag)
    if tokens:
        yield flush()
