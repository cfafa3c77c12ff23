"""Format x model x corpus sweeps: each cell trained then evaluated, resumable, failure-isolated.

A laptop runs the cells in sequence; on a cluster (`parallel: true`) each cell is a Ray task,
and the cluster runs as many at once as its resources allow. A cell whose training run is
FINISHED with the evaluation metric is skipped, so rerunning a sweep finishes what is left.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from biogner.config import deep_merge, load_config, parse_overrides
from biogner.evaluate.config import EvalConfig, split_prefix
from biogner.evaluate.runner import run_evaluation
from biogner.runtime import init_ray
from biogner.study.config import Cell, SweepConfig
from biogner.tracking.models import run_model_uri
from biogner.tracking.runs import client_for, flatten_params, runs_named, setup
from biogner.tracking.tags import (
    EVALUATE_KIND,
    FORMAT_TAG,
    KIND_TAG,
    MLFLOW_PARENT_RUN_ID,
    SUBSET_TAG,
)
from biogner.train.config import TrainConfig
from biogner.train.driver import run_training
from biogner.train.rerun import changed_params


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # FINISHED, SKIPPED (done before), FAILED
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


def cell_train_config(cfg: SweepConfig, cell: Cell):
    """The resolved training config of one cell (base YAML + sweep overrides + cell axes)."""
    cell_overrides = deep_merge(
        parse_overrides(cfg.overrides),
        {
            "run_name": cell.run_name(cfg.experiment),
            "model": {"spec": cell.model},
            "data": {"formats": list(cell.formats), "corpora": [cell.corpus]},
            "tracking": cfg.tracking.model_dump(mode="json") | {"experiment": cfg.experiment},
        },
    )
    base = load_config(TrainConfig, cfg.base)
    merged = deep_merge(base.model_dump(mode="json"), cell_overrides)
    return TrainConfig.model_validate(merged)


def finished_run(
    cfg: SweepConfig, run_name: str
) -> tuple[str | None, dict[str, float], dict[str, str]]:
    """(run id, metrics, params) of a FINISHED training run of this name, if any."""
    store = cfg.tracking.model_copy(update={"experiment": cfg.experiment})
    for run in runs_named(store, run_name):  # newest first
        if run.info.status == "FINISHED":
            return run.info.run_id, dict(run.data.metrics), dict(run.data.params)
    return None, {}, {}


def finished_evaluations(cfg: SweepConfig, run_id: str) -> dict[str, dict[str, float]]:
    """Metrics of the FINISHED whole-split evaluations nested under a training run, by the
    format evaluated (all its splits and decodings together; a newer run wins a metric)."""
    store = cfg.tracking.model_copy(update={"experiment": cfg.experiment})
    query = (
        f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}' and tags.`{KIND_TAG}` = '{EVALUATE_KIND}'"
        " and attributes.status = 'FINISHED'"
    )
    runs = client_for(store).search_runs(
        [setup(store)], query, order_by=["attributes.start_time ASC"], max_results=1000
    )
    out: dict[str, dict[str, float]] = {}
    for run in runs:
        if run.data.tags.get(SUBSET_TAG) == "true":  # first-N sentences: not the split's score
            continue
        out.setdefault(run.data.tags.get(FORMAT_TAG, ""), {}).update(run.data.metrics)
    return out


def run_cell(cfg: SweepConfig, cell: Cell) -> CellOutcome:
    """Train (unless done) and evaluate (unless done) one cell; never raises."""
    start = time.perf_counter()
    name = cell.run_name(cfg.experiment)
    try:
        train_cfg = cell_train_config(cfg, cell)
        run_id, metrics, params = finished_run(cfg, name)
        now = flatten_params(train_cfg.model_dump(mode="json")) if run_id else {}
        changed = changed_params(params, now)
        if changed:  # reusing it would report results of a budget the config no longer says
            raise ValueError(
                f"run {name!r} ({run_id}) FINISHED with other values of {', '.join(changed)}; "
                "use a new experiment name (or delete that run) to train with this config"
            )
        ev = cfg.evaluate
        free = ev.generation.model_copy(update={"constrained": False})
        decodings = [(split, ev.generation) for split in ev.splits]
        decodings += [(split, free) for split in ev.free_splits]
        # the metric-name prefix of each evaluation (`test_`, `test_free_`)
        prefixes = [split_prefix(split, g.constrained) for split, g in decodings]
        first = cell.formats[0]
        # What a stopped sweep already evaluated, per format (a mix is evaluated in each of its
        # formats; only the first one's scores are copied onto the training run).
        done = finished_evaluations(cfg, run_id) if run_id and ev.limit is None else {}
        if run_id and ev.limit is None:
            done[first] = metrics | done.get(first, {})
        if all(f"{p}f1" in done.get(fmt, {}) for p in prefixes for fmt in cell.formats):
            return CellOutcome(cell, "SKIPPED", run_id, metrics)
        if run_id is None:
            run_id = run_training(train_cfg).run_id
        metrics = {}
        for (split, generation), prefix in zip(decodings, prefixes, strict=True):
            for fmt in cell.formats:
                kept = done.get(fmt, {})
                if f"{prefix}f1" in kept:
                    if fmt == first:
                        metrics.update({k: v for k, v in kept.items() if k.startswith(prefix)})
                    continue
                result = run_evaluation(
                    EvalConfig(
                        model=run_model_uri(run_id),
                        corpus=cell.corpus,
                        format=fmt,
                        split=split,
                        limit=ev.limit,
                        data_dir=train_cfg.data.data_dir,
                        generation=generation,
                        num_actors=ev.num_actors,
                        use_gpu=ev.use_gpu,
                        tracking=train_cfg.tracking,
                        parent_run_id=run_id,
                        log_to_parent=fmt == cell.formats[0],
                    )
                )
                if fmt == cell.formats[0]:
                    metrics.update(result.metrics)
        return CellOutcome(cell, "FINISHED", run_id, metrics, seconds=time.perf_counter() - start)
    except Exception as exc:  # one failed cell must not stop the others
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return CellOutcome(cell, "FAILED", error=detail, seconds=time.perf_counter() - start)


def run_sweep(cfg: SweepConfig, progress: bool = True) -> list[CellOutcome]:
    """Every cell, in sequence or (parallel) as Ray tasks; returns one outcome per cell."""
    init_ray()
    cells = cfg.cells()
    if cfg.parallel:
        import ray

        remote = ray.remote(num_cpus=0)(run_cell)
        refs = [remote.remote(cfg, cell) for cell in cells]
        return list(ray.get(refs))
    outcomes = []
    for i, cell in enumerate(cells, 1):
        if progress:
            print(f"[sweep {i}/{len(cells)}] {cell.run_name(cfg.experiment)}", flush=True)
        outcome = run_cell(cfg, cell)
        if progress:
            print(f"[sweep {i}/{len(cells)}] {outcome.status} {_metric(outcome, cfg.metric)}")
        outcomes.append(outcome)
    return outcomes


def _metric(outcome: CellOutcome, metric: str) -> str:
    value = outcome.metrics.get(metric)
    return f"{metric}={value:.4f}" if value is not None else (outcome.error or "")


def summary_table(cfg: SweepConfig, outcomes: list[CellOutcome]) -> str:
    lines = [f"{'model':<16}{'corpus':<16}{'format':<28}{'status':<10}{cfg.metric:>9}  run"]
    for o in outcomes:
        value = o.metrics.get(cfg.metric)
        shown = f"{value:.4f}" if value is not None else "-"
        lines.append(
            f"{o.cell.model:<16}{o.cell.corpus_name:<16}{o.cell.format_label:<28}{o.status:<10}"
            f"{shown:>9}  {o.run_id or o.error}"
        )
    return "\n".join(lines)


def outcomes_json(outcomes: list[CellOutcome]) -> list[dict[str, Any]]:
    return [
        {
            "model": o.cell.model,
            "corpus": o.cell.corpus_name,
            "format": o.cell.format_label,
            "status": o.status,
            "run_id": o.run_id,
            "error": o.error,
            "seconds": o.seconds,
            **o.metrics,
        }
        for o in outcomes
    ]
