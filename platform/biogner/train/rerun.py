"""May a run name be reused? A FINISHED run's name with another training config is refused.

Why: Ray Train restores `<storage_path>/<run_name>` whatever the config says, and a sweep
would report the old run's scores under the new budget. Only where files live may differ.
"""

from __future__ import annotations

from pathlib import Path

from biogner.tracking.runs import flatten_params, runs_named
from biogner.train.config import TrainConfig

# Where a run's files live may change between reruns; what was trained may not.
LOCATION_PARAMS = ("tracking.", "scaling.", "data.data_dir", "data.converted_dir")


def changed_params(run_params: dict[str, str], now: dict[str, str]) -> list[str]:
    """Keys of the flattened training config `now` whose value differs from what a finished
    run was trained with (`run_params`), locations aside."""
    return sorted(
        k
        for k, v in now.items()
        if not k.startswith(LOCATION_PARAMS) and k in run_params and run_params[k] != v
    )


class RerunConflict(ValueError):
    """`run_name` names a FINISHED run trained with another config (see `check_rerun`)."""


def ray_run_folder(cfg: TrainConfig) -> Path:
    """Where Ray Train keeps this run's checkpoints: `<storage_path>/<run_name>`."""
    return Path(cfg.scaling.storage_path).resolve() / cfg.run_name


def check_rerun(cfg: TrainConfig) -> None:
    """Raise RerunConflict when cfg reuses a FINISHED run's name with another config.

    Ray Train restores `<storage_path>/<run_name>` whatever the config says: the finished run's
    final checkpoint would train 0 steps and its old weights be logged under the new params.
    An unfinished run of the name resumes, and an identical rerun is harmless (as before).
    """
    runs = runs_named(cfg.tracking, cfg.run_name)
    storage = ray_run_folder(cfg)
    if not runs or any(r.info.status != "FINISHED" for r in runs) or not storage.exists():
        return  # a new run, a resumed one, or nothing for Ray to restore
    old = runs[0].data.params
    new = flatten_params(cfg.model_dump(mode="json"))
    changed = changed_params(old, new)
    if changed:
        diff = "\n".join(f"  {k}: {old[k]} -> {new[k]}" for k in changed)
        raise RerunConflict(
            f"run_name {cfg.run_name!r} is MLflow run {runs[0].info.run_id}, FINISHED with "
            f"another config:\n{diff}\nRay Train would restore its final checkpoint from "
            f"{storage} and train 0 steps. Choose a new run_name (run_name=...), or delete "
            f"MLflow run {runs[0].info.run_id} and the folder {storage} to train it again."
        )
