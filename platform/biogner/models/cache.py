"""The model cache: built and converted models, written once under a file lock.

Conversion writes a temporary directory and renames it into place under a lock, so
concurrent workers (every Ray worker resolves the same spec) never see a half-written copy.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_ENV = "BIOGNER_CACHE"
BUILD_MARKER = "biogner-build.json"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where converted/built models live: `cache_dir`, else $BIOGNER_CACHE/models, else
    ~/.cache/biogner/models."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "models"
    return Path.home() / ".cache" / "biogner" / "models"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_build(target: Path, build: Callable[[Path], None], source: Mapping[str, Any]) -> Path:
    """Return `target`, building it first with `build(tmp_dir)` when absent.

    The build writes into a temporary sibling that is renamed into place, under a lock, so
    a reader sees either nothing or a complete directory, and only one process builds.
    """
    if (target / BUILD_MARKER).is_file():
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / BUILD_MARKER).is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            build(tmp)
            (tmp / BUILD_MARKER).write_text(json.dumps(dict(source), indent=2, sort_keys=True))
            if target.exists():  # a stale, unmarked leftover (e.g. an interrupted old build)
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
