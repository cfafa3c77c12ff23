"""What one optimizer step of a worker measured, the same on every rank: the mean loss over
ranks, and tokens/s and padding summed over them."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist


def _all_mean(values: list[float]) -> list[float]:
    """Mean over ranks (a collective: every rank calls it the same number of times)."""
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl":
            t = t.to(torch.device("cuda"))
        dist.all_reduce(t)
        t = t.cpu() / dist.get_world_size()
    return t.tolist()


def _all_sum(values: list[float]) -> list[float]:
    if dist.is_available() and dist.is_initialized():
        return [v * dist.get_world_size() for v in _all_mean(values)]
    return values


class StepMeter:
    """One optimizer step's micro-batches: their loss, real and padded tokens, and the time
    since the meter was last reset (the previous step's end, its checkpoint included)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss_sum = 0.0
        self.micro = 0
        self.real = 0
        self.padded = 0
        self.since = time.perf_counter()

    def add(self, loss: float, real: int, padded: int) -> None:
        self.loss_sum += loss
        self.micro += 1
        self.real += real
        self.padded += padded

    def summary(self) -> dict[str, float]:
        """The step's mean loss over ranks, tokens/s and padding ratio summed over ranks
        (collectives: every rank calls it once per step)."""
        (mean_loss,) = _all_mean([self.loss_sum / self.micro])
        real_all, padded_all = _all_sum([self.real, self.padded])
        elapsed = time.perf_counter() - self.since
        return {
            "loss": mean_loss,
            "tokens_per_s": real_all / elapsed if elapsed else 0.0,
            "padding_ratio": 1.0 - real_all / padded_all if padded_all else 0.0,
        }
