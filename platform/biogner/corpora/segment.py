"""Running text with character spans -> the sentences a model trains on.

Why the serving splitter: the endpoint and the extraction job cut a client's text with
`annotate.text` (tokens, then sentences); a model trained on sentences cut any other way would
be served text it never saw. Two rules on top keep every annotation: a mention edge inside a
token splits the token there (`IL2` annotated in `IL2R`), and a sentence break inside a mention
joins the two sentences. Each sentence keeps where its tokens are in the document (`Window`).
"""

from __future__ import annotations

from collections.abc import Sequence

from biogner.annotate.text import Offsets, Window, split_sentences, tokenize_text
from biogner.corpora.documents import AnnotatedDocument, Mention, Report
from biogner.types import Sentence, Span


def document_windows(
    doc: AnnotatedDocument, mentions: Sequence[Mention], report: Report, id_prefix: str
) -> list[Window]:
    """The document's sentences (ids `<id_prefix><n>`), each with its gold spans in the
    sentence's joined text and its tokens' offsets in the document."""
    tokens = _split_at_edges(doc, tokenize_text(doc.text), mentions, report)
    sentences = _join_across_mentions(doc, split_sentences(doc.text, tokens), mentions, report)
    windows: list[Window] = []
    for offsets in sentences:
        first, last = offsets[0][0], offsets[-1][1]
        inside = [m for m in mentions if first <= m.start and m.end <= last]
        words = [doc.text[s:e] for s, e in offsets]
        plain = Sentence.from_tokens(f"{id_prefix}{len(windows)}", words)
        joined = plain.token_offsets()
        spans = []
        for m in inside:
            idx = [k for k, (s, e) in enumerate(offsets) if m.start <= s and e <= m.end]
            if not idx:  # only invisible characters (zero-width spaces) under it
                report(doc.file, m.line, "empty_mention", f"document {doc.id}: no visible text")
                continue
            spans.append(Span(joined[idx[0]][0], joined[idx[-1]][1], m.label))
        sentence = Sentence.from_tokens(plain.id, words, spans)
        windows.append(Window(sentence, tuple(offsets)))
    return windows


def _split_at_edges(
    doc: AnnotatedDocument, tokens: list[Offsets], mentions: Sequence[Mention], report: Report
) -> list[Offsets]:
    """Tokens cut wherever a mention starts or ends inside one, each cut reported once."""
    edges: dict[int, Mention] = {}
    for m in mentions:
        edges.setdefault(m.start, m)
        edges.setdefault(m.end, m)
    out: list[Offsets] = []
    for start, end in tokens:
        cuts = sorted(pos for pos in edges if start < pos < end)
        for pos in cuts:
            m = edges[pos]
            report(
                doc.file,
                m.line,
                "inside_word",
                f"document {doc.id}: {doc.text[m.start : m.end]!r} ({m.label}) ends or starts "
                f"inside {doc.text[start:end]!r}; the word is split there",
            )
        bounds = [start, *cuts, end]
        out.extend((a, b) for a, b in zip(bounds, bounds[1:], strict=False))
    return out


def _join_across_mentions(
    doc: AnnotatedDocument,
    sentences: list[list[Offsets]],
    mentions: Sequence[Mention],
    report: Report,
) -> list[list[Offsets]]:
    """Sentences joined where a break falls inside a mention."""
    if not sentences:
        return []
    ends = [s[-1][1] for s in sentences]
    joined_into = list(range(len(sentences)))  # sentence -> the first one it is joined to
    for m in mentions:
        first = next((i for i, e in enumerate(ends) if m.start < e), None)
        last = next((i for i, e in enumerate(ends) if m.end <= e), len(ends) - 1)
        if first is None or first >= last:
            continue
        report(
            doc.file,
            m.line,
            "crosses_sentence",
            f"document {doc.id}: {doc.text[m.start : m.end]!r} ({m.label}) spans a sentence "
            "break; the sentences are read as one",
        )
        for k in range(first + 1, last + 1):
            joined_into[k] = joined_into[first]
    out: list[list[Offsets]] = []
    for k, sentence in enumerate(sentences):
        if k and joined_into[k] != k:
            out[-1] = out[-1] + sentence
        else:
            out.append(list(sentence))
    return out
