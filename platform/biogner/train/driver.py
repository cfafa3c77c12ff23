"""The driver side of a training job: MLflow run, data, TorchTrainer.fit, model logging.

A run whose fit raises ends FAILED with the error and logs no model; rerunning the same
run name resumes both the Ray Train checkpoint and the MLflow run. A FINISHED run's name is
not reused with another config (`check_rerun`).
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biogner.config import to_yaml
from biogner.corpora import get_corpus
from biogner.models.card import ModelCard
from biogner.progress import duration
from biogner.runtime import compute_runtime_env, init_ray, log_file, verbose
from biogner.tracking.models import log_hf_model, run_model_uri
from biogner.tracking.runs import (
    client_for,
    end_run,
    log_metrics_from_worker,
    start_run,
)
from biogner.tracking.tags import CORPORA_TAG, FORMAT_TAG, KIND_TAG, MODEL_TAG, TRAIN_KIND
from biogner.train.config import TrainConfig
from biogner.train.dataset import training_dataset
from biogner.train.inputs import CorpusInput, check_corpora, log_corpora
from biogner.train.lease import RunLease, check_live
from biogner.train.loop import (
    MODEL_DIR,
    STATE_FILE,
    TrainState,
    plan_steps,
    step_line,
    train_loop,
)
from biogner.train.rerun import check_rerun, ray_run_folder

log = logging.getLogger(__name__)
CLEANUP_ERROR_TAG = "checkpoint_cleanup_error"  # the model is logged; its checkpoints stayed


@dataclass
class TrainOutcome:
    run_id: str
    status: str  # FINISHED, or STOPPED when optim.stop_after_steps ended it early
    steps: int  # optimizer steps done (up to the last checkpoint when STOPPED)
    metrics: dict[str, Any]
    checkpoint_path: str | None
    model_uri: str | None = None  # the logged model (FINISHED runs): open it with open_model


class StepPrinter(threading.Thread):
    """Prints the training steps rank 0 logs to MLflow, one line each, with an ETA.

    The driver, not the workers, writes the terminal: worker output carries Ray's prefixes,
    arrives twice through Ray Train's log forwarding, and interleaves with Ray's own actors'
    warnings. Reading the run's metric history every few seconds costs one query."""

    KEYS = ("loss", "learning_rate", "tokens_per_s", "padding_ratio")

    def __init__(self, cfg: TrainConfig, run_id: str, total_steps: int, every_s: float = 2.0):
        super().__init__(daemon=True, name="biogner-step-printer")
        self.client = client_for(cfg.tracking)
        self.run_id, self.total, self.every_s = run_id, total_steps, every_s
        self._stop_event = threading.Event()
        self.printed = max((m.step for m in self._history("loss")), default=0)
        self.first_seen: tuple[float, int] | None = None

    def _history(self, key: str) -> list[Any]:
        return list(self.client.get_metric_history(self.run_id, key))

    def poll(self) -> None:
        history = {k: self._history(k) for k in self.KEYS}
        columns = {k: {m.step: m.value for m in ms} for k, ms in history.items()}
        logged_at = {m.step: m.timestamp / 1000 for m in history["loss"]}  # when rank 0 logged
        for step in sorted(s for s in columns["loss"] if s > self.printed):
            if self.first_seen is None:
                self.first_seen = (logged_at[step], step)
            t0, s0 = self.first_seen
            per_step = (logged_at[step] - t0) / (step - s0) if step > s0 else None
            eta = duration(per_step * (self.total - step)) if per_step else "?"
            value = {k: columns[k].get(step, float("nan")) for k in self.KEYS}
            print(step_line(step, self.total, value, eta), flush=True)
            self.printed = step

    def _safe_poll(self) -> None:
        try:
            self.poll()
        except Exception as exc:  # a busy store must not kill the run
            log.debug("step printer: %s", exc)

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            self._safe_poll()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
        self._safe_poll()  # the steps logged since the last poll


def model_card(cfg: TrainConfig) -> ModelCard:
    """What serving and evaluation need to know about a logged model (its card).

    `type_groups`: the sets of types the model was asked together in training (one per
    corpus); serving asks a request's types in these groups, never in a mix it never saw."""
    types: list[str] = []
    groups: list[list[str]] = []
    for corpus in cfg.data.corpora:
        group = list(get_corpus(corpus).types)
        if group not in groups:
            groups.append(group)
        for t in group:
            if t not in types:
                types.append(t)
    return ModelCard(
        base_model=cfg.model.spec,
        formats=list(cfg.data.formats),
        format=cfg.data.formats[0],
        entity_types=types,
        type_groups=groups,
        corpora=[get_corpus(ref).name for ref in cfg.data.corpora],
        corpus_refs=list(cfg.data.corpora),
        lora=cfg.model.lora,
    )


