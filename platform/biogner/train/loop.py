"""The training loop that runs on every Ray Train worker: one loop for CPU and GPU.

DeepSpeed (ZeRO 0/2/3, optional optimizer offload) wraps the model; the backend (gloo or
NCCL), precision and stage come from the config. Rank 0 logs to MLflow; every rank takes
part in checkpoints (ZeRO shards) and reports them to Ray Train.

A recipe in torchtune's shape: `TrainRecipe.setup` (model, engine, data shard), `resume`
(the checkpoint Ray Train hands this attempt), `train` (epochs of `train_step`s; each
optimizer step `log`s and, every N steps, `save`s); a `StepMeter` adds up one step's
micro-batches.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from biogner.models.load import load_model
from biogner.progress import duration
from biogner.runtime import cpu_threads, jemalloc_loaded, verbose
from biogner.tracking.runs import log_metrics_from_worker
from biogner.train.batching import collate, epoch_batches, rank_examples
from biogner.train.config import TRAIN_SECONDS, TrainConfig
from biogner.train.deepspeed_config import build_deepspeed_config, client_optimizer, cpu_autocast
from biogner.train.export import export_model
from biogner.train.loss import causal_lm_loss
from biogner.train.meter import StepMeter

STATE_FILE = "train_state.json"
DS_TAG = "deepspeed"
MODEL_DIR = "model"
SHM_COMM_MODULE = "deepspeed.comm.torch"  # where DeepSpeed builds its CPU shared-memory op
SHM_COMM_BUILDER = "build_shm_op"

log = logging.getLogger(__name__)


def import_deepspeed(on_gpu: bool) -> Any:
    """Import deepspeed in the worker; on CPU skip the inference-only shm op build (~30 s).

    DeepSpeed has no switch for it: its `build_shm_op` is replaced in the module object
    (`sys.modules`; `import deepspeed.comm.torch` yields torch itself). A DeepSpeed without
    that function is said here, not silently paid for (tests/test_private_apis.py)."""
    import deepspeed

    if not verbose():  # its INFO lines (config dumps, timers) drown the step lines
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    if not on_gpu:
        comm = sys.modules.get(SHM_COMM_MODULE)
        if comm is not None and hasattr(comm, SHM_COMM_BUILDER):
            setattr(comm, SHM_COMM_BUILDER, lambda: None)
        else:
            log.warning(
                "%s.%s is gone: the first CPU training step may compile DeepSpeed's "
                "shared-memory op (~30 s)",
                SHM_COMM_MODULE,
                SHM_COMM_BUILDER,
            )
    return deepspeed


def step_line(step: int, total: int, metrics: dict[str, Any], eta: str) -> str:
    """The one line a training step prints (the worker with --verbose, else the driver)."""
    return (
        f"[train] step {step}/{total} loss {metrics['loss']:.4f} "
        f"lr {metrics['learning_rate']:.2e} tokens/s {metrics['tokens_per_s']:.0f} "
        f"padding {metrics['padding_ratio']:.3f} eta {eta}"
    )


def worker_threads(cfg: TrainConfig, local_world: int) -> int:
    """Torch threads for a CPU worker: the config's, else this node's cores shared evenly by
    its workers (`runtime.cpu_threads`)."""
    return cfg.scaling.threads_per_worker or cpu_threads(local_world)


@dataclass
class TrainState:
    """Where a run is: written beside each checkpoint (`train_state.json`), read on resume."""

    global_step: int = 0  # optimizer steps done
    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches of `epoch` done
    # seconds spent training the steps kept so far, carried across resumes (a run's wall
    # time also counts the pauses between them, and Ray's start)
    train_seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(
            {
                "global_step": self.global_step,
                "epoch": self.epoch,
                "micro_in_epoch": self.micro_in_epoch,
                TRAIN_SECONDS: self.train_seconds,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        data = json.loads(text)
        return cls(
            int(data["global_step"]),
            int(data["epoch"]),
            int(data["micro_in_epoch"]),
            float(data.get(TRAIN_SECONDS, 0.0)),
        )


class TrainRecipe:
    """One worker's fine-tuning run, from `train_loop`'s config (see `driver._trainer`)."""

    rank: int
    world: int
    device: torch.device
    on_gpu: bool
    engine: Any
    tokenizer: Any
    examples: Any
    solo: bool  # one rank, no ZeRO: backward skips DeepSpeed's gradient all-reduce
    bf16_autocast: bool  # bf16 on a CPU: the forward runs under torch.autocast

    def __init__(self, config: dict[str, Any]) -> None:
        self.cfg = TrainConfig.model_validate(config["cfg"])
        self.run_id: str = config["run_id"]
        self.tracking_uri: str = config["tracking_uri"]
        self.total_steps: int = config["total_steps"]
        self.steps_per_epoch: int = config["steps_per_epoch"]
        self.state = TrainState()
        self.meter = StepMeter()
        self.last: dict[str, Any] = {}  # the last step's metrics
        self.started = 0.0  # when `train` started, and the step it started from
        self.steps_at_start = 0
        self.seconds_before = 0.0  # train_seconds of the checkpoint resumed from

    def setup(self) -> None:
        """Device, threads, model, DeepSpeed engine and this rank's examples."""
        import ray.train
        import ray.train.torch

        cfg = self.cfg
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.on_gpu = self.device.type == "cuda"
        deepspeed = import_deepspeed(self.on_gpu)
        torch.manual_seed(cfg.optim.seed)
        if not self.on_gpu:
            torch.set_num_threads(worker_threads(cfg, ctx.get_local_world_size()))
        self.bf16_autocast = cpu_autocast(cfg, self.on_gpu)
        model, self.tokenizer = load_model(cfg.model, device=self.device, for_training=True)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.engine, _, _, _ = deepspeed.initialize(
            model=model,
            model_parameters=trainable,
            optimizer=client_optimizer(cfg, trainable),
            config=build_deepspeed_config(cfg, self.world, self.total_steps, self.on_gpu),
        )
        # An all-reduce over one rank is the identity, but DeepSpeed still flattens every
        # gradient into one buffer and back each step (~5 % of a SmolLM2 CPU step, py-spy):
        # `train_step` runs backward under DeepSpeed's public `no_sync` then.
        self.solo = self.world == 1 and cfg.deepspeed.zero_stage == 0
        if self.rank == 0:  # what the worker really got: a starved CPU worker shows up here
            worker = {
                "worker_niceness": os.nice(0),
                "worker_torch_threads": torch.get_num_threads(),
                "worker_jemalloc": float(jemalloc_loaded()),
            }
            log_metrics_from_worker(self.run_id, worker, 0, self.tracking_uri)
        shard = ray.train.get_dataset_shard("train")
        self.examples = rank_examples(
            lambda: shard.iter_batches(batch_size=1024, batch_format="numpy"),
            self.rank,
            self.world,
        )

    def resume(self) -> None:
        """Load the checkpoint Ray Train hands this attempt (a rerun of the run name, or a
        restart after a failure), if any: weights, optimizer, position in the data."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return
        with checkpoint.as_directory() as ckpt_dir:
            self.engine.load_checkpoint(ckpt_dir, tag=DS_TAG, load_module_strict=False)
            self.state = TrainState.from_json((Path(ckpt_dir) / STATE_FILE).read_text())

    def train(self) -> None:
        """Epochs of micro-batches up to `total_steps` optimizer steps (or
        `optim.stop_after_steps`, as if preempted), from where `resume` left the state."""
        ga = self.cfg.optim.gradient_accumulation_steps
        self.started, self.steps_at_start = time.perf_counter(), self.state.global_step
        self.seconds_before = self.state.train_seconds
        self.meter.reset()
        while self.state.global_step < self.total_steps:
            batches = self.epoch_batches()
            for i in range(self.state.micro_in_epoch, len(batches)):
                self.train_step(batches[i])
                self.state.micro_in_epoch = i + 1
                if (i + 1) % ga == 0 and self.optimizer_step_done(len(batches)):
                    return
            self.state.epoch += 1
            self.state.micro_in_epoch = 0
        if not self.last:  # resumed after the last step: nothing left to train
            self.save({"step": self.state.global_step}, final=True)

    def epoch_batches(self) -> list[Any]:
        """This rank's micro-batches of the state's epoch (as many on every rank)."""
        o = self.cfg.optim
        batches = epoch_batches(
            self.examples,
            o.per_device_batch_size,
            o.seed,
            self.state.epoch,
            o.group_by_length,
            o.length_group_batches,
        )
        return batches[: self.steps_per_epoch * o.gradient_accumulation_steps]

    def train_step(self, batch: Any) -> None:
        """Forward, backward and DeepSpeed's step on one micro-batch (the engine applies the
        optimizer every `gradient_accumulation_steps`)."""
        tensors, real, padded = collate(batch, self.tokenizer.pad_token_id)
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if self.bf16_autocast
            else contextlib.nullcontext()
        )
        with autocast:
            loss = causal_lm_loss(self.engine, {k: v.to(self.device) for k, v in tensors.items()})
        with self.engine.no_sync() if self.solo else contextlib.nullcontext():
            self.engine.backward(loss)
        self.engine.step()
        self.meter.add(float(loss.detach()), real, padded)

    def optimizer_step_done(self, epoch_micro: int) -> bool:
        """Count, log and maybe checkpoint the optimizer step just taken; True when the run
        is to end here (its last step, or `stop_after_steps`)."""
        state, o = self.state, self.cfg.optim
        state.global_step += 1
        state.train_seconds = self.seconds_before + time.perf_counter() - self.started
        step = state.global_step
        self.last = self.step_metrics(state.epoch + state.micro_in_epoch / max(epoch_micro, 1))
        if self.rank == 0 and (step % o.log_every_steps == 0 or step == self.total_steps):
            self.log(self.last)
        self.meter.reset()
        done = step >= self.total_steps
        if done or (o.checkpoint_every_steps and step % o.checkpoint_every_steps == 0):
            if done:
                state.micro_in_epoch = epoch_micro
            self.save(self.last, final=done)
        # stop_after_steps: as if preempted, the driver sees the last checkpoint's step
        return done or (o.stop_after_steps is not None and step >= o.stop_after_steps)

    def step_metrics(self, epoch: float) -> dict[str, Any]:
        """The step's metrics, the same on every rank (the meter's are reduced over ranks)."""
        summary = self.meter.summary()
        metrics: dict[str, Any] = {
            "loss": summary["loss"],
            "learning_rate": float(self.engine.get_lr()[0]),
            "tokens_per_s": summary["tokens_per_s"],
            "padding_ratio": summary["padding_ratio"],
            "epoch": epoch,
            TRAIN_SECONDS: self.state.train_seconds,
            "step": self.state.global_step,
        }
        if self.on_gpu:
            metrics["gpu_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return metrics

    def log(self, metrics: dict[str, Any]) -> None:
        """Rank 0: one step's metrics to MLflow (the driver prints them from there,
        train.driver.StepPrinter) and its line to stdout, which reaches the terminal only
        with --verbose (Ray forwards worker output then)."""
        step = metrics["step"]
        per_step = (time.perf_counter() - self.started) / max(step - self.steps_at_start, 1)
        eta = duration(per_step * (self.total_steps - step))
        print(step_line(step, self.total_steps, metrics, eta), flush=True)
        logged = {k: v for k, v in metrics.items() if k != "step"}
        log_metrics_from_worker(self.run_id, logged, step, self.tracking_uri)

    def save(self, metrics: dict[str, Any], final: bool) -> None:
        """A checkpoint (every rank's ZeRO shard, the state, the exported model when
        `final`) reported to Ray Train with the step's metrics."""
        import ray.train

        with tempfile.TemporaryDirectory() as tmp:
            self.engine.save_checkpoint(
                tmp, tag=DS_TAG, exclude_frozen_parameters=self.cfg.model.lora
            )
            if self.rank == 0:
                (Path(tmp) / STATE_FILE).write_text(self.state.to_json())
            if final:
                export_model(
                    self.engine, self.cfg, self.tokenizer, Path(tmp) / MODEL_DIR, self.rank
                )
            ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({**metrics, "final": final}, checkpoint=ckpt)


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker entry point."""
    recipe = TrainRecipe(config)
    recipe.setup()
    recipe.resume()
    recipe.train()


def plan_steps(cfg: TrainConfig, n_rows: int, world: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) for `n_rows` examples."""
    per_rank = n_rows // world
    micro = per_rank // cfg.optim.per_device_batch_size
    steps_per_epoch = micro // cfg.optim.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"{n_rows} training examples are too few for {world} workers x batch "
            f"{cfg.optim.per_device_batch_size} x accumulation "
            f"{cfg.optim.gradient_accumulation_steps}"
        )
    if cfg.optim.max_steps is not None:  # a fixed budget: epochs repeat as needed
        return steps_per_epoch, cfg.optim.max_steps
    return steps_per_epoch, max(math.ceil(cfg.optim.epochs * steps_per_epoch), 1)
