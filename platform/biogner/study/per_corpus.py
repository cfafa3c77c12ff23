"""The per-corpus table of a model trained on several corpora: one row per corpus scored
(and per entity type where a corpus has several), beside published anchors when given.

Why apart from the format study's table (`report.markdown_report`, formats x corpora): a
multi-corpus model is one model, and its reader asks "how good on each corpus, against the
field", not "which format".
"""

from __future__ import annotations

from collections.abc import Sequence

from biogner.corpora import CORPORA
from biogner.study.anchors import Anchors
from biogner.study.results import LabelScore, RunResult, corpus_order
from biogner.study.tables import MISSING, num


def type_row_name(corpus: str, label: str) -> str:
    """How a corpus's single type is named in the field: the registry's one-type view of that
    corpus where there is one (BC5CDR + Chemical -> `BC5CDR-chem`), else `corpus/label`."""
    for name, entry in CORPORA.items():
        if name.startswith(f"{corpus}-") and entry.entity_types == (label,):
            return name
    return f"{corpus}/{label}"


def multi_corpus_runs(results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    """Per training run, its evaluations, for runs scored on more than one corpus."""
    by_run: dict[str, list[RunResult]] = {}
    for r in results:
        by_run.setdefault(r.run_id, []).append(r)
    return {
        run: sorted(rs, key=lambda r: corpus_order(r.corpus))
        for run, rs in by_run.items()
        if len({r.corpus for r in rs}) > 1
    }


def _ci(low: float | None, high: float | None) -> str:
    return MISSING if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def _anchor_cols(anchors: Anchors | None, row: str, f1: float) -> list[str]:
    if anchors is None:
        return []
    cols = []
    for source in anchors.sources:
        ref = anchors.get(source, row)
        cols.append(MISSING if ref is None else f"{ref:.3f} ({f1 - ref:+.3f})")
    return cols


def per_corpus_markdown(
    results: Sequence[RunResult], metric: str, anchors: Anchors | None = None
) -> str:
    """A table per multi-corpus run; empty when no run was scored on several corpora."""
    runs = multi_corpus_runs(results)
    if not runs:
        return ""
    sources = list(anchors.sources) if anchors else []
    header = ["corpus", "sentences", "gold", "F1", "95 % CI", "P", "R", "parse err", "sent/s"]
    header += [f"{s} (Δ)" for s in sources]
    lines = [
        "# Per corpus",
        "",
        f"Metric `{metric}` of each model trained on several corpora, on each corpus it was "
        "scored on (whole splits); a corpus with several entity types also per type (its "
        "interval resamples the same sentences). "
        + ("Anchors: published F1, and this model's difference to it." if sources else ""),
    ]
    for rs in runs.values():
        first = rs[0]
        table = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
        ]
        for r in rs:
            table.append(_row(r.corpus, r, None, anchors))
            if len(r.labels) > 1:
                for label in r.labels:
                    table.append(_row(type_row_name(r.corpus, label.label), r, label, anchors))
        macro = sum(r.value for r in rs) / len(rs)
        lines += [
            "",
            f"## `{first.run_name}` ({first.model}, `{first.format}`, run {first.run_id})",
            "",
            *table,
            "",
            f"Macro F1 over its {len(rs)} corpora: {macro:.4f}.",
        ]
    return "\n".join(lines) + "\n"


def _row(name: str, r: RunResult, label: LabelScore | None, anchors: Anchors | None) -> str:
    if label is None:
        f1, low, high = r.value, r.f1_low, r.f1_high
        cols = [name, num(r.sentences, "d"), num(r.gold_mentions, "d"), f"{f1:.4f}"]
        cols += [
            _ci(low, high),
            num(r.precision, ".3f"),
            num(r.recall, ".3f"),
            num(r.parse_error_rate, ".3f"),
        ]
        cols += [num(r.sentences_per_s, ".2f")]
    else:
        f1 = label.f1
        cols = [f"  {name}", MISSING, num(label.gold_mentions, "d"), f"{f1:.4f}"]
        cols += [
            _ci(label.f1_low, label.f1_high),
            num(label.precision, ".3f"),
            num(label.recall, ".3f"),
        ]
        cols += [MISSING, MISSING]
    return "| " + " | ".join(cols + _anchor_cols(anchors, name, f1)) + " |"
