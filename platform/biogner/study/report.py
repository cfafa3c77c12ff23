"""Study report: which format extracts best, on which corpus, at what cost.

Reads the study's MLflow runs (through `biogner.study.results.collect_results`) and writes, per
base model, a format x corpus F1 heatmap and an F1-versus-cost scatter (`study.figures`), the
paper-style Markdown table (F1 with its interval, parse-error rate, tokens/entity, the format's
ceiling F1, training time), the per-corpus table of a model trained on several corpora
(`study.per_corpus`, beside published anchors when given), multi vs conv per writing
(`study.turns`), each multi-format model against its formats trained alone (`study.mixes`)
and, when the runs were also decoded free, the constrained-vs-free table -- then logs all of
it to a `report` run of the experiment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from biogner.corpora import get_corpus, load_split
from biogner.evaluate.config import split_prefix
from biogner.evaluate.format_check import check_format
from biogner.formats import FORMATS
from biogner.study.anchors import Anchors
from biogner.study.config import REPORT_METRIC
from biogner.study.figures import heatmap_png, scatter_png
from biogner.study.mixes import mix_markdown
from biogner.study.per_corpus import per_corpus_markdown
from biogner.study.results import (
    Cells,
    RunResult,
    best_cells,
    collect_results,
    corpus_order,
    for_experiment,
    metric_prefix,
    row_order,
)
from biogner.study.select import paired_comparison
from biogner.study.tables import MISSING, NOT_AVAILABLE, interval, num, pair
from biogner.study.turns import turns_markdown
from biogner.tracking.config import TrackingConfig
from biogner.tracking.runs import client_for, tracked_run
from biogner.tracking.tags import KIND_TAG, REPORT_KIND

MARKDOWN_FILE = "report.md"
ARTIFACT_DIR = "report"
_FILE_BAD_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class ReportPaths:
    """What `build_report` wrote (per base model for the figures) and the MLflow run."""

    markdown: Path
    heatmaps: dict[str, Path] = field(default_factory=dict)
    scatters: dict[str, Path] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def files(self) -> list[Path]:
        return [self.markdown, *self.heatmaps.values(), *self.scatters.values()]


class CeilingCache:
    """Ceiling F1 of (format, corpus) on a split, computed once; None when not computable."""

    def __init__(
        self, split: str, data_dir: str | Path | None, refs: dict[str, str] | None = None
    ) -> None:
        self.split = split
        self.data_dir = data_dir
        self.refs = refs or {}  # corpus name -> card path, for a user's unregistered cards
        self._values: dict[tuple[str, str], float | None] = {}

    def __call__(self, fmt: str, corpus: str) -> float | None:
        key = (fmt, corpus)
        if key not in self._values:
            self._values[key] = self._compute(fmt, corpus)
        return self._values[key]

    def _compute(self, fmt: str, corpus: str) -> float | None:
        if fmt not in FORMATS:
            return None
        try:
            entry = get_corpus(self.refs.get(corpus, corpus))
            sentences = load_split(entry, self.split, self.data_dir)
        except (KeyError, ValueError, FileNotFoundError):
            return None
        return check_format(FORMATS[fmt], sentences, list(entry.types)).ceiling_f1


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_AVAILABLE
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def markdown_report(
    experiment: str,
    metric: str,
    cells_by_model: dict[str, Cells],
    ceiling: CeilingCache,
) -> str:
    """The paper-style table per model: rows = formats, five columns per corpus."""
    lines = [
        f"# Study report: {experiment}",
        "",
        f"Metric `{metric}` (strict entity-level micro F1, with its 95 % bootstrap interval over "
        "sentences). Per corpus: F1, parse-error rate, "
        "generated tokens per gold entity, *ceiling* F1 (a perfect model writing that format "
        f"on the {ceiling.split} split), training time (the loop's own seconds where the run "
        "logged them, else its wall time). Best F1 per corpus in bold; "
        f"`{MISSING}` = no finished run, `{NOT_AVAILABLE}` = not computable.",
    ]
    for model in sorted(cells_by_model):
        cells = cells_by_model[model]
        rows = {r.format: r for r in cells.values()}  # a representative per row label
        row_labels = sorted(rows, key=lambda label: row_order(rows[label]))
        corpora = sorted({c for _, c in cells}, key=corpus_order)
        best = {c: max(r.value for (_, rc), r in cells.items() if rc == c) for c in corpora}
        header = ["format"]
        for c in corpora:
            header += [f"{c} F1", f"{c} parse err", f"{c} tok/ent", f"{c} ceiling", f"{c} train"]
        table = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
        ]
        for label in row_labels:
            cols = [f"`{label}`"]
            for c in corpora:
                r = cells.get((label, c))
                ceil = num(ceiling(rows[label].eval_format, c), ".4f", NOT_AVAILABLE)
                if r is None:
                    cols += [MISSING, MISSING, MISSING, ceil, MISSING]
                    continue
                f1 = f"{r.value:.4f}"
                cols += [
                    (f"**{f1}**" if r.value == best[c] else f1) + interval(r),
                    num(r.parse_error_rate, ".4f", NOT_AVAILABLE),
                    num(r.tokens_per_entity, ".1f", NOT_AVAILABLE),
                    ceil,
                    fmt_duration(r.train_s),
                ]
            table.append("| " + " | ".join(cols) + " |")
        lines += ["", f"## Model `{model}`", "", *table, "", "Runs:", ""]
        for (label, c), r in sorted(
            cells.items(), key=lambda kv: (row_order(kv[1]), corpus_order(kv[0][1]))
        ):
            sentences = num(r.sentences, "d", NOT_AVAILABLE)
            counts = f"{sentences} sentences, {num(r.gold_mentions, 'd', NOT_AVAILABLE)} gold"
            lines.append(f"- `{label}` on {c} ({counts}): run `{r.run_name}` ({r.run_id})")
    return "\n".join(lines) + "\n"


def free_metric(metric: str) -> str | None:
    """`test_free_f1` for `test_f1`: the same score of the same checkpoint decoded free
    (None when `metric` already is a free one or names no split)."""
    prefix, split = metric_prefix(metric)
    if split is None or prefix == split_prefix(split, constrained=False):
        return None
    return split_prefix(split, constrained=False) + metric[len(prefix) :]


def decoding_markdown(metric: str, constrained: dict[str, Cells], free: Sequence[RunResult]) -> str:
    """Constrained vs free decoding of the same checkpoints, one table per model and corpus.

    Why: the constraint guarantees valid answers made only of the sentence's spans; what that
    costs (generation time) and what it changes (F1, precision, recall) is read here. Each
    row pairs a cell's reported run with that same run's free evaluation; the cost ratio is
    the time per sentence constrained / free, measured in the same sweep."""
    by_run = {(r.run_id, r.corpus, r.eval_format): r for r in free}
    lines = [
        "## Constrained vs free decoding",
        "",
        f"`{metric}` of each checkpoint decoded under its writing's grammar (the default, what "
        "the endpoint serves) and free; parse err = share of sentences with a parse problem, "
        "halluc. = share of predicted mentions not in the sentence; cost = time per sentence "
        "constrained / free.",
    ]
    for model in sorted(constrained):
        both = {}
        for key, r in constrained[model].items():
            f = by_run.get((r.run_id, r.corpus, r.eval_format))
            if f is not None:
                both[key] = (r, f)
        for corpus in sorted({c for _, c in both}, key=corpus_order):
            rows = sorted(
                ((label, pair) for (label, c), pair in both.items() if c == corpus),
                key=lambda kv: row_order(kv[1][0]),
            )
            lines += [
                "",
                f"### `{model}` on {corpus}",
                "",
                "| format | F1 constrained | F1 free | P c / f | R c / f | parse err c / f "
                "| halluc. c / f | overruled c | tok/entity c / f | sent/s c / f | cost |",
                "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for label, (c, f) in rows:
                cost = (
                    f"{f.sentences_per_s / c.sentences_per_s:.2f}x"
                    if c.sentences_per_s and f.sentences_per_s
                    else NOT_AVAILABLE
                )
                lines.append(
                    f"| `{label}` | {c.value:.4f}{interval(c)} | {f.value:.4f}{interval(f)} "
                    f"| {pair(c.precision, f.precision, '.3f')} "
                    f"| {pair(c.recall, f.recall, '.3f')} "
                    f"| {pair(c.parse_error_rate, f.parse_error_rate, '.3f')} "
                    f"| {pair(c.hallucination_rate, f.hallucination_rate, '.3f')} "
                    f"| {num(c.overruled_rate, '.3f', NOT_AVAILABLE)} "
                    f"| {pair(c.tokens_per_entity, f.tokens_per_entity, '.1f')} "
                    f"| {pair(c.sentences_per_s, f.sentences_per_s, '.2f')} | {cost} |"
                )
    return "\n".join(lines) + "\n"


def _safe(name: str) -> str:
    return _FILE_BAD_CHARS.sub("_", name) or "model"


def build_report(
    cfg: TrackingConfig,
    experiment: str,
    out: Path,
    metric: str = REPORT_METRIC,
    data_dir: str | Path | None = None,
    log_run: bool = True,
    anchors: Anchors | None = None,
    corpora: Sequence[str] = (),
) -> ReportPaths:
    """Write the study report of `experiment` under `out` and log it to a `report` run.

    Ceiling F1 is computed on the metric's split (test for `test_f1`) of each corpus found
    under `data_dir` (default: the usual data dir), or named by its card in `corpora`; `n/a`
    when the files are missing.
    """
    cards = [get_corpus(ref) for ref in corpora]
    results = collect_results(cfg, experiment, metric, per_evaluation=True)
    if not results:
        raise ValueError(
            f"experiment {experiment!r} in {cfg.uri} has no FINISHED training run with "
            f"metric {metric!r}: nothing to report"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _, split = metric_prefix(metric)
    cells_by_model = best_cells(results)
    text = markdown_report(
        experiment,
        metric,
        cells_by_model,
        CeilingCache(split or "test", data_dir, {c.name: c.ref for c in cards}),
    )
    per_corpus = per_corpus_markdown(results, metric, anchors)
    if per_corpus:
        text += "\n" + per_corpus
    free = free_metric(metric)
    free_results = collect_results(cfg, experiment, free, per_evaluation=True) if free else []
    if free and free_results:
        text += "\n" + decoding_markdown(metric, cells_by_model, free_results)
    turns = turns_markdown(metric, cells_by_model, lambda a, b: paired_comparison(cfg, a, b))
    if turns:
        text += "\n" + turns
    if any(r.is_mix for cells in cells_by_model.values() for r in cells.values()):
        text += "\n" + mix_markdown(
            metric, cells_by_model, lambda a, b: paired_comparison(cfg, a, b)
        )
    paths = ReportPaths(markdown=out / MARKDOWN_FILE)
    paths.markdown.write_text(text)
    for model, cells in cells_by_model.items():
        stem = _safe(model)
        paths.heatmaps[model] = heatmap_png(cells, model, metric, out / f"heatmap_{stem}.png")
        paths.scatters[model] = scatter_png(cells, model, metric, out / f"cost_{stem}.png")
    if log_run:
        paths.run_id = _log_report(cfg, experiment, metric, paths)
    return paths


def _log_report(cfg: TrackingConfig, experiment: str, metric: str, paths: ReportPaths) -> str:
    exp_cfg = for_experiment(cfg, experiment)
    tags = {KIND_TAG: REPORT_KIND, "metric": metric}
    with tracked_run(exp_cfg, f"report-{metric}", tags=tags) as run_id:
        client = client_for(exp_cfg)
        for path in paths.files:
            client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    return run_id


__all__ = [
    "ReportPaths",
    "best_cells",
    "build_report",
    "decoding_markdown",
    "free_metric",
    "heatmap_png",
    "markdown_report",
    "scatter_png",
]
