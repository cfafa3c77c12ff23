"""Shared helpers for the benchmarks: a printed table and a JSON record of the run."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def cpu_flags() -> list[str]:
    """The CPU's vector flags (avx*, amx*): whether a speed figure is a bf16-capable or an
    AVX2-only machine's."""
    from biogner.models.load import cpu_flags as all_flags  # (torch: imported when asked)

    return sorted(f for f in all_flags() if f.startswith(("avx", "amx")))


def command(module: str, argv: Sequence[str] | None) -> str:
    """How a run was started, for its JSON record: `python -m <module>` and its arguments
    (`argv`, or the command line's where `main` was called without)."""
    return " ".join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(f"{{:>{w}}}" for w in widths)
    out = [line.format(*columns), line.format(*("-" * w for w in widths))]
    out += [line.format(*row) for row in cells]
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def write_json(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path
