"""The served model and its swaps in place: `ModelHolder`, the replica's half that loads a
model, swaps it in when Serve's user_config or the registry alias names another, and reports
what it did (`last_reload`, `last_check`).

Why swap in place: replacing a replica drops its loaded model, costs a reload and, with one
replica, an outage when the new model fails to load. Two paths swap without replacing the
replica, both through `_swap_in`: `reconfigure` (Serve's `user_config`) and the alias follower
(`follow_alias_s`). A swap is one assignment on the event loop; requests in flight finish on
the model they were pinned to (`scheduling.Job.model`)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from biogner.models.config import GenerationConfig
from biogner.serve.errors import without_paths
from biogner.serve.follow import AliasFollower
from biogner.serve.loaded import LoadedModel, alias_version, load
from biogner.serve.schema import AliasCheck, Limits, ModelSource, ReloadStatus

log = logging.getLogger("biogner.serve.replica")


def _describe(exc: BaseException) -> str:
    """What failed, for /v1/model: the exception's kind and message, local file paths cut out
    (they tell a client where the server keeps its files; the log has the full message)."""
    return without_paths(f"{type(exc).__name__}: {exc}")


def _same_model(a: ModelSource, b: ModelSource) -> bool:
    """Whether two sources name the same model load (the follow period is no part of it)."""
    return a.model_dump(exclude={"follow_alias_s"}) == b.model_dump(exclude={"follow_alias_s"})


class ModelHolder:
    """The model a replica serves (`current`), where it came from, and its swaps."""

    def __init__(self, replica: str, generation: GenerationConfig, limits: Limits) -> None:
        self.replica = replica
        self.generation = generation
        self.limits = limits
        self.current: LoadedModel | None = None
        self.source: ModelSource | None = None  # what `current` was loaded from
        self.last_reload: ReloadStatus | None = None
        self.last_check: AliasCheck | None = None
        self.follower: AliasFollower | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._swap_lock = asyncio.Lock()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's user_config (a `ModelSource`): load the model it names and swap it in, and
        follow its registry alias when `follow_alias_s` says so.

        A failed load keeps the old model (and what it follows) and is reported
        (`last_reload` in /v1/model, the log): raising would make Serve restart the replica
        with the same config, an outage. Only a replica with no model yet raises."""
        source = ModelSource.model_validate(user_config)
        async with self._swap_lock:
            old = self.source if self.current is not None else None
            same = old is not None and _same_model(source, old)
            if not same:
                if not await self._swap_in(source):
                    return
                self.last_check = None  # it was about the previous source
            self.source = source
            self.follower = self._follower_for(source, keep=same)
        self._start_following()

    def _follower_for(self, source: ModelSource, keep: bool) -> AliasFollower | None:
        """The follower of `source` (None: not followed); the current one when it still
        fits (`keep`: same model, same period), so that its failure record stays."""
        period = source.follow_period_s
        if period is None:
            return None
        if keep and self.follower is not None and self.follower.period_s == period:
            return self.follower
        return AliasFollower(period)

    async def _swap_in(self, source: ModelSource, version: str | None = None) -> bool:
        """Load `source` off the event loop and make it the served model (the caller holds
        the swap lock). False when it failed to load (`last_reload` says why); raises only
        when there is no model to keep serving. `version`: the registry version the alias
        follower expects, for the report."""
        uri = source.model_uri
        log.info("replica %s loading %s", self.replica, uri)
        try:
            new = await asyncio.to_thread(
                load, uri, source.tracking, self.generation, source.format, self.limits
            )
        except Exception as exc:
            self.last_reload = ReloadStatus(
                ok=False, model_uri=uri, version=version, at=time.time(), error=_describe(exc)
            )
            if self.current is None:
                raise
            log.exception(
                "replica %s: loading %s failed; still serving %s",
                self.replica,
                uri if version is None else f"{uri} (version {version})",
                self.current.ref,
            )
            return False
        self.last_reload = ReloadStatus(
            ok=True, model_uri=uri, version=new.ref.version, at=time.time()
        )
        old, self.current = self.current, new
        log.info("replica %s now serves %s (%s)", self.replica, uri, new.ref)
        if old is not None:
            old.close()  # files only: jobs still holding `old` keep its weights alive
        return True

    def _start_following(self) -> None:
        """One background task per replica checks the alias while a follower is set."""
        if self.follower is None or (self._follow_task and not self._follow_task.done()):
            return
        self._follow_task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        """Check the alias every period until following is turned off (a reconfigure)."""
        while (follower := self.follower) is not None:
            await asyncio.sleep(follower.period_s)
            try:
                await self.check_alias()
            except Exception:  # the loop must outlive any one check
                log.exception("replica %s: alias check failed", self.replica)

    async def check_alias(self) -> AliasCheck | None:
        """One look at the registry alias (off the event loop); the version it points to is
        loaded and swapped in when it is new, unless it failed to load and its retry time
        has not come (`follow.AliasFollower`). Returns the check (None: not following)."""
        follower, source = self.follower, self.source
        if follower is None or source is None:
            return None
        try:
            version = await asyncio.to_thread(alias_version, source.model_uri, source.tracking)
        except Exception as exc:
            self.last_check = AliasCheck(at=time.time(), ok=False, error=_describe(exc))
            log.warning("replica %s: alias check of %s: %s", self.replica, source.model_uri, exc)
            return self.last_check
        self.last_check = check = AliasCheck(at=time.time(), ok=True, version=version)
        served = self.current.ref.version if self.current is not None else None
        if not follower.wants(version, served, time.monotonic()):
            return check
        log.info(
            "replica %s: %s moved from version %s to %s",
            self.replica,
            source.model_uri,
            served,
            version,
        )
        async with self._swap_lock:
            if self.source is not source or self.follower is not follower:
                return check  # reconfigured meanwhile: that source's follower decides
            if await self._swap_in(source, version):
                follower.record_success()
            else:
                retry = follower.record_failure(version, time.monotonic())
                log.warning(
                    "replica %s: version %s tried again in %.0f s",
                    self.replica,
                    version,
                    retry.retry_at - time.monotonic(),
                )
        return check


__all__ = ["ModelHolder"]
