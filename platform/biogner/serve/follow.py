"""When a replica that follows a registry alias (`follow_alias_s`) should load what it found.

Kept apart from the replica (and from Ray) so that the decision can be tested on its own: the
replica looks up the alias every period and asks `AliasFollower.wants`; a version that failed
to load is retried only after a backoff that doubles with each failure (up to
`RETRY_CAP_S`), so that an alias left on a broken version does not make every replica
download a model every period, while a version that failed for a passing reason (a store
that did not answer, files still being written) is still picked up later.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_CAP_S = 600.0  # a version that keeps failing is tried again at least this often


@dataclass
class FailedLoad:
    """A version whose load failed, and when (time.monotonic) it may be tried again."""

    version: str
    failures: int
    retry_at: float


class AliasFollower:
    """The follow state of one replica for one `models:/<name>@<alias>` source."""

    def __init__(self, period_s: float) -> None:
        if period_s <= 0:
            raise ValueError(f"follow period must be > 0 seconds, got {period_s}")
        self.period_s = period_s
        self.failed: FailedLoad | None = None

    def wants(self, version: str, served: str | None, now: float) -> bool:
        """Load `version` (the alias's target now) in place of `served`? Not when it is the
        served one, nor a version that failed before its retry time."""
        if version == served:
            return False
        failed = self.failed
        return failed is None or failed.version != version or now >= failed.retry_at

    def record_failure(self, version: str, now: float) -> FailedLoad:
        """Note that `version` failed to load at `now`; returns when it may be tried again."""
        failures = self.failed.failures + 1 if self.failed and self.failed.version == version else 1
        delay = min(self.period_s * 2**failures, RETRY_CAP_S)
        self.failed = FailedLoad(version, failures, now + delay)
        return self.failed

    def record_success(self) -> None:
        self.failed = None


__all__ = ["RETRY_CAP_S", "AliasFollower", "FailedLoad"]
