"""A study's results as MLflow holds them: finished training runs, their nested evaluations,
one `RunResult` per scored (run, corpus, evaluated format), ranked best first.

Why apart from MLflow plumbing (`biogner.tracking`): ranking speaks the study's language
(formats, corpora, evaluations nested under training runs, cost as generated tokens per
entity). `select` and `report` both read results through here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from biogner.corpora import CORPORA
from biogner.corpora.registry import SPLITS
from biogner.evaluate.config import split_prefix
from biogner.formats import FORMATS
from biogner.study.config import DEFAULT_METRIC, format_label
from biogner.tracking.config import TrackingConfig
from biogner.tracking.runs import client_for
from biogner.tracking.tags import (
    CORPORA_TAG,
    CORPUS_TAG,
    EVALUATE_KIND,
    FORMAT_TAG,
    KIND_TAG,
    MLFLOW_PARENT_RUN_ID,
    MODEL_TAG,
    SPLIT_TAG,
    SUBSET_TAG,
    TRAIN_KIND,
)
from biogner.train.config import TRAIN_SECONDS

_PAGE = 1000


@dataclass(frozen=True)
class LabelScore:
    """One entity type's score within an evaluation (BC5CDR's Chemical, JNLPBA's protein)."""

    label: str
    f1: float
    precision: float | None
    recall: float | None
    f1_low: float | None
    f1_high: float | None
    gold_mentions: int | None


@dataclass(frozen=True)
class RunResult:
    """One scored (training run, corpus, evaluated format): a row of a ranking or a report.

    `source_run_id` is the run the metrics were read from: a nested evaluation run, or the
    training run itself (evaluation logs its metrics onto its parent too).
    """

    run_id: str
    run_name: str
    model: str
    formats: tuple[str, ...]
    eval_format: str
    corpus: str
    value: float
    precision: float | None
    recall: float | None
    parse_error_rate: float | None
    tokens_per_entity: float | None
    sentences_per_s: float | None
    train_s: float | None  # training time (`_train_s`)
    source_run_id: str
    f1_low: float | None = None  # 95 % bootstrap interval of the metric's split F1
    f1_high: float | None = None
    sentences: int | None = None
    gold_mentions: int | None = None
    evaluation_run_id: str | None = None  # the evaluation whose predictions.jsonl scored it
    hallucination_rate: float | None = None  # share of predicted mentions not in the text
    overruled_rate: float | None = None  # share of written items the grammar had to steer
    labels: tuple[LabelScore, ...] = ()  # per entity type, where the evaluation logged them

    @property
    def format(self) -> str:
        """Display name: the format, `mix(a+b)` for a multi-format run, `@f` if evaluated in f."""
        return format_label(self.formats, self.eval_format)

    @property
    def is_mix(self) -> bool:
        return len(self.formats) > 1


def metric_prefix(metric: str) -> tuple[str, str | None]:
    """(`test_`, `test`) for `test_f1`, (`test_free_`, `test`) for `test_free_f1`: companion
    metrics share the prefix, evaluation runs the split."""
    head, sep, rest = metric.partition("_")
    if sep and head in SPLITS:
        free = split_prefix(head, constrained=False)
        return (free if metric.startswith(free) else split_prefix(head)), head
    return "", None


def rank_key(result: RunResult) -> tuple[float, float, str, str]:
    """Best first: higher metric, then fewer generated tokens per entity (cheaper), then name.

    Deterministic whatever order MLflow returns runs in.
    """
    cost = result.tokens_per_entity if result.tokens_per_entity is not None else math.inf
    return (-result.value, cost, result.run_name, result.run_id)


def for_experiment(cfg: TrackingConfig, experiment: str) -> TrackingConfig:
    """cfg addressing `experiment` (runs are created in cfg.experiment)."""
    return (
        cfg if cfg.experiment == experiment else cfg.model_copy(update={"experiment": experiment})
    )


def _search(client: MlflowClient, experiment_ids: list[str], query: str) -> list[Run]:
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=query, max_results=_PAGE, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiment_id(cfg: TrackingConfig, experiment: str) -> str:
    client = client_for(cfg)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} in {cfg.uri}")
    return str(exp.experiment_id)


