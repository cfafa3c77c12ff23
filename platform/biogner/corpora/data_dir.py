"""Where the built-in corpora's files are: one rule for every command and worker."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "BIOGNER_DATA_DIR"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $BIOGNER_DATA_DIR, else ../shared/data/bioner if it exists, else
    .biogner/data (where `biogner data download` puts files)."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    repo_root = Path(__file__).resolve().parents[3]
    for candidate in (
        Path.cwd() / ".." / "shared" / "data" / "bioner",
        repo_root.parent / "shared" / "data" / "bioner",
    ):
        if candidate.is_dir():
            return candidate.resolve()
    return Path(".biogner") / "data"
