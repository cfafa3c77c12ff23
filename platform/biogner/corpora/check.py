"""`biogner corpora check`: what a corpus holds per split and type, and every problem in it.

Why before training: an offset off by one, a type spelled two ways or a document in both
train and test costs hours of training to find afterwards. The same reading and the same
rule (a problem that loses or changes annotations blocks, unless its kind is accepted) decide
the check's exit code and whether `train` and `convert` take the corpus. What a format loses
of nested or crossing mentions, and the gate itself (`require_clean`), are in
`formats.coverage`: they need the formats, which the corpus readers know nothing of.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from biogner.corpora.load import CorpusRead
from biogner.corpora.problems import KINDS, Problem


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


def format_report(read: CorpusRead, blocked: Sequence[Problem], losses: Sequence[str]) -> str:
    """The check as text: a table of counts, then the problems grouped by kind, those in
    `blocked` (and the formats' `losses`, from `formats.coverage.blocking_for`) marked as errors."""
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
