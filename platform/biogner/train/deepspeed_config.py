"""The DeepSpeed config dict for a run: ZeRO stage, offload, precision and schedule come
from the run config, so one training loop serves CPU and GPU."""

from __future__ import annotations

from typing import Any

from biogner.models.load import native_bf16
from biogner.train.config import TrainConfig


def precision(cfg: TrainConfig, on_gpu: bool) -> str:
    """The run's compute precision: 'auto' is bf16 where the GPU or CPU computes it natively
    (a CPU without AVX512-BF16/AMX emulates it, far slower than fp32), fp32 otherwise."""
    import torch

    requested = cfg.deepspeed.precision
    if requested == "fp16" and not on_gpu:
        raise ValueError("deepspeed.precision=fp16 needs a GPU: use bf16 or fp32 on a CPU")
    if requested != "auto":
        return requested
    return "bf16" if native_bf16(torch.device("cuda" if on_gpu else "cpu")) else "fp32"


def cpu_autocast(cfg: TrainConfig, on_gpu: bool) -> bool:
    """bf16 on a CPU runs under torch.autocast around the forward pass (fp32 weights, fp32
    optimizer state); on a GPU DeepSpeed's bf16 mode does the same with fp32 master weights."""
    return not on_gpu and precision(cfg, on_gpu) == "bf16"


def scheduler(cfg: TrainConfig, total_steps: int) -> dict[str, Any]:
    warmup = max(1, int(round(cfg.optim.warmup_ratio * total_steps)))  # DeepSpeed needs >= 1
    lr = cfg.optim.learning_rate
    if cfg.optim.schedule == "cosine":
        return {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": max(total_steps, 1),
                "warmup_num_steps": warmup,
                "warmup_min_ratio": 0.0,
                "cos_min_ratio": 0.0,
                "warmup_type": "linear",
            },
        }
    if cfg.optim.schedule == "linear":
        return {
            "type": "WarmupDecayLR",
            "params": {
                "total_num_steps": max(total_steps, 1),
                "warmup_num_steps": max(warmup, 0),
                "warmup_min_lr": 0.0,
                "warmup_max_lr": lr,
                "warmup_type": "linear",
            },
        }
    return {
        "type": "WarmupLR",
        "params": {
            "warmup_num_steps": max(warmup, 0),
            "warmup_min_lr": 0.0,
            "warmup_max_lr": lr,
            "warmup_type": "linear",
        },
    }


def client_optimizer(cfg: TrainConfig, params: list[Any]) -> Any | None:
    """The optimizer the loop hands DeepSpeed: torch's fused AdamW (one kernel over all
    tensors, on CPU and CUDA), or None under ZeRO-Offload, which takes its optimizer from
    the config (`optimizer` block) and refuses a client one.

    Why fused: on a 2-core CPU a SmolLM2-135M AdamW step takes 0.40 s multi-tensor
    (`foreach`, all DeepSpeed's torch path offers) and 0.10 s fused, ~10 % of a step."""
    if cfg.deepspeed.offload_optimizer and cfg.deepspeed.zero_stage >= 1:
        return None
    import torch

    return torch.optim.AdamW(
        params,
        lr=cfg.optim.learning_rate,
        weight_decay=cfg.optim.weight_decay,
        fused=True,
    )


def build_deepspeed_config(
    cfg: TrainConfig, world_size: int, total_steps: int, on_gpu: bool
) -> dict[str, Any]:
    ds = cfg.deepspeed
    prec = precision(cfg, on_gpu)
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage >= 2:
        zero.update({"overlap_comm": on_gpu, "contiguous_gradients": True})
    if ds.zero_stage == 3:
        # Without it, a ZeRO-3 save of LoRA adapters is empty (STACK.md).
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if ds.offload_optimizer and ds.zero_stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.optim.per_device_batch_size,
        "gradient_accumulation_steps": cfg.optim.gradient_accumulation_steps,
        "train_batch_size": cfg.optim.per_device_batch_size
        * cfg.optim.gradient_accumulation_steps
        * world_size,
        "gradient_clipping": cfg.optim.max_grad_norm,
        "scheduler": scheduler(cfg, total_steps),
        "zero_optimization": zero,
        "bf16": {"enabled": prec == "bf16" and on_gpu},
        "fp16": {"enabled": prec == "fp16"},
        "zero_allow_untested_optimizer": True,
        "wall_clock_breakdown": False,
        "steps_per_print": 10**9,
    }
    if ds.offload_optimizer and ds.zero_stage >= 1:  # no client optimizer (client_optimizer)
        config["optimizer"] = {
            "type": "AdamW",
            # torch's AdamW: no compiled op, so no nvcc/CPU-op build on any machine.
            "params": {
                "lr": cfg.optim.learning_rate,
                "weight_decay": cfg.optim.weight_decay,
                "torch_adam": True,
                "adam_w_mode": True,
                "foreach": True,
            },
        }
    return config
