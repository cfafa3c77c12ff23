"""How much the demo trains on this machine: measured, not assumed.

`biogner demo` promises a first look within a time budget (20 minutes) on the machine it runs
on, and machines differ: a CPU without native bf16 (AVX2 only, most laptops) scores ~2x
slower than one with AVX512-BF16/AMX, and two cores are not sixteen. Before training, `probe`
times the demo model's forward and forward+backward passes at the demo's shapes, in the
precision training and generation will use here (a few seconds), and `choose_plan` picks the
largest preset whose estimate fits the budget: both writings at the preset's steps, then
fewer steps, then one writing. The estimate's constants come from timed demos (RESULTS).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from biogner.generation.packed import pack_linears

# Fitted on the timed demos of 2026-12-05 (bench/RESULTS.md, "The demo on its time budget"),
# one per arithmetic, since the probe tracks a real step and a real scoring pass differently
# in each: a real optimizer step (8 sentences, padding, AdamW, DeepSpeed) takes
# TRAIN_STEP_PER_PROBE times the probe's forward+backward; whole-split scoring (two one-thread
# actors, constrained, answers capped at 48 tokens, the actors' start included) runs
# SCORE_RATE_X_PROBE / (forward probe seconds) sentences/s.
#   bf16 (2-core AVX512-BF16/AMX box): probe 1.51 / 0.240 s; step 2.13 s, 14.4 sentences/s
#   fp32 (the same box capped to AVX2, BIOGNER_CPU_BF16=0 ATEN_CPU_CAPABILITY=avx2
#   ONEDNN_MAX_CPU_ISA=AVX2): probe 2.72 / 0.788 s; step 2.98 s, 6.4 sentences/s
TRAIN_STEP_PER_PROBE = {True: 1.4, False: 1.1}
SCORE_RATE_X_PROBE = {True: 3.4, False: 5.0}
FIXED_S = 45.0  # Ray start and the probe, convert, choose, report, serve and query
PER_FORMAT_S = 40.0  # Ray Train + DeepSpeed start, export and logging
PROBE_SHAPE = (8, 96)  # a demo batch: 8 sentences of a term writing's prompt and answer
MIN_STEPS_TWO_WRITINGS = 60  # below this a second writing buys less than training the first
MIN_STEPS = 40
STEP_DECREMENT = 10


@dataclass(frozen=True)
class Speed:
    """This machine's speed at the demo's shapes, in seconds per pass (best of three: a
    transient spike of other work must not shrink the demo)."""

    train_probe_s: float  # forward + backward, the training precision
    forward_probe_s: float  # forward only, the generation precision
    bf16: bool
    threads: int

    @property
    def train_step_s(self) -> float:
        return TRAIN_STEP_PER_PROBE[self.bf16] * self.train_probe_s

    @property
    def score_rate(self) -> float:
        """Whole-split scoring, sentences/s."""
        return SCORE_RATE_X_PROBE[self.bf16] / self.forward_probe_s


@dataclass(frozen=True)
class Plan:
    formats: tuple[str, ...]
    steps: int
    estimate_s: float
    budget_s: float

    @property
    def fits(self) -> bool:
        return self.estimate_s <= self.budget_s


def estimate_s(formats: int, steps: int, speed: Speed, n_dev: int, n_test: int) -> float:
    """The demo's wall time: fixed stages, each writing trained and scored on dev, the
    champion scored on test."""
    per_format = PER_FORMAT_S + steps * speed.train_step_s + n_dev / speed.score_rate
    return FIXED_S + formats * per_format + n_test / speed.score_rate


def choose_plan(
    formats: Sequence[str], steps: int, speed: Speed, n_dev: int, n_test: int, budget_s: float
) -> Plan:
    """The first option that fits, in this order: every writing at `steps`, fewer steps (down
    to MIN_STEPS_TWO_WRITINGS), then the first writing alone at `steps` down to MIN_STEPS.
    Nothing fits: the smallest option, which says it does not (`Plan.fits`)."""
    options: list[tuple[tuple[str, ...], int]] = []
    if len(formats) > 1:
        low = min(steps, MIN_STEPS_TWO_WRITINGS)
        options += [(tuple(formats), s) for s in range(steps, low - 1, -STEP_DECREMENT)]
    low = min(steps, MIN_STEPS)
    options += [((formats[0],), s) for s in range(steps, low - 1, -STEP_DECREMENT)]
    plans = [Plan(f, s, estimate_s(len(f), s, speed, n_dev, n_test), budget_s) for f, s in options]
    return next((p for p in plans if p.fits), plans[-1])


def _best_s(run: Callable[[], object], repeats: int = 3) -> float:
    run()  # warm-up: allocator, oneDNN kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def probe(model: Any, bf16: bool, threads: int) -> Speed:
    """Time the demo's passes on `model` (training mode, fp32 weights, as training loads it):
    forward+backward under bf16 autocast where the CPU has it (as training runs), forward in
    the generation dtype (bf16 weights where native) with its Linear weights packed as the
    `Generator` packs them, so that the forward is timed on the kernels scoring runs on (MKL
    and oneDNN differ by machine and by how a box is capped). Leaves `model` packed: a model
    loaded for the probe only."""
    batch, length = PROBE_SHAPE
    vocab = int(model.config.vocab_size)
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)

    def autocast() -> AbstractContextManager[object]:
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def train_pass() -> None:
        with autocast():
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    try:
        model.train()
        train_s = _best_s(train_pass)
        model.eval()
        if bf16:
            model.to(torch.bfloat16)
        pack_linears(model)
        with torch.inference_mode():
            forward_s = _best_s(lambda: model(input_ids=ids))
    finally:
        torch.set_num_threads(previous)
    return Speed(train_s, forward_s, bf16, threads)


def describe(plan: Plan, speed: Speed, preset_formats: Sequence[str], preset_steps: int) -> str:
    """The console lines that say what the demo measured and chose, and why."""
    arithmetic = "bf16 (native)" if speed.bf16 else "fp32 (no native bf16: AVX2-class CPU)"
    lines = [
        f"    this machine: {arithmetic}, {speed.threads} threads; a training step of 8 "
        f"sentences ~{speed.train_step_s:.1f} s, scoring ~{speed.score_rate:.1f} sentences/s",
    ]
    full = plan.formats == tuple(preset_formats) and plan.steps == preset_steps
    each = " each" if len(plan.formats) > 1 else ""
    chosen = f"{' and '.join(plan.formats)}, {plan.steps} steps{each}"
    budget = f"{plan.estimate_s / 60:.0f} of its {plan.budget_s / 60:.0f} minutes"
    if full:
        lines.append(f"    plan: the full demo ({chosen}), estimated {budget}")
    elif plan.fits:
        lines.append(
            f"    plan: {chosen} (the full demo trains {' and '.join(preset_formats)} "
            f"{preset_steps} steps each, estimated over budget here), estimated {budget}"
        )
    else:
        lines.append(
            f"    plan: the smallest demo ({chosen}) is estimated at {budget} on this machine; "
            "it runs anyway (--budget-minutes 0 runs the full demo)"
        )
    return "\n".join(lines)
