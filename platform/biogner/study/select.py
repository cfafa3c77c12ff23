"""Champion selection: rank a study's finished training runs by a metric (dev F1 by default),
compare the best two on the same sentences, and move the registry alias (`champion`) to the
winner's model: the cheaper format when the two are statistically tied.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from biogner.evaluate.metrics import Counts, paired_bootstrap, sentence_counts
from biogner.study.config import DEFAULT_ALIAS, DEFAULT_METRIC, DEFAULT_MODEL_NAME
from biogner.study.results import RunResult, collect_results, for_experiment
from biogner.study.tables import num
from biogner.tracking.config import TrackingConfig
from biogner.tracking.registry import get_alias_version, register_champion
from biogner.tracking.runs import client_for
from biogner.tracking.tags import KIND_TAG, TRAIN_KIND
from biogner.tracking.uris import alias_uri
from biogner.types import Span

# Below this probability that the best beats the runner-up (paired bootstrap over sentences),
# the two are tied and the one that writes fewer tokens per entity (cheaper to serve) wins.
TIE_PROBABILITY = 0.95
# ... when it writes at least this much fewer (relative): 43.47 against 43.52 tokens is no
# cheaper to serve, and the better-scoring run keeps its place.
CHEAPER_BY = 0.05


@dataclass(frozen=True)
class Comparison:
    """The best-ranked run against the runner-up on the same sentences."""

    p_better: float  # P(best's F1 > runner-up's F1), paired bootstrap over sentences
    sentences: int
    tie: bool  # p_better below TIE_PROBABILITY: the difference is within the noise
    cheaper_preferred: bool  # a tie, and the runner-up writes fewer tokens per entity


def predictions_counts(cfg: TrackingConfig, eval_run_id: str) -> dict[str, Counts] | None:
    """Per-sentence (tp, fp, fn) from an evaluation run's predictions.jsonl, or None."""
    client = client_for(cfg)
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


def paired_comparison(cfg: TrackingConfig, a: RunResult, b: RunResult) -> tuple[float, int] | None:
    """(P(a's F1 > b's F1), sentences) by paired bootstrap over the sentences both evaluations
    scored, or None when either has no per-sentence predictions (or they share none)."""
    if a.evaluation_run_id is None or b.evaluation_run_id is None:
        return None
    counts_a = predictions_counts(cfg, a.evaluation_run_id)
    counts_b = predictions_counts(cfg, b.evaluation_run_id)
    if not counts_a or not counts_b:
        return None
    shared = sorted(set(counts_a) & set(counts_b))
    if not shared:
        return None
    p = paired_bootstrap([counts_a[i] for i in shared], [counts_b[i] for i in shared])
    return p, len(shared)


def compare_best_two(
    cfg: TrackingConfig, ranking: list[RunResult]
) -> tuple[list[RunResult], Comparison | None]:
    """Paired bootstrap of the two best runs; on a tie the cheaper one goes first.

    Returns the (possibly reordered) ranking and the comparison, or None when fewer than two
    runs have per-sentence predictions to compare."""
    if len(ranking) < 2:
        return ranking, None
    best, runner = ranking[0], ranking[1]
    paired = paired_comparison(cfg, best, runner)
    if paired is None:
        return ranking, None
    p, sentences = paired
    tie = p < TIE_PROBABILITY
    cost = [
        r.tokens_per_entity if r.tokens_per_entity is not None else math.inf for r in (best, runner)
    ]
    cheaper = tie and cost[1] < cost[0] * (1 - CHEAPER_BY)
    if cheaper:
        ranking = [runner, best, *ranking[2:]]
    return ranking, Comparison(p, sentences, tie, cheaper)


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
    dry_run: bool = False  # ranked and compared only: nothing registered, nothing tagged

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
    dry_run: bool = False,
) -> Selection:
    """Rank the FINISHED training runs of `experiment` by `metric` and make the best champion.

    The best run's logged model becomes a new version of `model_name` (default `biogner`, the
    name the serve configs load) and `alias` moves to it (aliases, never stages); nothing is
    registered when the alias already points at a version from that run. The version is
    tagged with its format, metric, value, corpus and runner-up. `dry_run` ranks and
    compares the same way (a tie still goes to the cheaper format) and registers nothing:
    what it shows is what a real selection would do.
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
    current = get_alias_version(exp_cfg, name, alias)
    if dry_run:
        version = str(current.version) if current is not None else ""
        return Selection(
            experiment, metric, corpus, name, alias, ranking, version, False, comparison, True
        )
    if current is not None and current.run_id == best.run_id:
        version, registered = str(current.version), False
    else:
        try:
            version = register_champion(exp_cfg, best.run_id, name, alias)
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
    client = client_for(cfg)
    for key, value in tags.items():
        client.set_model_version_tag(selection.model_name, selection.version, key, value)


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
            num(r.value),
            f"{num(r.f1_low)}-{num(r.f1_high)}" if r.f1_low is not None else "-",
            str(r.sentences) if r.sentences is not None else "-",
            str(r.gold_mentions) if r.gold_mentions is not None else "-",
            num(r.precision),
            num(r.recall),
            num(r.parse_error_rate),
            num(r.tokens_per_entity, ".1f"),
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
            sentence += (
                " (a statistical tie; the runner-up is not cheaper by "
                f"{CHEAPER_BY:.0%} or more: the better score keeps its place)"
            )
    ref = alias_uri(selection.model_name, selection.alias)
    if selection.dry_run:
        now = f"version {selection.version}" if selection.version else "nothing yet"
        registry = f"dry run: nothing registered ({ref} points at {now})"
    elif selection.registered:
        registry = f"registered {selection.model_name} version {selection.version}; {ref}"
    else:
        registry = (
            f"{ref} already pointed at version {selection.version} of this run; nothing registered"
        )
    scope = f" on corpus {selection.corpus}" if selection.corpus else ""
    title = f"experiment {selection.experiment}: {len(selection.ranking)} runs{scope} by {metric}"
    return "\n".join([title, ranking_table(selection.ranking, metric), "", sentence, registry])


__all__ = [
    "Selection",
    "explain",
    "ranking_table",
    "select_champion",
]
