"""How the study's tables write what they hold: a number or the word for its absence, an F1's
bootstrap interval, and the paired test a comparison table takes.

Why one module: the report's tables (`report`, `mixes`, `turns`) and the selection's ranking
(`select`) write the same values; written once, they write them the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from biogner.study.results import RunResult

MISSING = "-"  # no run for this cell, or no value
NOT_AVAILABLE = "n/a"  # cannot be computed (corpus files absent, unknown format)

# (a, b) -> (P(a better than b), sentences compared) by paired bootstrap; None: not comparable
PairedTest = Callable[[RunResult, RunResult], "tuple[float, int] | None"]


def num(value: float | None, spec: str = ".4f", missing: str = MISSING) -> str:
    """`value` formatted by `spec`, or `missing` when there is none."""
    return missing if value is None else format(value, spec)


def pair(a: float | None, b: float | None, spec: str) -> str:
    """Two measures side by side (`a / b`), each `n/a` when it was not measured."""
    return f"{num(a, spec, NOT_AVAILABLE)} / {num(b, spec, NOT_AVAILABLE)}"


def interval(r: RunResult) -> str:
    """` [low, high]`: the run's 95 % bootstrap interval of F1; empty when it has none."""
    if r.f1_low is None or r.f1_high is None:
        return ""
    return f" [{r.f1_low:.3f}, {r.f1_high:.3f}]"
