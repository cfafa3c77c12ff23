"""A card's files -> documents -> sentences per split, with every problem found on the way.

Why one function: training, conversion, evaluation, `formats check` and `corpora check` all
read a corpus through `read_corpus`, so they see the same sentences and the check reports
exactly what training would do with the files. Sentence ids are `<corpus>-<split>-<n>`.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from biogner.corpora.bioc_annotations import read_bioc
from biogner.corpora.brat import read_brat
from biogner.corpora.card import SPLITS, CorpusCard
from biogner.corpora.data_dir import resolve_data_dir
from biogner.corpora.documents import (
    AnnotatedDocument,
    Problems,
    Report,
    clean_mentions,
    files_of,
    valid_text,
)
from biogner.corpora.iob import ReadStats, read_tagged
from biogner.corpora.jsonl_spans import read_jsonl
from biogner.corpora.problems import Problem
from biogner.corpora.pubtator import read_pubtator
from biogner.corpora.segment import document_windows
from biogner.types import Sentence


@dataclass
class SplitRead:
    documents: list[AnnotatedDocument] = field(default_factory=list)
    sentences: list[Sentence] = field(default_factory=list)


@dataclass
class CorpusRead:
    card: CorpusCard
    splits: dict[str, SplitRead]
    problems: Problems
    types: tuple[str, ...]

    def blocking(self, accepted: Sequence[str] = ()) -> list[Problem]:
        return self.problems.blocking([*self.card.accept, *accepted])


Reader = Callable[[Path, Report], Iterator[AnnotatedDocument]]


def _reader(fmt: str) -> Reader:
    readers: dict[str, Reader] = {
        "brat": read_brat,
        "jsonl": read_jsonl,
        "pubtator": read_pubtator,
        "bioc-xml": lambda p, r: read_bioc(p, r, as_json=False),
        "bioc-json": lambda p, r: read_bioc(p, r, as_json=True),
    }
    return readers[fmt]


def _read_source(
    card: CorpusCard, path: Path, problems: Problems, stats: ReadStats | None
) -> list[AnnotatedDocument]:
    if not path.exists():
        hint = f"`biogner data download {card.name}`" if card.builtin else "the card's paths"
        raise FileNotFoundError(f"{path} not found (corpus {card.name}): check {hint}")
    if card.format in ("iob2", "conll"):
        return [
            doc
            for f in files_of(path)
            for doc in read_tagged(f, card.format == "conll", problems, f.stem, stats)
        ]
    return list(_reader(card.format)(path, problems))


def _sentences(
    card: CorpusCard, docs: list[AnnotatedDocument], problems: Problems
) -> list[list[Sentence]]:
    """Each document's sentences (ids re-assigned per split later)."""
    out = []
    for doc in docs:
        if doc.sentences is not None:
            out.append(_declared_types(card, doc, problems))
            continue
        mentions = clean_mentions(doc, card.entity_types, problems)
        windows = document_windows(doc, mentions, problems, f"{doc.id}#")
        out.append([w.sentence for w in windows])
    return out


def _declared_types(card: CorpusCard, doc: AnnotatedDocument, problems: Problems) -> list[Sentence]:
    """A tagged document's sentences without the spans of types the card does not declare."""
    sentences = doc.sentences or []
    if card.entity_types is None:
        return sentences
    declared = set(card.entity_types)
    kept = []
    for s in sentences:
        spans = [sp for sp in s.spans if sp.label in declared]
        for sp in s.spans:
            if sp.label not in declared:
                problems(
                    doc.file,
                    doc.line,
                    "undeclared_type",
                    f"sentence {s.id}: type {sp.label!r} is not in entity_types",
                )
        kept.append(dataclasses.replace(s, spans=tuple(spans)) if len(spans) < len(s.spans) else s)
    return kept


def _divide(card: CorpusCard, docs: list[AnnotatedDocument]) -> dict[str, list[int]]:
    """Document indices per split: a seeded shuffle cut at the card's fractions."""
    assert card.split is not None
    order = list(range(len(docs)))
    random.Random(card.split.seed).shuffle(order)
    n_train = round(card.split.train * len(order))
    n_dev = round(card.split.dev * len(order))
    return {
        "train": sorted(order[:n_train]),
        "dev": sorted(order[n_train : n_train + n_dev]),
        "test": sorted(order[n_train + n_dev :]),
    }


# the last reads of this process, by what they read and the files' sizes and times: one
# command asks a corpus several times (its types, the check, each split)
_READS: dict[tuple, tuple[tuple, CorpusRead]] = {}
_KEEP_READS = 4


