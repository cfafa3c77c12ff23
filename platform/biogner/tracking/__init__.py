"""MLflow tracking for biogner, one module per job (import the one you need):

- `config`: `TrackingConfig`, where runs and models go (pydantic only);
- `tags`: the tag vocabulary that runs are written and read with;
- `uris`: the `models:/` / `runs:/` URI parser (no MLflow);
- `runs`: experiments and runs, addressed by id (Ray workers log by run id);
- `models`: trained models as MLflow models (plain files, no pickles), and back;
- `registry`: versions, aliases, and what a `models:/` URI points to.

Nothing is imported here, so `biogner.tracking.config` and `.tags` never load MLflow.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Models logged before `tracking` became a package load through
    # `from biogner.tracking import BiognerHFModel` (their pyfunc code file): keep it working.
    if name == "BiognerHFModel":
        from biogner.tracking.models import BiognerHFModel

        return BiognerHFModel
    raise AttributeError(f"module 'biogner.tracking' has no attribute {name!r}")
