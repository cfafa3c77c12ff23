"""The trained model out of a DeepSpeed engine: an HF directory with merged weights.

Under ZeRO-3 each rank holds a slice of every weight; the whole state dict is gathered with
DeepSpeed's public `zero.GatheredParameters`, one module at a time (as DeepSpeed's own
16-bit save does, so at most one layer is whole at once), not with the engine's private
`_zero3_consolidated_16bit_state_dict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from biogner.models.load import load_model
from biogner.train.config import TrainConfig


def gathered_state_dict(module: torch.nn.Module, rank: int) -> dict[str, torch.Tensor] | None:
    """A ZeRO-3 module's whole state dict in fp32 on the CPU on rank 0 (None on the others).

    Every rank must call it: each module's parameters are gathered from all ranks, and a
    gather entered by rank 0 alone hangs. Buffers are not partitioned: `state_dict()` has
    them whole, and names every key (tied weights under each of their names)."""
    import deepspeed

    gathered: dict[str, torch.Tensor] = {}
    for prefix, sub in module.named_modules(remove_duplicate=False):
        params = list(sub.named_parameters(prefix=prefix, recurse=False))
        if not params:
            continue
        with deepspeed.zero.GatheredParameters([p for _, p in params]):
            if rank == 0:  # copies: the gathered tensors are freed when the block ends
                for name, p in params:
                    gathered[name] = p.detach().to("cpu", torch.float32, copy=True)
    if rank != 0:
        return None
    state = module.state_dict()
    return {k: gathered.get(k, v.detach().to("cpu", torch.float32)) for k, v in state.items()}


def full_state_dict(engine: Any, cfg: TrainConfig, rank: int) -> dict[str, torch.Tensor] | None:
    """The engine's model weights in fp32 on the CPU, on rank 0 (None on the others); every
    rank calls it (under ZeRO-3 it is a collective)."""
    if cfg.deepspeed.zero_stage == 3:
        return gathered_state_dict(engine.module, rank)
    if rank != 0:
        return None
    return {k: v.detach().to("cpu", torch.float32) for k, v in engine.module.state_dict().items()}


def export_model(engine: Any, cfg: TrainConfig, tokenizer: Any, out: Path, rank: int) -> None:
    """Write the trained model as an HF directory (merged weights + tokenizer) on rank 0.

    Every rank must call this: under ZeRO-3 the weights are gathered collectively, and a
    save entered by rank 0 alone hangs."""
    state = full_state_dict(engine, cfg, rank)
    if state is None:
        return
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