def _files_signature(card: CorpusCard, root: Path | None) -> tuple:
    """(path, size, mtime) of every file the card names (missing ones with None)."""
    out: list[tuple[str, int | None, int | None]] = []
    for split in SPLITS:
        if getattr(card, split) is None:
            continue
        path = card.split_path(split, root)
        files = [path] if not path.is_dir() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            try:
                st = f.stat()
            except OSError:
                out.append((str(f), None, None))
                continue
            out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


def read_corpus(
    card: CorpusCard,
    data_dir: str | os.PathLike | None = None,
    splits: Sequence[str] | None = None,
    stats: ReadStats | None = None,
) -> CorpusRead:
    """Every requested split of a corpus (default: all it has), read and checked; a read
    of the same files in this process is reused (not when `stats` are to be counted)."""
    root = resolve_data_dir(data_dir) if card.builtin else None
    if stats is not None:
        return _read_corpus(card, root, splits, stats)
    key = (card.model_dump_json(), card.root, str(root), tuple(splits or ()))
    signature = _files_signature(card, root)
    cached = _READS.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    read = _read_corpus(card, root, splits, None)
    _READS[key] = (signature, read)
    while len(_READS) > _KEEP_READS:
        _READS.pop(next(iter(_READS)))
    return read


def _read_corpus(
    card: CorpusCard, root: Path | None, splits: Sequence[str] | None, stats: ReadStats | None
) -> CorpusRead:
    problems = Problems()
    wanted = list(splits or card.declared_splits)
    for split in wanted:
        if split not in card.declared_splits:
            raise KeyError(
                f"corpus {card.name} has no {split!r} split; it has {list(card.declared_splits)}"
            )
    docs_by_split: dict[str, list[AnnotatedDocument]] = {}
    if card.split is not None:
        source = next(s for s in SPLITS if getattr(card, s) is not None)
        docs = _read_source(card, card.split_path(source, root), problems, stats)
        for split, idx in _divide(card, docs).items():
            docs_by_split[split] = [docs[i] for i in idx]
    else:
        for split in wanted:
            docs_by_split[split] = _read_source(card, card.split_path(split, root), problems, stats)
    result: dict[str, SplitRead] = {}
    for split in wanted:
        docs = docs_by_split[split]
        _check_documents(split, docs, problems)
        sentences = [s for group in _sentences(card, docs, problems) for s in group]
        renamed = [
            dataclasses.replace(s, id=f"{card.name}-{split}-{n}") for n, s in enumerate(sentences)
        ]
        result[split] = SplitRead(docs, renamed)
    _check_across(docs_by_split, problems)
    types = card.entity_types or tuple(
        sorted({sp.label for r in result.values() for s in r.sentences for sp in s.spans})
    )
    for split, read in result.items():
        seen = {sp.label for s in read.sentences for sp in s.spans}
        for label in types:
            if label not in seen and read.sentences:
                problems(card.card_path or card.name, 0, "type_absent", f"{split}: {label}")
    return CorpusRead(card, result, problems, types)


def _check_documents(split: str, docs: list[AnnotatedDocument], problems: Problems) -> None:
    seen: dict[str, AnnotatedDocument] = {}
    for doc in docs:
        if not doc.text.strip():
            problems(doc.file, doc.line, "empty_document", f"{split}: document {doc.id}")
        if doc.is_sentence:
            continue
        first = seen.get(doc.id)
        if first is not None:
            problems(
                doc.file,
                doc.line,
                "duplicate_document",
                f"{split}: document {doc.id} also at {first.file}:{first.line}",
            )
        seen[doc.id] = doc
    docs[:] = [d for d in docs if d.text.strip() and valid_text(d, problems)]


def _check_across(docs_by_split: dict[str, list[AnnotatedDocument]], problems: Problems) -> None:
    """A document in two splits, by id or by text: evaluation would score what it trained on."""
    by_id: dict[str, tuple[str, str]] = {}
    by_text: dict[str, tuple[str, str]] = {}
    for split, docs in docs_by_split.items():
        for doc in docs:
            if doc.is_sentence:
                continue
            for key, table, what in ((doc.id, by_id, "id"), (doc.text, by_text, "text")):
                other = table.get(key)
                if other is not None and other[0] != split:
                    problems(
                        doc.file,
                        doc.line,
                        "document_in_two_splits",
                        f"document {doc.id} ({split}) has the {what} of {other[1]} ({other[0]})",
                    )
                    break
            by_id.setdefault(doc.id, (split, doc.id))
            by_text.setdefault(doc.text, (split, doc.id))