def _split_tag(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def _opt(metrics: dict[str, float], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def _train_s(run: Run) -> float | None:
    """Training time: the loop's own seconds (`train_seconds`, summed over resumes) where the
    run logged them, else the run's wall time (which also counts pauses and Ray's start)."""
    trained = run.data.metrics.get(TRAIN_SECONDS)
    if trained is not None:
        return float(trained)
    if run.info.end_time is None or run.info.start_time is None:
        return None
    return (run.info.end_time - run.info.start_time) / 1000.0


def _result(train: Run, source: Run, metric: str, corpus: str, eval_format: str) -> RunResult:
    prefix, _ = metric_prefix(metric)
    m = source.data.metrics
    tags = train.data.tags
    formats = _split_tag(tags.get(FORMAT_TAG)) or (eval_format,)
    return RunResult(
        run_id=str(train.info.run_id),
        run_name=str(train.info.run_name or train.info.run_id),
        model=tags.get(MODEL_TAG) or train.data.params.get("model.spec", "?"),
        formats=formats,
        eval_format=eval_format or formats[0],
        corpus=corpus,
        value=float(m[metric]),
        precision=_opt(m, f"{prefix}precision"),
        recall=_opt(m, f"{prefix}recall"),
        parse_error_rate=_opt(m, f"{prefix}parse_error_rate"),
        tokens_per_entity=_opt(m, f"{prefix}generated_tokens_per_entity"),
        sentences_per_s=_opt(m, f"{prefix}sentences_per_s"),
        train_s=_train_s(train),
        source_run_id=str(source.info.run_id),
        f1_low=_opt(m, f"{prefix}f1_low"),
        f1_high=_opt(m, f"{prefix}f1_high"),
        sentences=_int(m, f"{prefix}sentences"),
        gold_mentions=_int(m, f"{prefix}gold_mentions"),
        evaluation_run_id=None if source is train else str(source.info.run_id),
        hallucination_rate=_opt(m, f"{prefix}hallucination_rate"),
        overruled_rate=_opt(m, f"{prefix}overruled_rate"),
        labels=_labels(m, prefix),
    )


def _labels(metrics: dict[str, float], prefix: str) -> tuple[LabelScore, ...]:
    """Per-type scores: every label with a `<prefix>gold_mentions_<label>` metric."""
    head = f"{prefix}gold_mentions_"
    labels = sorted(k[len(head) :] for k in metrics if k.startswith(head))
    return tuple(
        LabelScore(
            label=label,
            f1=float(metrics.get(f"{prefix}f1_{label}", 0.0)),
            precision=_opt(metrics, f"{prefix}precision_{label}"),
            recall=_opt(metrics, f"{prefix}recall_{label}"),
            f1_low=_opt(metrics, f"{prefix}f1_low_{label}"),
            f1_high=_opt(metrics, f"{prefix}f1_high_{label}"),
            gold_mentions=_int(metrics, f"{prefix}gold_mentions_{label}"),
        )
        for label in labels
    )


def _int(metrics: dict[str, float], key: str) -> int | None:
    value = metrics.get(key)
    return None if value is None else int(value)


def _evaluations(client: MlflowClient, metric: str) -> dict[str, dict[tuple[str, str], Run]]:
    """Finished evaluation runs with `metric`, by parent run, newest per (corpus, format).

    All experiments are searched: an evaluation is logged to its own config's experiment,
    which need not be the one its training run (its parent) lives in.
    """
    _, split = metric_prefix(metric)
    experiment_ids = [str(e.experiment_id) for e in client.search_experiments()]
    query = f"tags.`{KIND_TAG}` = '{EVALUATE_KIND}' and attributes.status = 'FINISHED'"
    runs = sorted(_search(client, experiment_ids, query), key=lambda r: r.info.start_time or 0)
    out: dict[str, dict[tuple[str, str], Run]] = {}
    for run in runs:  # oldest first: a newer evaluation of the same cell replaces an older one
        tags = run.data.tags
        parent = tags.get(MLFLOW_PARENT_RUN_ID)
        if not parent or metric not in run.data.metrics:
            continue
        if tags.get(SUBSET_TAG) == "true":  # first-N sentences: shown, never selected
            continue
        if split is not None and tags.get(SPLIT_TAG, split) != split:
            continue
        out.setdefault(parent, {})[(tags.get(CORPUS_TAG, ""), tags.get(FORMAT_TAG, ""))] = run
    return out


def collect_results(
    cfg: TrackingConfig,
    experiment: str,
    metric: str = DEFAULT_METRIC,
    corpus: str | None = None,
    per_evaluation: bool = False,
) -> list[RunResult]:
    """Scored FINISHED training runs of `experiment`, best first (see `rank_key`).

    Default: one result per training run, from the metrics on the run itself. With `corpus`,
    only runs trained on that corpus (tag `corpora`), scored by their newest evaluation on it
    when one exists (a run trained on several corpora carries only its last evaluation's
    score on itself). With `per_evaluation` (reports): one result per nested evaluation
    (corpus x evaluated format), falling back to the run's own metrics when it has none.
    Failed, killed and running runs, and runs without the metric, are left out.
    """
    exp_id = _experiment_id(cfg, experiment)
    client = client_for(cfg)
    query = f"tags.`{KIND_TAG}` = '{TRAIN_KIND}' and attributes.status = 'FINISHED'"
    trains = _search(client, [exp_id], query)
    evals = _evaluations(client, metric)
    wanted = corpus.lower() if corpus else None
    results: list[RunResult] = []
    for run in trains:
        corpora = _split_tag(run.data.tags.get(CORPORA_TAG))
        if wanted is not None and wanted not in {c.lower() for c in corpora}:
            continue
        formats = _split_tag(run.data.tags.get(FORMAT_TAG))
        first = formats[0] if formats else ""
        children = evals.get(str(run.info.run_id), {})
        if wanted is not None:
            children = {k: v for k, v in children.items() if k[0].lower() == wanted}
        if per_evaluation and children:
            for (c, f), ev in sorted(children.items()):
                results.append(_result(run, ev, metric, c, f or first))
            continue
        if wanted is not None and children:
            # Prefer the evaluation in the model's own (first) format, else the newest.
            key = next((k for k in children if k[1] == first), None)
            if key is None:
                key = max(children, key=lambda k: children[k].info.start_time or 0)
            results.append(_result(run, children[key], metric, key[0], key[1] or first))
            continue
        if metric in run.data.metrics:
            label = next((c for c in corpora if c.lower() == wanted), "") if wanted else ""
            result = _result(run, run, metric, label or "+".join(corpora), first)
            own = [ev for (c, f), ev in children.items() if f == first and len(corpora) == 1]
            if own:  # its per-sentence predictions, for the paired comparison
                result = replace(result, evaluation_run_id=str(own[-1].info.run_id))
            results.append(result)
    results.sort(key=rank_key)
    return results


# model -> (row label, corpus) -> the best result of that cell
Cells = dict[tuple[str, str], RunResult]
_FORMAT_ORDER = {name: i for i, name in enumerate(FORMATS)}
_CORPUS_ORDER = {name: i for i, name in enumerate(CORPORA)}


def format_index(name: str) -> int:
    """A format's place in `FORMATS` (the tables' row order); unknown names go last."""
    return _FORMAT_ORDER.get(name, len(_FORMAT_ORDER))


def row_order(result: RunResult) -> tuple[int, str, int, str]:
    """Single formats in `FORMATS` order, then unknown names, then the mixes (each mix's
    evaluations in `FORMATS` order too)."""
    if result.is_mix:
        return (2, format_label(result.formats), format_index(result.eval_format), result.format)
    index = _FORMAT_ORDER.get(result.formats[0])
    return (0 if index is not None else 1, "", index or 0, result.format)


def corpus_order(corpus: str) -> tuple[int, str]:
    index = _CORPUS_ORDER.get(corpus)
    return (index if index is not None else len(_CORPUS_ORDER), corpus)


def best_cells(results: Sequence[RunResult]) -> dict[str, Cells]:
    """Per model, the best result of each (row, corpus) cell (repeats keep the best)."""
    out: dict[str, Cells] = {}
    for r in sorted(results, key=rank_key):
        out.setdefault(r.model, {}).setdefault((r.format, r.corpus), r)
    return out
