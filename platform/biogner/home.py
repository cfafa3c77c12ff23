"""Where biogner keeps its state: `<BIOGNER_HOME or the current directory>/.biogner/`.

Why a module of its own, standard library only: the tracking store (`tracking.config`) and
the registered corpus cards (`corpora.registry`) both live there, and the corpora sit below
tracking; both read the one rule here.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "BIOGNER_HOME"


def biogner_home() -> Path:
    """The directory holding `.biogner/` (env BIOGNER_HOME, else the current directory)."""
    return Path(os.environ.get(HOME_ENV) or os.getcwd()).resolve()
