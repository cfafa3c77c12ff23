"""Cheaper arithmetic for generation on a CPU: dynamic int8 quantization of the Linear layers.

Not lossless (weights rounded to int8 per output channel, activations per batch), so it is
an option (`generation.quantize: int8`), measured on whole dev in bench/RESULTS.md, never a
silent default. fp32 models only: torch's dynamic quantization has no bf16 kernels.
"""

from __future__ import annotations

import torch


def quantize(model: torch.nn.Module, mode: str, device: torch.device) -> torch.nn.Module:
    if mode != "int8":
        raise ValueError(f"generation.quantize: unknown mode {mode!r} (none, int8)")
    if device.type != "cpu":
        raise ValueError(f"generation.quantize: int8 runs on a CPU only (device is {device})")
    if next(model.parameters()).dtype != torch.float32:
        raise ValueError("generation.quantize: int8 needs fp32 weights (generation.dtype=float32)")
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
