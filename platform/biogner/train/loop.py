"""The training loop that runs on every Ray Train worker: one loop for CPU and GPU.

DeepSpeed (ZeRO 0/2/3, optional optimizer offload) wraps the model; the backend (gloo or
NCCL), precision and stage come from the config. Rank 0 logs to MLflow; every rank takes
part in checkpoints (ZeRO shards) and reports them to Ray Train.
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
from biogner.train.loss import causal_lm_loss

STATE_FILE = "train_state.json"
DS_TAG = "deepspeed"
MODEL_DIR = "model"


def _import_deepspeed(on_gpu: bool) -> Any:
    """Import deepspeed in the worker; on CPU skip the inference-only shm op build (~30 s)."""

    import deepspeed

    if not verbose():  # its INFO lines (config dumps, timers) drown the step lines
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    if not on_gpu:
        comm = sys.modules.get("deepspeed.comm.torch")
        if comm is not None and hasattr(comm, "build_shm_op"):
            setattr(comm, "build_shm_op", lambda: None)  # noqa: B010
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


def _all_mean(values: list[float]) -> list[float]:
    """Mean over ranks (a collective: every rank calls it the same number of times)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl":
            t = t.to(torch.device("cuda"))
        dist.all_reduce(t)
        t = t.cpu() / dist.get_world_size()
    return t.tolist()


def _all_sum(values: list[float]) -> list[float]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return [v * dist.get_world_size() for v in _all_mean(values)]
    return values


