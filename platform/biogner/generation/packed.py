"""Linear layers with their weights packed once for the CPU's matmul kernel.

On a CPU torch computes a bf16 Linear with oneDNN from the plain weight, which oneDNN reorders
into its blocked layout on every call. At the shapes of the decode loop's small passes (a
lone request feeds one row of 1-30 tokens) that is a large part of the call, and a pass of
SmolLM2-135M makes 210 Linear calls: packed once, a lone request's one-row pass went from
~46 to ~31 ms on a 2-core CPU (bench/results/archive/generation.md, "Packed Linear weights").
`torch.ops.mkldnn._reorder_linear_weight`
packs the weight when the model is loaded and `_linear_pointwise` multiplies with it: the
same oneDNN kernel on the same operands, so a bf16 model's outputs are bitwise those of the
unpacked one (tests/test_packed.py).

An fp32 Linear is computed by MKL unpacked and by oneDNN packed: another summation order,
equal up to rounding (on whole NCBI-disease dev no answer of 923 changed, and on an AVX2
CPU the packed loop ran faster: bench/RESULTS.md#generation-speed). fp32 weights are packed
on x86-64 only, where that was measured; elsewhere (an ARM laptop's BLAS) torch computes
them as it does.

CPU only, and only where this torch has oneDNN: elsewhere the model is left as it is.
"""

from __future__ import annotations

import platform

import torch

# where oneDNN's packed fp32 kernel was measured against torch's own (MKL) path
FP32_MACHINES = ("x86_64", "amd64")


def available() -> bool:
    """Whether this torch can pack Linear weights for oneDNN."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(
        torch.ops.mkldnn, "_linear_pointwise"
    )


class PackedLinear(torch.nn.Module):
    """A Linear layer for inference whose weight is held in oneDNN's packed layout."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach()
        # the packed layout's hint: a pass's rows times its width, a few dozen tokens
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 64)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.weight_dtype = weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.weight_dtype:  # not a call the packed kernel serves
            raise TypeError(f"PackedLinear holds {self.weight_dtype} weights, got {x.dtype} input")
        return torch.ops.mkldnn._linear_pointwise(  # type: ignore[no-any-return]
            x.contiguous(), self.packed, self.bias, "none", [], ""
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed"


def packed_dtypes(machine: str | None = None) -> tuple[torch.dtype, ...]:
    """The weight dtypes packed on this `machine` (`platform.machine()`): bf16 everywhere,
    fp32 where it was measured (x86-64)."""
    machine = (machine or platform.machine()).lower()
    return (torch.bfloat16, torch.float32) if machine in FP32_MACHINES else (torch.bfloat16,)


def pack_linears(model: torch.nn.Module, dtypes: tuple[torch.dtype, ...] | None = None) -> int:
    """Replace the model's Linear layers (the LM head included) by packed ones, for
    inference on a CPU; returns how many were packed (0: not applicable, model unchanged).
    `dtypes`: the weight dtypes to pack (default `packed_dtypes()`)."""
    if not available():
        return 0
    dtypes = packed_dtypes() if dtypes is None else dtypes
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear
        and child.weight.device.type == "cpu"
        and child.weight.dtype in dtypes
    ]
    for parent, name, child in targets:
        setattr(parent, name, PackedLinear(child))
    return len(targets)


def weights_in(module: torch.nn.Module) -> int:
    """How many weights `module` holds, its packed Linear layers' included (they are no
    parameters): what a forward pass computes with, for FLOP counts."""
    packed = sum(
        m.packed.numel() + (0 if m.bias is None else m.bias.numel())
        for m in module.modules()
        if isinstance(m, PackedLinear)
    )
    return packed + sum(p.numel() for p in module.parameters())
