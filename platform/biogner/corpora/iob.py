"""Tokenized corpora: IOB2 TSV (the built-in corpora) and CoNLL-style columns.

`iob2`: `token<TAB>tag` lines with IOB2 tags, a blank line between sentences, strict (a
downloaded file that is not exactly this is refused). `conll`: token in the first column, tag
in the last, tab- or space-separated, IOB2, IOB1 or BIOES/BILOU tags, `-DOCSTART-` lines
between documents and `#` comment lines (CoNLL-U's `# text = ...`) skipped.

Invalid IOB2 (an `I-X` that does not continue an `X` entity) is repaired the way the CoNLL
evaluation script reads it, as the start of a new entity, and counted so users can see how
clean a corpus is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from biogner.corpora.documents import AnnotatedDocument, Report
from biogner.types import Sentence, Span

DOCSTART = "-DOCSTART-"
MAX_LINE_BYTES = 1 << 20  # a token and its tag; a longer line is not IOB2 (and is not read whole)
# B begins, I/M continue, E/L end, S/U are a whole one-token entity (BIOES and BILOU)
PREFIXES = frozenset("BIMELSU")


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


def tags_to_spans(
    tokens: list[str], tags: list[str], bioes: bool = False
) -> tuple[list[Span], int]:
    """Spans from IOB2 tags (with `bioes`, also E-/L- ending and S-/U- single-token tags);
    returns (spans, number of repaired tags: an `I-`/`E-` that continues nothing)."""
    spans: list[Span] = []
    repaired = 0
    pos = 0
    start = -1
    end = -1
    label = ""
    for tok, tag in zip(tokens, tags, strict=True):
        prefix, _, tag_label = tag.partition("-")
        inner = prefix == "I" or (bioes and prefix in "MEL")
        single = bioes and prefix in ("S", "U")
        continues = inner and start >= 0 and tag_label == label
        if start >= 0 and not continues:
            spans.append(Span(start, end, label))
            start = -1
        if prefix == "B" or single or (inner and not continues):
            repaired += inner and not continues
            start, label = pos, tag_label
        if start >= 0:
            end = pos + len(tok)
        if start >= 0 and (single or (bioes and prefix in ("E", "L"))):
            spans.append(Span(start, end, label))
            start = -1
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


def _valid_tag(tag: str, bioes: bool) -> bool:
    return tag == "O" or (
        len(tag) > 2 and tag[0] in (PREFIXES if bioes else "BI") and tag[1] == "-"
    )


def _parse_line(line: str, lenient: bool) -> tuple[str, str] | str:
    """(token, tag), or the reason the line is not one."""
    if lenient:
        columns = line.split()
        if len(columns) < 2:
            return f"expected 'token ... tag' columns, got {line!r:.80}"
        token, tag = columns[0], columns[-1]
    else:
        if "\t" not in line:
            return f"expected 'token<TAB>tag', got {line!r:.80}"
        token, _, tag = line.partition("\t")
        tag = tag.strip()
        if "\t" in tag or " " in tag:
            return f"expected 2 columns 'token<TAB>tag', got {line!r:.80}"
    if token == DOCSTART:
        return token, tag
    if not token or any(ch.isspace() for ch in token):
        return f"token {token!r} is empty or contains whitespace"
    if not _valid_tag(tag, lenient):
        expected = "O, B-, I-, E-, S- (or L-, U-, M-)" if lenient else "O, B-<type>, I-<type>"
        return f"unknown tag {tag!r} (expected {expected})"
    return token, tag


def _tagged_lines(path: Path, lenient: bool) -> Iterator[tuple[int, str | None, str]]:
    """(line number, token or DOCSTART or None at a sentence break, tag or the reason a
    line is unreadable) for every line of the file; comments are skipped (lenient only)."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if len(raw) > MAX_LINE_BYTES:
                yield lineno, "", f"line longer than {MAX_LINE_BYTES} bytes"
                continue
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                yield lineno, "", f"not valid UTF-8 ({exc.reason})"
                continue
            if not line.strip():
                yield lineno, None, ""
                continue
            parsed = _parse_line(line, lenient)
            if isinstance(parsed, str):
                if lenient and line.lstrip().startswith("#"):
                    continue  # a comment (`# text = ...`); a `#` token has a tag after it
                yield lineno, "", parsed
                continue
            yield lineno, parsed[0], parsed[1]


def read_tagged(
    path: Path,
    lenient: bool,
    report: Report,
    id_prefix: str,
    stats: ReadStats | None = None,
) -> Iterator[AnnotatedDocument]:
    """Documents of a tagged file: `-DOCSTART-` separates documents; a file without it has
    one document per sentence. Unreadable lines are reported and the sentence they are in
    is dropped whole (a sentence missing a token would misplace every offset after it)."""
    stats = stats if stats is not None else ReadStats()
    docs: list[AnnotatedDocument] = []
    with_docstart = False
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    broken = False

    def flush() -> None:
        nonlocal tokens, tags, broken
        if tokens and not broken:
            spans, repaired = tags_to_spans(tokens, tags, bioes=lenient)
            if repaired:
                report(str(path), first_line, "repaired_tag", f"{repaired} tag(s) read as B-")
            stats.sentences += 1
            stats.tokens += len(tokens)
            stats.entities += len(spans)
            stats.repaired_tags += repaired
            sentence = Sentence.from_tokens(f"{id_prefix}-{stats.sentences - 1}", tokens, spans)
            if with_docstart and docs:
                doc = docs[-1]
            else:
                doc = AnnotatedDocument(
                    f"{path.name}:{first_line}", "", str(path), first_line, is_sentence=True
                )
                docs.append(doc)
            if doc.sentences is None:
                doc.sentences = []
            doc.sentences.append(sentence)
        tokens, tags, broken = [], [], False

    for lineno, token, tag in _tagged_lines(path, lenient):
        if token is None:
            flush()
            yield from _finished(docs, with_docstart)
            continue
        if token == "":
            report(str(path), lineno, "unreadable", tag)
            broken = True
            continue
        if token == DOCSTART:
            flush()
            yield from _finished(docs, with_docstart)
            stats.docstarts += 1
            with_docstart = True
            docs.append(AnnotatedDocument(f"{path.name}:{lineno}", "", str(path), lineno, [], []))
            continue
        if not tokens:
            first_line = lineno
        tokens.append(token)
        tags.append(tag)
    flush()
    yield from _finished(docs, with_docstart, final=True)


def _finished(
    docs: list[AnnotatedDocument], with_docstart: bool, final: bool = False
) -> Iterator[AnnotatedDocument]:
    """Pop the documents that can no longer grow, with their text set."""
    keep = 1 if with_docstart and not final else 0
    while len(docs) > keep:
        doc = docs.pop(0)
        doc.text = " ".join(s.text for s in doc.sentences or [])
        yield doc


def read_iob2(
    path: Path | str, id_prefix: str | None = None, stats: ReadStats | None = None
) -> Iterator[Sentence]:
    """Yield sentences of a strict IOB2 file; raise IOBError naming file and line on bad input
    (downloads are validated this way: an HTML page must not become a corpus)."""
    path = Path(path)

    def fail(file: str, line: int, kind: str, message: str) -> None:
        if kind == "unreadable":
            raise IOBError(path, line, message)

    prefix = id_prefix if id_prefix is not None else path.stem
    for doc in read_tagged(path, False, fail, prefix, stats):
        yield from doc.sentences or []
