"""Champion selection: rank a study's finished training runs by a metric and move the registry
alias (`champion`) to the best one's model.

Why not in tracking.py: ranking speaks the study's language (formats, corpora, evaluation runs
nested under training runs, cost as generated tokens per entity); tracking only knows MLflow.
The same collection of results feeds `biogner.evaluate.report`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from biogner import tracking
from biogner.corpora.registry import SPLITS
from biogner.evaluate.metrics import Counts, paired_bootstrap, sentence_counts, split_prefix
from biogner.tracking import SUBSET_TAG, TrackingConfig
from biogner.types import Span

KIND_TAG = "biogner.kind"
TRAIN_KIND = "train"
EVALUATE_KIND = "evaluate"
DEFAULT_METRIC = "dev_f1"  # choose on dev; test stays a report
# Below this probability that the best beats the runner-up (paired bootstrap over sentences),
# the two are tied and the one that writes fewer tokens per entity (cheaper to serve) wins.
TIE_PROBABILITY = 0.95
DEFAULT_ALIAS = "champion"
DEFAULT_MODEL_NAME = "biogner"  # serve_configs/*.yaml load models:/biogner@champion
_PAGE = 1000


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
    train_wall_s: float | None
    source_run_id: str
    f1_low: float | None = None  # 95 % bootstrap interval of the metric's split F1
    f1_high: float | None = None
    sentences: int | None = None
    gold_mentions: int | None = None
    evaluation_run_id: str | None = None  # the evaluation whose predictions.jsonl scored it
    hallucination_rate: float | None = None  # share of predicted mentions not in the text

    @property
    def format(self) -> str:
        """Display name: the format, `mix(a+b)` for a multi-format run, `@f` if evaluated in f."""
        return format_label(self.formats, self.eval_format)

    @property
    def is_mix(self) -> bool:
        return len(self.formats) > 1


def format_label(formats: Iterable[str], eval_format: str | None = None) -> str:
    """`conv_term`, or `mix(conv_term+multi_triple)` for a model trained on several formats.

    A model evaluated in a format other than its first (the default evaluation format) gets
    `@<format>` appended, so the two evaluations never share a table row.
    """
    names = tuple(formats)
    if not names:
        return eval_format or "?"
    label = names[0] if len(names) == 1 else f"mix({'+'.join(names)})"
    if eval_format and eval_format != names[0]:
        label += f"@{eval_format}"
    return label


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
    client = tracking.client_for(cfg)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} in {cfg.uri}")
    return str(exp.experiment_id)


def _split_tag(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def _opt(metrics: dict[str, float], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def _wall_s(run: Run) -> float | None:
    if run.info.end_time is None or run.info.start_time is None:
        return None
    return (run.info.end_time - run.info.start_time) / 1000.0


def _result(train: Run, source: Run, metric: str, corpus: str, eval_format: str) -> RunResult:
    prefix, _ = metric_prefix(metric)
    m = source.data.metrics
    tags = train.data.tags
    formats = _split_tag(tags.get("format")) or (eval_format,)
    return RunResult(
        run_id=str(train.info.run_id),
        run_name=str(train.info.run_name or train.info.run_id),
        model=tags.get("model") or train.data.params.get("model.spec", "?"),
        formats=formats,
        eval_format=eval_format or formats[0],
        corpus=corpus,
        value=float(m[metric]),
        precision=_opt(m, f"{prefix}precision"),
        recall=_opt(m, f"{prefix}recall"),
        parse_error_rate=_opt(m, f"{prefix}parse_error_rate"),
        tokens_per_entity=_opt(m, f"{prefix}generated_tokens_per_entity"),
        sentences_per_s=_opt(m, f"{prefix}sentences_per_s"),
        train_wall_s=_wall_s(train),
        source_run_id=str(source.info.run_id),
        f1_low=_opt(m, f"{prefix}f1_low"),
        f1_high=_opt(m, f"{prefix}f1_high"),
        sentences=_int(m, f"{prefix}sentences"),
        gold_mentions=_int(m, f"{prefix}gold_mentions"),
        evaluation_run_id=None if source is train else str(source.info.run_id),
        hallucination_rate=_opt(m, f"{prefix}hallucination_rate"),
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
        if split is not None and tags.get("split", split) != split:
            continue
        out.setdefault(parent, {})[(tags.get("corpus", ""), tags.get("format", ""))] = run
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
    client = tracking.client_for(cfg)
    query = f"tags.`{KIND_TAG}` = '{TRAIN_KIND}' and attributes.status = 'FINISHED'"
    trains = _search(client, [exp_id], query)
    evals = _evaluations(client, metric)
    wanted = corpus.lower() if corpus else None
    results: list[RunResult] = []
    for run in trains:
        corpora = _split_tag(run.data.tags.get("corpora"))
        if wanted is not None and wanted not in {c.lower() for c in corpora}:
            continue
        formats = _split_tag(run.data.tags.get("format"))
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


@dataclass(frozen=True)
class Comparison:
    """The best-ranked run against the runner-up on the same sentences."""

    p_better: float  # P(best's F1 > runner-up's F1), paired bootstrap over sentences
    sentences: int
    tie: bool  # p_better below TIE_PROBABILITY: the difference is within the noise
    cheaper_preferred: bool  # a tie, and the runner-up writes fewer tokens per entity


def predictions_counts(cfg: TrackingConfig, eval_run_id: str) -> dict[str, Counts] | None:
    """Per-sentence (tp, fp, fn) from an evaluation run's predictions.jsonl, or None."""
    import json
    import tempfile
    from pathlib import Path

    client = tracking.client_for(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(eval_run_id, "predictions.jsonl", tmp)
        except Exception:  # a run scored without its predictions (older runs): no comparison
            return None
        counts: dict[str, Counts] = {}
        for line in Path(path).read_text().splitlines():
            record = json.loads(line)
            gold = [Span(int(a), int(b), str(c)) for a, b, c in record["gold"]]
            pred = [Span(int(a), int(b), str(c)) for a, b, c in record["pred"]]
            counts[str(record["id"])] = sentence_counts(gold, pred)
    return counts


def compare_best_two(
    cfg: TrackingConfig, ranking: list[RunResult]
) -> tuple[list[RunResult], Comparison | None]:
    """Paired bootstrap of the two best runs; on a tie the cheaper one goes first.

    Returns the (possibly reordered) ranking and the comparison, or None when fewer than two
    runs have per-sentence predictions to compare."""
    if len(ranking) < 2:
        return ranking, None
    best, runner = ranking[0], ranking[1]
    if best.evaluation_run_id is None or runner.evaluation_run_id is None:
        return ranking, None
    a = predictions_counts(cfg, best.evaluation_run_id)
    b = predictions_counts(cfg, runner.evaluation_run_id)
    if not a or not b:
        return ranking, None
    shared = sorted(set(a) & set(b))
    p = paired_bootstrap([a[i] for i in shared], [b[i] for i in shared])
    tie = p < TIE_PROBABILITY
    cost = [
        r.tokens_per_entity if r.tokens_per_entity is not None else math.inf for r in (best, runner)
    ]
    cheaper = tie and cost[1] < cost[0]
    if cheaper:
        ranking = [runner, best, *ranking[2:]]
    return ranking, Comparison(p, len(shared), tie, cheaper)


@dataclass
class Selection:
    """The outcome of `select_champion`: the ranking and the registry version it produced."""

    experiment: str
    metric: str
    corpus: str | None
    model_name: str
    alias: str
    ranking: list[RunResult]
    version: str
    registered: bool  # False when the alias already pointed at the champion run's model
    comparison: Comparison | None = None

    @property
    def champion(self) -> RunResult:
        return self.ranking[0]

    @property
    def runner_up(self) -> RunResult | None:
        return self.ranking[1] if len(self.ranking) > 1 else None

    @property
    def margin(self) -> float | None:
        runner = self.runner_up
        return None if runner is None else self.champion.value - runner.value


def select_champion(
    cfg: TrackingConfig,
    experiment: str,
    metric: str = DEFAULT_METRIC,
    corpus: str | None = None,
    model_name: str | None = None,
    alias: str = DEFAULT_ALIAS,
) -> Selection:
    """Rank the FINISHED training runs of `experiment` by `metric` and make the best champion.

    The best run's logged model becomes a new version of `model_name` (default `biogner`, the
    name the serve configs load) and `alias` moves to it (aliases, never stages); nothing is
    registered when the alias already points at a version from that run. The version is
    tagged with its format, metric, value, corpus and runner-up.
    """
    exp_cfg = for_experiment(cfg, experiment)
    ranking = collect_results(exp_cfg, experiment, metric, corpus)
    if not ranking:
        where = f" trained on corpus {corpus!r}" if corpus else ""
        raise ValueError(
            f"experiment {experiment!r} in {cfg.uri} has no FINISHED training run{where} "
            f"(tag {KIND_TAG}={TRAIN_KIND}) with metric {metric!r}; evaluate a model first "
            "(`biogner evaluate`)"
        )
    ranking, comparison = compare_best_two(exp_cfg, ranking)
    best = ranking[0]
    name = model_name or DEFAULT_MODEL_NAME
    current = tracking.get_alias_version(exp_cfg, name, alias)
    if current is not None and current.run_id == best.run_id:
        version, registered = str(current.version), False
    else:
        try:
            version = tracking.register_champion(exp_cfg, best.run_id, name, alias)
        except LookupError as e:
            raise LookupError(f"champion run {best.run_name} cannot be registered: {e}") from e
        registered = True
    selection = Selection(
        experiment, metric, corpus, name, alias, ranking, version, registered, comparison
    )
    _tag_version(exp_cfg, selection)
    return selection


def _tag_version(cfg: TrackingConfig, selection: Selection) -> None:
    best, runner = selection.champion, selection.runner_up
    tags = {
        "format": best.format,
        "model": best.model,
        "corpus": best.corpus,
        "metric": selection.metric,
        "value": f"{best.value:.6g}",
        "run_name": best.run_name,
        "runner_up": f"{runner.run_name} ({runner.run_id})" if runner else "none",
        "margin": f"{selection.margin:.6g}" if selection.margin is not None else "n/a",
    }
    if selection.comparison is not None:
        tags["p_better_than_runner_up"] = f"{selection.comparison.p_better:.4f}"
        tags["tie_broken_by_cost"] = str(selection.comparison.cheaper_preferred).lower()
    client = tracking.client_for(cfg)
    for key, value in tags.items():
        client.set_model_version_tag(selection.model_name, selection.version, key, value)


def _num(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def ranking_table(ranking: list[RunResult], metric: str) -> str:
    """The ranking as a fixed-width text table, best first."""
    header = ["#", "run", "model", "format", "corpus", metric, "95% CI", "sent", "gold", "P", "R"]
    header += ["parse err", "tok/ent"]
    rows = [
        [
            str(i),
            r.run_name,
            r.model,
            r.format,
            r.corpus,
            _num(r.value),
            f"{_num(r.f1_low)}-{_num(r.f1_high)}" if r.f1_low is not None else "-",
            str(r.sentences) if r.sentences is not None else "-",
            str(r.gold_mentions) if r.gold_mentions is not None else "-",
            _num(r.precision),
            _num(r.recall),
            _num(r.parse_error_rate),
            _num(r.tokens_per_entity, ".1f"),
        ]
        for i, r in enumerate(ranking, 1)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {1, 2, 3, 4}  # text columns; numbers right-aligned

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def explain(selection: Selection) -> str:
    """The ranking table and one sentence naming champion, runner-up and margin."""
    best, runner, metric = selection.champion, selection.runner_up, selection.metric
    sentence = (
        f"champion: run {best.run_name} (format {best.format}, model {best.model}, "
        f"corpus {best.corpus}, {metric}={best.value:.4f})"
    )
    if runner is not None and selection.margin is not None:
        sentence += (
            f", runner-up: run {runner.run_name} ({runner.format}, {runner.value:.4f}), "
            f"margin {selection.margin:.4f}"
        )
    else:
        sentence += ", no runner-up"
    comparison = selection.comparison
    if comparison is not None:
        other = selection.ranking[1]
        sentence += (
            f"; P(champion better than the next) = {comparison.p_better:.3f} by paired "
            f"bootstrap over {comparison.sentences} sentences"
            if not comparison.cheaper_preferred
            else f"; {best.format} and {other.format} are statistically tied (P({other.format} "
            f"better) = {comparison.p_better:.3f} < {TIE_PROBABILITY} over {comparison.sentences} "
            f"sentences): the cheaper one wins, {best.tokens_per_entity:.1f} vs "
            f"{other.tokens_per_entity:.1f} generated tokens per entity"
        )
        if comparison.tie and not comparison.cheaper_preferred:
            sentence += " (a statistical tie; the champion is also the cheaper or as cheap)"
    ref = f"models:/{selection.model_name}@{selection.alias}"
    if selection.registered:
        registry = f"registered {selection.model_name} version {selection.version}; {ref}"
    else:
        registry = (
            f"{ref} already pointed at version {selection.version} of this run; nothing registered"
        )
    scope = f" on corpus {selection.corpus}" if selection.corpus else ""
    title = f"experiment {selection.experiment}: {len(selection.ranking)} runs{scope} by {metric}"
    return "\n".join([title, ranking_table(selection.ranking, metric), "", sentence, registry])


# ---------------------------------------------------------------------------------------------
# CLI


def add_tracking_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or .biogner/mlflow.db)"
    )


def _cmd_select(args: argparse.Namespace) -> int:
    cfg = TrackingConfig(tracking_uri=args.tracking_uri, experiment=args.experiment)
    try:
        if args.dry_run:
            ranking = collect_results(cfg, args.experiment, args.metric, args.corpus)
            if not ranking:
                raise ValueError(f"no FINISHED training run with metric {args.metric!r}")
            print(ranking_table(ranking, args.metric))
            return 0
        selection = select_champion(
            cfg, args.experiment, args.metric, args.corpus, args.model_name, args.alias
        )
    except (ValueError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(explain(selection))
    return 0


def add_select_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`biogner select`: rank a study's runs and move the champion alias to the best."""
    p = subparsers.add_parser(
        "select", help="rank finished training runs by a metric; register the champion"
    )
    p.add_argument("--experiment", required=True, help="MLflow experiment of the study")
    p.add_argument("--metric", default=DEFAULT_METRIC)
    p.add_argument("--corpus", help="only runs trained on this corpus, scored on it")
    p.add_argument(
        "--model-name",
        default=DEFAULT_MODEL_NAME,
        help="registered model (default: %(default)s, the name serve_configs/*.yaml load)",
    )
    p.add_argument("--alias", default=DEFAULT_ALIAS)
    p.add_argument("--dry-run", action="store_true", help="print the ranking, register nothing")
    add_tracking_argument(p)
    p.set_defaults(func=_cmd_select)
    return p


__all__ = [
    "RunResult",
    "Selection",
    "add_select_command",
    "collect_results",
    "explain",
    "for_experiment",
    "format_label",
    "metric_prefix",
    "rank_key",
    "ranking_table",
    "select_champion",
]
