"""One live driver per run name: a heartbeat the training driver keeps on its MLflow run.

Why: two drivers with one run name (a RayJob applied twice, two sweeps) resumed the same
MLflow run and the same checkpoint folder, and the first to finish deleted the folder under
the other. A crashed driver must still be resumable, so the lease is a heartbeat that
expires, not a lock: a second driver is refused while the first one's heartbeat is fresh.
MLflow holds it, the one store every driver of a cluster shares.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import NoReturn

from biogner.tracking.config import TrackingConfig
from biogner.tracking.runs import client_for, runs_named

HEARTBEAT_TAG = "biogner.heartbeat"  # "<unix time> <owner>" of the driver holding the run
HEARTBEAT_S = 30.0
STALE_S = 4 * HEARTBEAT_S  # a heartbeat older than this is a driver that is gone
RELEASED = "released"


class LiveRunConflict(RuntimeError):
    """Another driver holds the run name now."""


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def heartbeat_age(value: str | None, now: float) -> tuple[float, str] | None:
    """(seconds since, owner) of a heartbeat tag; None when released, absent or unreadable."""
    if not value or value == RELEASED:
        return None
    stamp, _, owner = value.partition(" ")
    try:
        return now - float(stamp), owner
    except ValueError:
        return None


def check_live(cfg: TrackingConfig, run_name: str, stale_s: float = STALE_S) -> None:
    """Raise LiveRunConflict when a RUNNING run of this name has a fresh heartbeat."""
    now = time.time()
    for run in runs_named(cfg, run_name):
        if run.info.status != "RUNNING":
            continue
        age = heartbeat_age(run.data.tags.get(HEARTBEAT_TAG), now)
        if age is not None and age[0] < stale_s:
            raise LiveRunConflict(
                f"run_name {run_name!r} is live: MLflow run {run.info.run_id} is RUNNING, its "
                f"driver ({age[1]}) was heard from {age[0]:.0f} s ago. Two drivers would share "
                "its checkpoints; wait for it to end, stop it, or choose another run_name "
                f"(a driver that crashed frees the name {stale_s:.0f} s after its last beat)."
            )


class RunLease:
    """The heartbeat of the driver holding `run_id`, written every `period_s` until `release`."""

    def __init__(self, cfg: TrackingConfig, run_id: str, period_s: float = HEARTBEAT_S) -> None:
        self.cfg, self.run_id, self.period_s = cfg, run_id, period_s
        self.owner = _owner()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="biogner-lease", daemon=True)

    def acquire(self, settle_s: float = 1.0) -> RunLease:
        """Beat once, wait, and check that the tag is still ours: of two drivers that passed
        `check_live` together, the one whose beat was overwritten gives up."""
        try:
            self._write()
        except Exception:
            # two first writes of the tag at once: the store refuses one (SQLite: UNIQUE
            # constraint); the driver that lost is the one whose beat is not there
            if self._holder() in ("", self.owner):
                raise
            self._conflict()
        time.sleep(settle_s)
        if self._holder() != self.owner:
            self._conflict()
        self._thread.start()
        return self

    def _holder(self) -> str:
        """The owner named by the heartbeat tag now ("" when there is none)."""
        value = client_for(self.cfg).get_run(self.run_id).data.tags.get(HEARTBEAT_TAG, "")
        return value.partition(" ")[2]

    def _conflict(self) -> NoReturn:
        raise LiveRunConflict(
            f"MLflow run {self.run_id}: another driver ({self._holder()}) took this run name "
            "at the same moment; choose another run_name"
        )

    def _write(self) -> None:
        client_for(self.cfg).set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.3f} {self.owner}")

    def _beat(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self._write()
            except Exception:  # a store hiccup must not kill training; the next beat retries
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        client_for(self.cfg).set_tag(self.run_id, HEARTBEAT_TAG, RELEASED)
