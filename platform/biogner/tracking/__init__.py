"""MLflow tracking for biogner, one module per job (import the one you need):

- `config`: `TrackingConfig`, where runs and models go (pydantic only);
- `tags`: the tag vocabulary that runs are written and read with;
- `uris`: the `models:/` / `runs:/` URI parser (no MLflow);
- `runs`: experiments and runs, addressed by id (Ray workers log by run id);
- `models`: trained models logged as MLflow models (plain files, no pickles; the pyfunc
  itself is `biogner.pyfunc`), and back to a local folder;
- `registry`: versions, aliases, and what a `models:/` URI points to;
- `open`: a model URI resolved once, downloaded and its card read (open_model).

Nothing is imported here, so `biogner.tracking.config` and `.tags` never load MLflow.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    # Models logged before `tracking` became a package load through
    # `from biogner.tracking import BiognerHFModel` (their pyfunc code file): keep it working.
    if name == "BiognerHFModel":
        return importlib.import_module("biogner.pyfunc.model").BiognerHFModel
    raise AttributeError(f"module 'biogner.tracking' has no attribute {name!r}")
