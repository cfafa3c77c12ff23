"""Published reference scores ("anchors") a report shows beside a model's own.

Kept in a YAML file, not in code: which papers to compare with is the reader's choice, and
figures get corrected. Layout: `{source: {row: f1}}`, a row being a corpus (`NCBI-disease`)
or one type of a corpus (`BC5CDR-chem`, or `JNLPBA/protein`); F1 as a fraction or a percentage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Anchors:
    """F1 per source and row, the sources in the file's order (the report's columns)."""

    sources: tuple[str, ...]
    f1: dict[str, dict[str, float]]  # source -> row -> F1 (0-1)

    def get(self, source: str, row: str) -> float | None:
        return self.f1.get(source, {}).get(row)


def load_anchors(path: str | Path) -> Anchors:
    """Read an anchors file; a bad entry is a ValueError naming the file and the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read anchors ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must map a source to its scores")
    f1: dict[str, dict[str, float]] = {}
    for source, rows in data.items():
        if not isinstance(rows, dict):
            raise ValueError(f"{path}: {source}: must map corpus names to F1")
        for row, value in rows.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{path}: {source}.{row}: F1 must be a number, got {value!r}")
            score = float(value) / 100 if value > 1 else float(value)
            if not 0 <= score <= 1:
                raise ValueError(f"{path}: {source}.{row}: F1 {value} is not in [0, 1] or [0, 100]")
            f1.setdefault(str(source), {})[str(row)] = score
    return Anchors(tuple(f1), f1)