def run_training(cfg: TrainConfig, rows: Any | None = None) -> TrainOutcome:
    """Train with Ray Train + DeepSpeed and log everything to MLflow.

    `rows`, a Ray Dataset of tokenized rows (`id`, `input_ids`, `labels`), replaces the
    configured corpora: benchmarks and the GPU check train on fixed-length rows with it."""
    inputs = check_corpora(cfg) if rows is None else []  # a corpus that would lose mentions,
    check_rerun(cfg)  # a refused rerun and a second driver of a live run: refused before
    check_live(cfg.tracking, cfg.run_name)  # Ray starts, at no cost
    init_ray()
    tags = {
        KIND_TAG: TRAIN_KIND,
        MODEL_TAG: cfg.model.spec,
        FORMAT_TAG: ",".join(cfg.data.formats),
        CORPORA_TAG: ",".join(get_corpus(ref).name for ref in cfg.data.corpora),
    }
    run_id = start_run(
        cfg.tracking,
        cfg.run_name,
        tags=tags,
        params=cfg.model_dump(mode="json"),
        config_yaml=to_yaml(cfg),
        resume=True,
    )
    lease = RunLease(cfg.tracking, run_id).acquire()  # LiveRunConflict: the run is another's
    try:
        return _train(cfg, rows, run_id, inputs)
    finally:
        lease.release()


def _train(
    cfg: TrainConfig, rows: Any | None, run_id: str, inputs: list[CorpusInput]
) -> TrainOutcome:
    """The body of `run_training`, with the run started and its lease held: a failure
    before the model is logged ends the run FAILED with its error."""
    try:
        dataset, rows_count = _training_rows(cfg, rows, run_id, inputs)
        steps_per_epoch, total_steps = plan_steps(cfg, rows_count, cfg.scaling.num_workers)
        _announce(cfg, run_id, rows_count, total_steps)
        trainer = _trainer(cfg, run_id, dataset, steps_per_epoch, total_steps)
        result = _fit(trainer, cfg, run_id, total_steps)
        stopped = _log_model_or_stop(cfg, run_id, result, total_steps)
        if stopped is not None:
            return stopped
    except BaseException as exc:
        end_run(cfg.tracking, run_id, exc)
        raise
    # The model is logged: the run is FINISHED whatever the clean-up of its checkpoints
    # meets (busy `.nfs*` files on shared storage); a failed clean-up is reported aside.
    checkpoint_path: str | None = result.checkpoint.path
    try:
        if not cfg.scaling.keep_checkpoints and drop_local_checkpoints(cfg):
            checkpoint_path = None
    except OSError as exc:
        log.warning("run %s: its checkpoints stay in %s: %s", run_id, checkpoint_path, exc)
        client_for(cfg.tracking).set_tag(run_id, CLEANUP_ERROR_TAG, f"{type(exc).__name__}: {exc}")
    if checkpoint_path is not None:
        client_for(cfg.tracking).set_tag(run_id, "checkpoint", checkpoint_path)
    end_run(cfg.tracking, run_id)
    return TrainOutcome(
        run_id,
        "FINISHED",
        total_steps,
        dict(result.metrics or {}),
        checkpoint_path,
        run_model_uri(run_id),
    )


def _training_rows(
    cfg: TrainConfig, rows: Any | None, run_id: str, inputs: list[CorpusInput]
) -> tuple[Any, int]:
    """The training rows (the configured corpora's, or `rows`) as a Ray Dataset, and their
    count; what they came from is logged to the run."""
    if inputs:
        log_corpora(cfg, run_id, inputs)
    if rows is None:
        dataset, counts = training_data(cfg)
    else:
        dataset, counts = rows.materialize(), {"rows": rows.count(), "dropped_too_long": 0}
    log_metrics_from_worker(
        run_id,
        {"train_rows": counts["rows"], "dropped_too_long": counts["dropped_too_long"]},
        0,
        cfg.tracking.uri,
    )
    return dataset, counts["rows"]


