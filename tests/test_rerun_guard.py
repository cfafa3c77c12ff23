"""`biogner train` with a FINISHED run's name: refused when the config changed (no Ray here).

Runs are left in a real SQLite store the way `run_training` leaves them (`start_run` with the
resolved config as params, resume=True); the Ray Train storage folder is a plain folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow_store import make_cfg

from biogner.config import ConfigError, load_config, to_yaml
from biogner.tracking.runs import end_run, resume_run_id, runs_named, start_run
from biogner.tracking.tags import KIND_TAG, TRAIN_KIND
from biogner.train.config import TrainConfig
from biogner.train.driver import drop_local_checkpoints
from biogner.train.rerun import RerunConflict, check_rerun


def train_cfg(store: Path, name: str, *overrides: str) -> TrainConfig:
    tracking_cfg = make_cfg(store, "reruns")
    return load_config(
        TrainConfig,
        None,
        [
            f"run_name={name}",
            f"tracking.tracking_uri={tracking_cfg.uri}",
            f"tracking.artifact_root={tracking_cfg.artifact_root}",
            f"tracking.experiment={tracking_cfg.experiment}",
            f"scaling.storage_path={store / 'ray'}",
            *overrides,
        ],
    )


def leave_run(cfg: TrainConfig, status: str = "FINISHED") -> str:
    """A training run as the driver leaves it, with Ray Train's folder for its name."""
    run_id = start_run(
        cfg.tracking,
        cfg.run_name,
        tags={KIND_TAG: TRAIN_KIND},
        params=cfg.model_dump(mode="json"),
        config_yaml=to_yaml(cfg),
        resume=True,
    )
    error = None if status == "FINISHED" else KeyboardInterrupt("stopped")
    end_run(cfg.tracking, run_id, error)
    (Path(cfg.scaling.storage_path) / cfg.run_name / "checkpoint_000001").mkdir(parents=True)
    return run_id


def test_a_finished_run_name_with_a_new_learning_rate_is_refused(store: Path) -> None:
    old = train_cfg(store, "lr-change", "optim.learning_rate=0.0001")
    run_id = leave_run(old)
    new = train_cfg(store, "lr-change", "optim.learning_rate=0.0003", "optim.max_steps=7")

    with pytest.raises(RerunConflict) as caught:
        check_rerun(new)
    message = str(caught.value)
    assert "'lr-change'" in message and run_id in message and "FINISHED" in message
    assert "optim.learning_rate: 0.0001 -> 0.0003" in message
    assert "optim.max_steps: null -> 7" in message
    assert "new run_name" in message and str(store / "ray" / "lr-change") in message
    assert [r.info.run_id for r in runs_named(new.tracking, "lr-change")] == [run_id]


def test_an_identical_or_relocated_rerun_of_a_finished_run_passes(store: Path) -> None:
    cfg = train_cfg(store, "same", "optim.learning_rate=0.0001")
    leave_run(cfg)
    check_rerun(cfg)
    check_rerun(
        cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"cpus_per_worker": 3})})
    )


def test_an_unfinished_run_with_the_same_config_still_resumes(store: Path) -> None:
    cfg = train_cfg(store, "killed")
    run_id = leave_run(cfg, status="KILLED")
    check_rerun(cfg)
    assert resume_run_id(cfg.tracking, "killed") == run_id


def test_a_changed_config_without_ray_storage_trains_afresh(store: Path) -> None:
    old = train_cfg(store, "wiped", "optim.learning_rate=0.0001")
    leave_run(old)
    (Path(old.scaling.storage_path) / "wiped" / "checkpoint_000001").rmdir()
    (Path(old.scaling.storage_path) / "wiped").rmdir()  # the user deleted the storage folder
    check_rerun(train_cfg(store, "wiped", "optim.learning_rate=0.0003"))


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs", "-flag", "a\\b"])
def test_a_run_name_that_could_name_another_folder_is_refused(name: str, tmp_path: Path) -> None:
    """The finished-run clean-up deletes `<storage_path>/<run_name>`: an empty name or `.`
    would be the storage root (every other run's checkpoints), `..`-forms a folder beside it."""
    with pytest.raises(ConfigError, match="run_name"):
        load_config(TrainConfig, None, [f"run_name={name}", f"scaling.storage_path={tmp_path}"])


@pytest.mark.parametrize("name", ["", ".", "..", "../sibling"])
def test_the_clean_up_deletes_only_the_runs_own_folder(name: str, tmp_path: Path) -> None:
    """Even given a config that skipped validation, nothing but `<root>/<run_name>` goes."""
    root = tmp_path / "ray"
    other = root / "another-run"  # an unfinished run's checkpoints
    other.mkdir(parents=True)
    (other / "checkpoint_000001").mkdir()
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    cfg = load_config(TrainConfig, None, [f"scaling.storage_path={root}"])
    unchecked = cfg.model_copy(update={"run_name": name})
    assert drop_local_checkpoints(unchecked) is False
    assert (other / "checkpoint_000001").is_dir() and sibling.is_dir()
    own = load_config(TrainConfig, None, [f"scaling.storage_path={root}", "run_name=mine"])
    (root / "mine" / "checkpoint_000002").mkdir(parents=True)
    assert drop_local_checkpoints(own) is True
    assert not (root / "mine").exists() and other.is_dir()
