"""One live driver per run name (#29 item 11): the heartbeat lease on the MLflow run (a real
SQLite store, no Ray)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mlflow_store import make_cfg
from support import wait_until

from biogner.config import load_config
from biogner.tracking.runs import client_for, end_run, start_run
from biogner.train.config import TrainConfig
from biogner.train.driver import run_training
from biogner.train.lease import HEARTBEAT_TAG, LiveRunConflict, RunLease, check_live


def test_a_live_run_refuses_a_second_driver_until_released(store: Path) -> None:
    cfg = make_cfg(store, "lease")
    run_id = start_run(cfg, "one-name")
    lease = RunLease(cfg, run_id, period_s=0.05).acquire(settle_s=0.01)
    first = client_for(cfg).get_run(run_id).data.tags[HEARTBEAT_TAG]
    # it keeps beating: a later heartbeat replaces the one `acquire` wrote
    wait_until(lambda: client_for(cfg).get_run(run_id).data.tags[HEARTBEAT_TAG] != first)
    with pytest.raises(LiveRunConflict, match="'one-name' is live: MLflow run"):
        check_live(cfg, "one-name")
    lease.release()
    check_live(cfg, "one-name")  # a released run resumes
    assert client_for(cfg).get_run(run_id).data.tags[HEARTBEAT_TAG] == "released"
    end_run(cfg, run_id)


def test_a_crashed_drivers_stale_heartbeat_frees_the_name(store: Path) -> None:
    cfg = make_cfg(store, "lease")
    run_id = start_run(cfg, "crashed")
    client_for(cfg).set_tag(run_id, HEARTBEAT_TAG, f"{time.time() - 600:.3f} host:1:dead")
    check_live(cfg, "crashed")  # RUNNING, but its driver is gone: resumable
    client_for(cfg).set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.3f} host:1:alive")
    with pytest.raises(LiveRunConflict):
        check_live(cfg, "crashed")
    end_run(cfg, run_id)
    check_live(cfg, "crashed")  # ended: whatever its tag says


def test_of_two_drivers_starting_together_one_gives_up(store: Path) -> None:
    cfg = make_cfg(store, "lease")
    run_id = start_run(cfg, "race")
    leases = [RunLease(cfg, run_id, period_s=60) for _ in range(2)]
    outcomes: list[str] = []

    def start(lease: RunLease) -> None:
        try:
            lease.acquire(settle_s=0.5)
            outcomes.append("held")
        except LiveRunConflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=start, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["held", "refused"]
    for lease in leases:
        lease._stop.set()
    end_run(cfg, run_id)


def test_train_refuses_a_live_run_name_before_ray_starts(store: Path) -> None:
    tracking = make_cfg(store, "lease")
    run_id = start_run(tracking, "busy")
    client_for(tracking).set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.3f} other:2:x")
    cfg = load_config(
        TrainConfig,
        None,
        [
            "run_name=busy",
            f"tracking.tracking_uri={tracking.uri}",
            f"tracking.artifact_root={tracking.artifact_root}",
            "tracking.experiment=lease",
            f"scaling.storage_path={store}/ray",
        ],
    )
    with pytest.raises(LiveRunConflict, match="other:2:x"):
        run_training(cfg)
    assert client_for(tracking).get_run(run_id).info.status == "RUNNING"  # untouched