def _announce(cfg: TrainConfig, run_id: str, rows: int, total_steps: int) -> None:
    """The run's first lines on the terminal: its size, its MLflow run, where logs go."""
    world = cfg.scaling.num_workers
    print(
        f"[train] {cfg.run_name}: {rows} examples, {total_steps} steps of "
        f"{cfg.optim.per_device_batch_size * cfg.optim.gradient_accumulation_steps * world}"
        f" on {world} worker(s); MLflow run {run_id}",
        flush=True,
    )
    if log_file() is not None:
        print(
            f"[train] Ray/DeepSpeed logs: {log_file()} and /tmp/ray/session_latest/logs/ "
            "(biogner --verbose shows them here)",
            flush=True,
        )


def _trainer(
    cfg: TrainConfig, run_id: str, dataset: Any, steps_per_epoch: int, total_steps: int
) -> Any:
    """The TorchTrainer running `train_loop` on the configured workers; its run name and
    storage make a rerun resume from the last checkpoint."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        train_loop,
        train_loop_config={
            "cfg": cfg.model_dump(mode="json"),
            "run_id": run_id,
            "tracking_uri": cfg.tracking.uri,
            "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=cfg.run_name,
            storage_path=str(Path(cfg.scaling.storage_path).resolve()),
            failure_config=FailureConfig(max_failures=cfg.scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # Train v2's RunConfig (mypy sees the v1 class that ray.train re-exports)
            worker_runtime_env=compute_runtime_env(cfg.scaling.worker_niceness),  # type: ignore[call-arg]
        ),
        datasets={"train": dataset},
        dataset_config=DataConfig(datasets_to_split=[]),
    )


def _fit(trainer: Any, cfg: TrainConfig, run_id: str, total_steps: int) -> Any:
    """`trainer.fit()`, the steps printed from MLflow meanwhile unless verbose; a result
    without a checkpoint is an error."""
    printer = None if verbose() else StepPrinter(cfg, run_id, total_steps)
    if printer is not None:
        printer.start()
    try:
        result = trainer.fit()
    finally:
        if printer is not None:
            printer.stop()
    if result.checkpoint is None:
        raise RuntimeError("training ended without a checkpoint")
    return result


def _log_model_or_stop(
    cfg: TrainConfig, run_id: str, result: Any, total_steps: int
) -> TrainOutcome | None:
    """Log the final checkpoint's model to the run (None), or end a run that
    `optim.stop_after_steps` stopped early (its STOPPED outcome)."""
    with result.checkpoint.as_directory() as ckpt_dir:
        state = TrainState.from_json((Path(ckpt_dir) / STATE_FILE).read_text())
        if state.global_step < total_steps:
            end_run(cfg.tracking, run_id, KeyboardInterrupt("stopped early"))
            return TrainOutcome(
                run_id,
                "STOPPED",
                state.global_step,
                dict(result.metrics or {}),
                result.checkpoint.path,
            )
        model_dir = Path(ckpt_dir) / MODEL_DIR
        if not (model_dir / "config.json").is_file():
            raise RuntimeError(f"final checkpoint {ckpt_dir} holds no exported model")
        card = model_card(cfg).model_dump(mode="json")
        log_hf_model(run_id, model_dir, metadata=card, cfg=cfg.tracking)
    return None


def drop_local_checkpoints(cfg: TrainConfig) -> bool:
    """Delete a finished run's Ray Train folder (its last checkpoints: weights and optimizer
    state) when it is on a local disk; True if deleted. Why: the model is in MLflow by now,
    the checkpoints only serve resuming, and at ~3 GB a run a sweep filled this box's disk.
    Remote storage (URIs) is left to its own lifecycle rules."""
    if "://" in cfg.scaling.storage_path:
        return False
    folder = ray_run_folder(cfg)
    root = Path(cfg.scaling.storage_path).resolve()
    if not is_own_run_folder(folder, root, cfg.run_name):
        log.warning(
            "not deleting %s: not the run folder of %r under %s", folder, cfg.run_name, root
        )
        return False
    if not folder.is_dir():
        return False
    shutil.rmtree(folder)
    return True


def is_own_run_folder(folder: Path, root: Path, run_name: str) -> bool:
    """`folder` is exactly `<root>/<run_name>`, a child of the storage root: never the root
    itself (`run_name` empty or `.`), a folder beside it (`..`, `../x`) or deeper (`a/b`).
    The config refuses such names; this guards the one place that deletes."""
    return (
        bool(run_name)
        and run_name not in (".", "..")
        and Path(run_name).name == run_name
        and folder.parent == root
        and folder.name == run_name
    )


def training_data(cfg: TrainConfig) -> tuple[Any, dict[str, int]]:
    return training_dataset(cfg)
