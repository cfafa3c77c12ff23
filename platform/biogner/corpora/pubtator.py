"""PubTator: `id|t|title`, `id|a|abstract`, then `id<TAB>start<TAB>end<TAB>mention<TAB>type[...]`
lines, a blank line between documents (PubTator Central, BC5CDR, NCBI-disease's originals).

The document's text is its title, one space, its abstract: PubTator's own offsets, and the text
the extraction job reads from the same file. Relation lines (`id<TAB>CID<TAB>...`) are counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from biogner.corpora.documents import (
    AnnotatedDocument,
    Mention,
    Report,
    decoded_lines,
    per_file,
)

SUFFIXES = (".pubtator", ".txt", ".tsv")


def _documents(file: Path, report: Report) -> Iterator[AnnotatedDocument]:
    where = str(file)
    doc: AnnotatedDocument | None = None
    title: tuple[str, str, int] | None = None  # (id, title, line) until its abstract
    relations = 0
    for lineno, line in decoded_lines(file, report):
        if not line.strip():
            continue
        head = line.split("|", 2)
        if len(head) == 3 and head[1] in ("t", "a") and "\t" not in head[0]:
            doc_id, kind, body = head
            if kind == "t":
                if doc is not None:
                    yield doc
                    doc = None
                if title is not None:
                    report(where, title[2], "unreadable", f"{title[0]}: a title without abstract")
                title = (doc_id, body, lineno)
            elif title is None or title[0] != doc_id:
                report(where, lineno, "unreadable", f"{doc_id}: an abstract without its title")
            else:
                doc = AnnotatedDocument(doc_id, f"{title[1]} {body}", where, title[2])
                title = None
            continue
        columns = line.split("\t")
        if len(columns) >= 4 and not columns[1].isdigit():
            relations += 1
            continue
        if doc is None or len(columns) < 5 or columns[0] != doc.id:
            report(where, lineno, "unreadable", f"not a PubTator line here: {line!r:.100}")
            continue
        try:
            start, end = int(columns[1]), int(columns[2])
        except ValueError:
            report(where, lineno, "unreadable", f"offsets are not integers: {line!r:.100}")
            continue
        doc.mentions.append(Mention(start, end, columns[4], lineno, columns[3]))
    if doc is not None:
        yield doc
    if title is not None:
        report(where, title[2], "unreadable", f"{title[0]}: a title without its abstract")
    if relations:
        report(where, 0, "not_entity", f"{relations} relation line(s): not entities, not read")


read_pubtator = per_file(_documents, SUFFIXES)
