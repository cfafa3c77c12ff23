"""How much the demo trains on this machine: measured, not assumed.

`biogner demo` promises a first look within a time budget (20 minutes) on the machine it runs
on, and machines differ: a CPU without native bf16 (AVX2 only, most laptops) scores ~2x
slower than one with AVX512-BF16/AMX, and two cores are not sixteen. Before training, `probe`
times the demo model's forward and forward+backward passes at the demo's shapes, in the
precision training and generation will use here (a few seconds), and `choose_plan` picks the
largest preset whose estimate fits the budget less a margin: both writings at the preset's
steps, then fewer steps, then one writing. The estimate's constants come from timed demos
(bench/RESULTS.md#demo).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from biogner.generation.packed import pack_linears

# Fitted on timed demos (bench/RESULTS.md#demo), one pair per kind of
# matmul unit (`kernels`): the probe's large forward gains far more from AMX tiles than the
# decode loop's small passes do, so one constant per arithmetic overestimated scoring on an
# AMX box or underestimated it 2x elsewhere. A real optimizer step (8 sentences, padding,
# AdamW, DeepSpeed) takes TRAIN_STEP_PER_PROBE times the probe's forward+backward; whole-split
# scoring (two one-thread actors, constrained, answers capped at 48 tokens, the actors' start
# included; the demo's two term writings) runs SCORE_RATE_X_PROBE / (forward probe seconds)
# sentences/s, the probe's Linear weights packed as scoring's are.
#   amx (2-core Xeon, amx_bf16, 2026-12-05): probe 1.51 / 0.240 s (forward unpacked); step
#     2.13 s, 14.4 sentences/s. Its scoring constant is that run's 3.4 less 10 %: packed, its
#     forward would be a little faster (not measured there; that box is gone).
#   avx512_bf16 (2-core EPYC, no AMX, 2026-12-06): probe 2.59 / 0.634 s; step 2.91 s, 13.2
#     sentences/s (8.4 x probe); fitted at 90 % of the rate, a margin for boxes that differ.
#   fp32 (the EPYC capped to AVX2: BIOGNER_CPU_BF16=0 ATEN_CPU_CAPABILITY=avx2
#     ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2, 2026-12-06): probe 4.27 / 1.17 s;
#     step ~4.2 s, 6.5 sentences/s (7.7 x probe); fitted at 90 %, the step kept at the 1.1
#     of the first capped run (the Xeon's: 2.98 s against 2.72).
TRAIN_STEP_PER_PROBE = {"amx": 1.4, "avx512_bf16": 1.15, "fp32": 1.1}
SCORE_RATE_X_PROBE = {"amx": 3.0, "avx512_bf16": 7.5, "fp32": 6.9}
FIXED_S = 45.0  # Ray start and the probe, convert, choose, report, serve and query
PER_FORMAT_S = 40.0  # Ray Train + DeepSpeed start, export and logging
PROBE_SHAPE = (8, 96)  # a demo batch: 8 sentences of a term writing's prompt and answer
# the share of the budget a plan leaves free: the probe's own spread between runs on one box
# (forward 1.11-1.42 s on the capped EPYC, the slowest right after a fresh venv's install)
MARGIN = 0.1
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
    amx: bool = False  # bf16 matmuls on AMX tiles

    @property
    def kernels(self) -> str:
        """What computes the matmuls: `amx`, `avx512_bf16` or `fp32`."""
        if not self.bf16:
            return "fp32"
        return "amx" if self.amx else "avx512_bf16"

    @property
    def train_step_s(self) -> float:
        return TRAIN_STEP_PER_PROBE[self.kernels] * self.train_probe_s

    @property
    def score_rate(self) -> float:
        """Whole-split scoring, sentences/s."""
        return SCORE_RATE_X_PROBE[self.kernels] / self.forward_probe_s


@dataclass(frozen=True)
class Plan:
    formats: tuple[str, ...]
    steps: int
    estimate_s: float
    budget_s: float

    @property
    def fits(self) -> bool:
        """The estimate leaves MARGIN of the budget free."""
        return self.estimate_s <= (1 - MARGIN) * self.budget_s


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


def probe(model: Any, bf16: bool, threads: int, amx: bool = False) -> Speed:
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
    return Speed(train_s, forward_s, bf16, threads, amx=bf16 and amx)


def describe(plan: Plan, speed: Speed, preset_formats: Sequence[str], preset_steps: int) -> str:
    """The console lines that say what the demo measured and chose, and why."""
    arithmetic = {
        "amx": "bf16 (native, AMX)",
        "avx512_bf16": "bf16 (native)",
        "fp32": "fp32 (no native bf16: AVX2-class CPU)",
    }[speed.kernels]
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
