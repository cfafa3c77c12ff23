"""Cheaper arithmetic for generation on a CPU: dynamic int8 quantization of the Linear layers.

Not lossless, so it is an option (`generation.quantize: int8`), measured on whole dev in
bench/results/archive/generation.md, "Before and after, whole dev, batch 64", never a silent
default. The body's Linear layers get int8 weights rounded
per output channel (torch's default rounds per tensor) and activations quantized per call
(fbgemm: one scale for the whole batch input); the LM head keeps its fp32 weights (the
choice between two close tokens is made there: int8 there cost the reference model 0.02
dev F1 more). fp32 models only: torch's dynamic quantization has no bf16 kernels.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel


def quantize(model: PreTrainedModel, mode: str, device: torch.device) -> PreTrainedModel:
    """`model` with its body's Linear layers dynamically quantized to int8 (`mode`)."""
    if mode != "int8":
        raise ValueError(f"generation.quantize: unknown mode {mode!r} (none, int8)")
    if device.type != "cpu":
        raise ValueError(f"generation.quantize: int8 runs on a CPU only (device is {device})")
    if next(model.parameters()).dtype != torch.float32:
        raise ValueError("generation.quantize: int8 needs fp32 weights (generation.dtype=float32)")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    head = model.get_output_embeddings()
    body = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear and module is not head
    }
    return quantize_dynamic(model, body, dtype=torch.qint8)  # type: ignore[no-any-return]