def export_model(engine: Any, cfg: TrainConfig, tokenizer: Any, out: Path, rank: int) -> None:
    """Write the trained model as an HF directory (merged weights + tokenizer) on rank 0.

    Every rank must call this: under ZeRO-3 the weights are gathered collectively, and a
    save entered by rank 0 alone hangs."""
    if cfg.deepspeed.zero_stage == 3:
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = engine.module.state_dict() if rank == 0 else None
    if rank != 0:
        return
    assert state is not None
    state = {k: v.detach().to("cpu", torch.float32) for k, v in state.items()}
    if cfg.model.lora:
        from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

        adapter_state = get_peft_model_state_dict(engine.module, state_dict=state)
        engine.module.save_pretrained(str(out / "adapter"), state_dict=adapter_state)
        base, _ = load_model(cfg.model.model_copy(update={"lora": False}), "cpu", False)
        peft_model = PeftModel.from_pretrained(base, str(out / "adapter"))
        set_peft_model_state_dict(peft_model, adapter_state)
        merged = peft_model.merge_and_unload()
    else:
        merged, _ = load_model(cfg.model.model_copy(update={"lora": False}), "cpu", False)
        merged.load_state_dict(state)
    merged.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker entry point."""
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.model_validate(config["cfg"])
    run_id: str = config["run_id"]
    tracking_uri: str = config["tracking_uri"]
    total_steps: int = config["total_steps"]
    steps_per_epoch: int = config["steps_per_epoch"]

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    deepspeed = _import_deepspeed(on_gpu)
    torch.manual_seed(cfg.optim.seed)
    if not on_gpu:
        torch.set_num_threads(worker_threads(cfg, ctx.get_local_world_size()))
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if cpu_autocast(cfg, on_gpu)
        else contextlib.nullcontext
    )

    model, tokenizer = load_model(cfg.model, device=device, for_training=True)
    ds_config = build_deepspeed_config(cfg, world, total_steps, on_gpu)
    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=trainable,
        optimizer=client_optimizer(cfg, trainable),
        config=ds_config,
    )
    if world == 1 and cfg.deepspeed.zero_stage == 0:
        # An all-reduce over one rank is the identity, but DeepSpeed still flattens every
        # gradient into one buffer and back each step (~5 % of a SmolLM2 CPU step, py-spy).
        engine.enable_backward_allreduce = False

    if rank == 0:  # what the worker really got: a starved CPU worker shows up here
        worker = {
            "worker_niceness": os.nice(0),
            "worker_torch_threads": torch.get_num_threads(),
            "worker_jemalloc": float(jemalloc_loaded()),
        }
        log_metrics_from_worker(run_id, worker, 0, tracking_uri)

    shard = ray.train.get_dataset_shard("train")
    examples = rank_examples(
        lambda: shard.iter_batches(batch_size=1024, batch_format="numpy"), rank, world
    )
    ga = cfg.optim.gradient_accumulation_steps
    micro_per_epoch = steps_per_epoch * ga

    state: dict[str, Any] = {"global_step": 0, "epoch": 0, "micro_in_epoch": 0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            engine.load_checkpoint(ckpt_dir, tag=DS_TAG, load_module_strict=False)
            state = json.loads((Path(ckpt_dir) / STATE_FILE).read_text())

    def save(metrics: dict[str, Any], final: bool) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            engine.save_checkpoint(tmp, tag=DS_TAG, exclude_frozen_parameters=cfg.model.lora)
            if rank == 0:
                (Path(tmp) / STATE_FILE).write_text(json.dumps(state))
            if final:
                export_model(engine, cfg, tokenizer, Path(tmp) / MODEL_DIR, rank)
            ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({**metrics, "final": final}, checkpoint=ckpt)

    pad_id = tokenizer.pad_token_id
    window: dict[str, float] = {"loss": 0.0, "micro": 0, "real": 0, "padded": 0}
    tick = time.perf_counter()
    started, done_at_start = time.perf_counter(), state["global_step"]
    # seconds spent training the steps kept so far, carried across resumes in the checkpoint
    # (a run's wall time also counts the pauses between them, and Ray's start)
    trained_before = float(state.get(TRAIN_SECONDS, 0.0))
    last: dict[str, Any] = {}
    stop_at = cfg.optim.stop_after_steps
    while state["global_step"] < total_steps:
        batches = epoch_batches(
            examples,
            cfg.optim.per_device_batch_size,
            cfg.optim.seed,
            state["epoch"],
            cfg.optim.group_by_length,
            cfg.optim.length_group_batches,
        )[:micro_per_epoch]
        for i in range(state["micro_in_epoch"], len(batches)):
            tensors, real, padded = collate(batches[i], pad_id)
            with autocast():
                loss = causal_lm_loss(engine, {k: v.to(device) for k, v in tensors.items()})
            engine.backward(loss)
            engine.step()
            window["loss"] += float(loss.detach())
            window["micro"] += 1
            window["real"] += real
            window["padded"] += padded
            state["micro_in_epoch"] = i + 1
            if (i + 1) % ga:
                continue
            state["global_step"] += 1
            state[TRAIN_SECONDS] = trained_before + time.perf_counter() - started
            step = state["global_step"]
            (mean_loss,) = _all_mean([window["loss"] / window["micro"]])
            real_all, padded_all = _all_sum([window["real"], window["padded"]])
            elapsed = time.perf_counter() - tick
            last = {
                "loss": mean_loss,
                "learning_rate": float(engine.get_lr()[0]),
                "tokens_per_s": real_all / elapsed if elapsed else 0.0,
                "padding_ratio": 1.0 - real_all / padded_all if padded_all else 0.0,
                "epoch": state["epoch"] + (i + 1) / max(len(batches), 1),
                TRAIN_SECONDS: state[TRAIN_SECONDS],
                "step": step,
            }
            if on_gpu:
                last["gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            if rank == 0 and (step % cfg.optim.log_every_steps == 0 or step == total_steps):
                # The driver prints these from MLflow (train.driver.StepPrinter); this line
                # reaches the terminal only with --verbose (Ray forwards worker output then).
                per_step = (time.perf_counter() - started) / max(step - done_at_start, 1)
                eta = duration(per_step * (total_steps - step))
                print(step_line(step, total_steps, last, eta), flush=True)
                log_metrics_from_worker(
                    run_id, {k: v for k, v in last.items() if k != "step"}, step, tracking_uri
                )
            window = {"loss": 0.0, "micro": 0, "real": 0, "padded": 0}
            tick = time.perf_counter()
            every = cfg.optim.checkpoint_every_steps
            done = step >= total_steps
            if done or (every and step % every == 0):
                if done:
                    state["micro_in_epoch"] = len(batches)
                save(last, final=done)
            if done:
                return
            if stop_at is not None and step >= stop_at:
                return  # as if preempted: the driver sees the last checkpoint's step
        state["epoch"] += 1
        state["micro_in_epoch"] = 0
    if not last:  # resumed after the last step: nothing left to train
        save({"step": state["global_step"]}, final=True)


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
