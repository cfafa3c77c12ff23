"""`biogner corpora check`: what a corpus holds per split and type, and every problem in it.

Why before training: an offset off by one, a type spelled two ways or a document in both
train and test costs hours of training to find afterwards. The same reading and the same
rule (a problem that loses or changes annotations blocks, unless its kind is accepted) decide
the check's exit code and whether `train` and `convert` take the corpus.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from biogner.corpora.card import CorpusCard
from biogner.corpora.load import CorpusRead, read_corpus
from biogner.corpora.problems import FORMAT_DEPENDENT, KINDS, CorpusProblemError, Problem


def summary(read: CorpusRead) -> dict[str, Any]:
    """`{"splits": {split: {documents, sentences, mentions: {type: n}}}, "problems": [...]}`."""
    splits: dict[str, Any] = {}
    for name, split in read.splits.items():
        counts = Counter(sp.label for s in split.sentences for sp in s.spans)
        splits[name] = {
            "documents": len(split.documents),
            "sentences": len(split.sentences),
            "mentions": {t: counts.get(t, 0) for t in read.types}
            | {t: n for t, n in sorted(counts.items()) if t not in read.types},
        }
    return {"splits": splits, "problems": [p.as_dict() for p in read.problems.items]}


def writing_losses(read: CorpusRead, formats: Sequence[str]) -> list[str]:
    """What each format loses of the corpus's nested and crossing mentions: its round trip
    (`formats check`) over the sentences that hold them, one line per losing format."""
    from biogner.evaluate.format_check import check_format
    from biogner.formats import get_format

    crowded = [
        s
        for split in read.splits.values()
        for s in split.sentences
        if any(a.end > b.start for a, b in zip(s.spans, s.spans[1:], strict=False))
    ]
    losses = []
    for name in formats:
        result = check_format(get_format(name), crowded, list(read.types))
        if result.failures:
            sent, reason = result.failures[0]
            losses.append(
                f"format {name} cannot write {len(result.failures)} sentence(s) of nested or "
                f"crossing mentions, e.g. {sent.id}: {reason}"
            )
    return losses


def blocking_for(
    read: CorpusRead, accept: Sequence[str] = (), formats: Sequence[str] = ()
) -> tuple[list[Problem], list[str]]:
    """The problems that block, and the formats' losses: nested or crossing mentions block
    only where a format named cannot write them (and their kind is not accepted)."""
    accepted = {*read.card.accept, *accept}
    blocking = read.blocking(accept)
    crowded = [
        p for p in read.problems.items if p.kind in FORMAT_DEPENDENT and p.kind not in accepted
    ]
    losses = writing_losses(read, formats) if crowded and formats else []
    return (blocking + crowded if losses else blocking), losses


def require_clean(
    card: CorpusCard,
    data_dir: str | os.PathLike | None = None,
    accept: Sequence[str] = (),
    formats: Sequence[str] = (),
) -> CorpusRead:
    """The check training and conversion run first: CorpusProblemError when a problem
    would lose or change annotations (in one of `formats`, for nested or crossing mentions)
    and neither the card nor `accept` accepts its kind."""
    read = read_corpus(card, data_dir)
    blocking, losses = blocking_for(read, accept, formats)
    if blocking:
        raise CorpusProblemError(card.name, blocking, losses=losses)
    return read


def format_report(read: CorpusRead, blocked: Sequence[Problem], losses: Sequence[str]) -> str:
    """The check as text: a table of counts, then the problems grouped by kind, those in
    `blocked` (and the formats' `losses`, from `blocking_for`) marked as errors."""
    data = summary(read)
    types = list(read.types)
    header = ["split", "documents", "sentences", *types]
    rows = [
        [
            name,
            str(s["documents"]),
            str(s["sentences"]),
            *(str(s["mentions"].get(t, 0)) for t in types),
        ]
        for name, s in data["splits"].items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"corpus {read.card.name} ({read.card.format}), types {types}"]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]
    ]
    blocking = set(map(id, blocked))
    by_kind = Counter(p.kind for p in read.problems.items)
    if not by_kind:
        lines.append("no problems")
    for kind, n in by_kind.most_common():
        lines.append(f"{kind}: {n} ({KINDS[kind][1]})")
        shown = [p for p in read.problems.items if p.kind == kind][:20]
        for p in shown:
            mark = "ERROR" if id(p) in blocking else "note "
            lines.append(f"  {mark} {p}")
        if n > len(shown):
            lines.append(f"  ... {n - len(shown)} more (--json lists them all)")
    lines += [f"  ERROR {loss}" for loss in losses]
    n_block = len(blocking)
    lines.append(
        f"{n_block} problem(s) would lose or change annotations"
        if n_block
        else "ok: nothing is lost or changed"
    )
    return "\n".join(lines)
