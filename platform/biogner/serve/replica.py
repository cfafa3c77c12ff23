"""The model replica (`NERModel`): one model in memory per Ray Serve replica, requests from
many clients merged into batches as soon as the model is free (`batcher.AdaptiveBatcher`),
the model swapped in place.

Batching: the ingress prepares and counts each request's sentence windows; here they go to the
model `generation.batch_size` at a time in a thread, off the replica's event loop (Serve's
health checks run on it), and the windows of a request past its deadline or cancelled by its
client are dropped.

Why swap in place: replacing a replica drops its loaded model, costs a reload and, with one
replica, an outage when the new model fails to load. Two paths swap without replacing the
replica, both through `_swap_in`: `reconfigure` (Serve's `user_config`: a lightweight update
of a Serve config file's `deployments:` section) and the alias follower (`follow_alias_s`:
the registry alias moved, e.g. in the MLflow UI). A swap is one assignment on the event loop
and each request is pinned to the model it was validated on (`engine.Job.model`): requests
in flight finish on the old model, later ones use the new one. A model that fails to load
leaves the old one serving and is reported in `/v1/model` (`last_reload`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ray import serve

from biogner.annotate.text import Window
from biogner.formats import get_format
from biogner.models.config import GenerationConfig
from biogner.runtime import jemalloc_loaded
from biogner.serve import engine
from biogner.serve.batcher import AdaptiveBatcher
from biogner.serve.errors import refusal, without_paths
from biogner.serve.follow import AliasFollower
from biogner.serve.requests import RequestError
from biogner.serve.schema import (
    AliasCheck,
    BatchInfo,
    Batching,
    ExtractResponse,
    Limits,
    ModelInfo,
    ModelSource,
    ReloadStatus,
    TextResult,
)

log = logging.getLogger(__name__)

MODEL_DEPLOYMENT = "NERModel"


@dataclass
class BatchStats:
    """Counters of one replica, for /v1/stats (and the benchmark's mean batch size)."""

    batches: int = 0
    requests: int = 0
    windows: int = 0
    failures: int = 0
    dropped: int = 0
    joined: int = 0  # requests that joined a running batch (`NERModel._join`)
    batch_sizes: Counter[int] = field(default_factory=Counter)

    def record(self, n_requests: int, n_windows: int) -> None:
        self.batches += 1
        self.requests += n_requests
        self.windows += n_windows
        self.batch_sizes[n_requests] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "windows": self.windows,
            "failures": self.failures,
            "dropped": self.dropped,
            "joined": self.joined,
            "mean_batch_size": self.requests / self.batches if self.batches else 0.0,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


def _replica_id() -> str:
    try:
        return str(serve.get_replica_context().replica_tag)
    except Exception:  # outside a replica (direct use in tests)
        return f"pid-{os.getpid()}"


def _describe(exc: BaseException) -> str:
    """What failed, for /v1/model: the exception's kind and message, local file paths cut out
    (they tell a client where the server keeps its files; the log has the full message)."""
    return without_paths(f"{type(exc).__name__}: {exc}")


def _same_model(a: ModelSource, b: ModelSource) -> bool:
    """Whether two sources name the same model load (the follow period is no part of it)."""
    return a.model_dump(exclude={"follow_alias_s"}) == b.model_dump(exclude={"follow_alias_s"})


@serve.deployment(name=MODEL_DEPLOYMENT)
class NERModel:
    """One model in memory; batched extraction; in-place swaps (user_config, alias moves)."""

    def __init__(
        self, batching: Mapping[str, Any], limits: Mapping[str, Any], generation: Mapping[str, Any]
    ) -> None:
        self.batching = Batching.model_validate(batching)
        self.limits = Limits.model_validate(limits)
        self.generation = GenerationConfig.model_validate(generation)
        self.replica = _replica_id()
        self.stats = BatchStats()
        self.current: engine.LoadedModel | None = None
        self.source: ModelSource | None = None  # what `current` was loaded from
        self.last_reload: ReloadStatus | None = None
        self.last_check: AliasCheck | None = None
        self.follower: AliasFollower | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._swap_lock = asyncio.Lock()
        self._batched = AdaptiveBatcher(
            self._run_batch,
            max_batch_size=self.batching.max_batch_size,
            wait_s=self.batching.batch_wait_timeout_s,
            slots=self.batching.max_concurrent_batches,
            weight=lambda job: max(1, min(job.left, self.batching.max_batch_windows)),
            max_weight=self.batching.max_batch_windows,
        )
        # request id -> the future that answers it as soon as its own windows are done
        self._early: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._running: list[engine.Group] = []  # groups being decoded now

    # ------------------------------------------------------------------ model swaps

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
                engine.load, uri, source.tracking, self.generation, source.format
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
            version = await asyncio.to_thread(
                engine.alias_version, source.model_uri, source.tracking
            )
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

    # ------------------------------------------------------------------ status

    def check_health(self) -> None:
        if self.current is None:
            raise RuntimeError("no model loaded")

    def info(self) -> dict[str, Any]:
        model = self._require_model()
        constrained = self.generation.constrained and get_format(model.format).writing.constrainable
        return ModelInfo(
            model=model.ref,
            format=model.format,
            entity_types=model.entity_types,
            type_groups=model.card.type_groups,
            base_model=model.card.base_model or None,
            corpora=list(model.card.corpora),
            constrained=constrained,
            overruled=self.generation.overruled if constrained else None,
            loaded_at=model.loaded_at,
            replica=self.replica,
            last_reload=self.last_reload,
            follow_alias_s=self.follower.period_s if self.follower is not None else None,
            last_check=self.last_check,
        ).model_dump(mode="json")

    def get_stats(self) -> dict[str, Any]:
        # what the replica's process got: a starved (nice 15) or glibc replica shows up here
        process = {"niceness": os.nice(0), "jemalloc": jemalloc_loaded()}
        return {"replica": self.replica, "process": process, **self.stats.to_dict()}

    def _require_model(self) -> engine.LoadedModel:
        if self.current is None:
            raise RuntimeError("no model loaded yet")
        return self.current

    # ------------------------------------------------------------------ extraction

    async def extract(
        self,
        texts: list[str],
        windows: list[list[Window]],
        entity_types: list[str] | None,
        timeout_s: float,
        request_id: str,
        min_score: float = 0.0,
    ) -> dict[str, Any]:
        """Entities for `texts`, whose windows the ingress prepared and counted (off this
        replica's event loop); `timeout_s` is what is left of the request's deadline.

        Returns {"ok": True, "response": ...} or {"ok": False, ...}: an expected refusal is
        data, not an exception (the ingress maps it to a 4xx/5xx)."""
        deadline = time.monotonic() + timeout_s
        try:
            model = self._require_model()
            types = model.select_types(entity_types)
        except RequestError as exc:
            return {"ok": False, **exc.to_dict()}
        job = engine.Job(model, texts, windows, types, deadline, request_id, min_score=min_score)
        early: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._early[id(job)] = early
        try:
            if self._join(job):
                try:
                    return await early
                except asyncio.CancelledError:
                    job.cancelled = True  # the group's intake drops its windows
                    raise
            while True:
                # answered when its own windows are done, or with its batch (errors,
                # refusals); a big job gets a slice a batch and queues again for the rest,
                # behind the requests that came meanwhile
                batched = asyncio.ensure_future(self._batched(job))
                try:
                    await asyncio.wait({batched, early}, return_when=asyncio.FIRST_COMPLETED)
                except asyncio.CancelledError:
                    job.cancelled = True  # the caller is gone: the batch loop drops its windows
                    batched.cancel()
                    raise
                if early.done():
                    return early.result()
                outcome: dict[str, Any] = batched.result()
                if not outcome.get(engine.PARTIAL):
                    return outcome
        finally:
            self._early.pop(id(job), None)

    def _join(self, job: engine.Job) -> bool:
        """Let `job` join a group being decoded for the same model and questions, its
        windows decoded as rows of the running batch leave (`engine.Group.add`), instead of
        waiting for the next batch. Only while no other request waits for a batch (a stream
        that kept taking requests would starve one for other types or a new model) and for
        a request of at most `max_batch_windows / 4` windows (a big one is cut into batch
        slices)."""
        if not self.batching.join_running or self._batched.waiting:
            return False
        if job.left > max(1, self.batching.max_batch_windows // 4):
            return False
        if any(group.add(job) is not None for group in self._running):
            self.stats.joined += 1
            return True
        return False

    async def _run_batch(self, jobs: list[engine.Job]) -> list[dict[str, Any]]:
        """One batch: jobs grouped by (model, the questions their types are asked in), each
        group served in a thread (a batch that straddles a swap serves each job on the model
        it was pinned to). Requests for different types of the same type groups share one
        group: `Chemical` and `Disease` of a BC5CDR-trained model are one question."""
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((id(job.model), tuple(job.model.asked_types(job.types))), []).append(
                i
            )
        n_windows = sum(len(w) for job in jobs for w in job.windows)
        self.stats.record(len(jobs), n_windows)
        batch = BatchInfo(requests=len(jobs), windows=n_windows)
        outcomes: list[dict[str, Any]] = [{} for _ in jobs]
        for members in groups.values():
            served = await self._serve_group([jobs[i] for i in members], batch)
            for i, outcome in zip(members, served, strict=True):
                outcomes[i] = outcome
        return outcomes

    async def _serve_group(self, jobs: list[engine.Job], batch: BatchInfo) -> list[dict[str, Any]]:
        """Generation and assembly off the event loop; a failure answers the group with a 500
        that names the request (the details stay in the log)."""
        loop = asyncio.get_running_loop()

        def done(k: int, result: list[TextResult] | None) -> None:  # from the thread
            loop.call_soon_threadsafe(self._deliver, group.jobs[k], result, batch)

        group = engine.Group(
            jobs, self.generation.batch_size, done, self.batching.max_batch_windows
        )
        self._running.append(group)
        try:
            results = await asyncio.to_thread(group.run)
        except Exception:  # the replica keeps serving; these requests get a 500
            ids = [job.request_id for job in group.jobs]
            log.exception("model failure in a batch of requests %s", ids)
            self.stats.failures += len(group.jobs)
            failed = [
                refusal(500, "model_error", "the model failed on this request", job.request_id)
                for job in group.jobs
            ]
            for job, outcome in zip(group.jobs[len(jobs) :], failed[len(jobs) :], strict=True):
                self._settle(job, outcome)
            return failed[: len(jobs)]
        finally:
            self._running.remove(group)
        for job, result in zip(group.jobs[len(jobs) :], results[len(jobs) :], strict=True):
            if not job.answered:  # joined, and dropped (its deadline, its client gone)
                self._settle(
                    job, self._answer(job, result if isinstance(result, list) else None, batch)
                )
        return [
            self._final(job, res, batch)
            for job, res in zip(jobs, results[: len(jobs)], strict=True)
        ]

    def _settle(self, job: engine.Job, outcome: dict[str, Any]) -> None:
        """Answer a request that joined a running group (it waits on its early future)."""
        early = self._early.get(id(job))
        if early is not None and not early.done():
            early.set_result(outcome)
            job.answered = True

    def _final(
        self, job: engine.Job, result: list[TextResult] | None | str, batch: BatchInfo
    ) -> dict[str, Any]:
        """A job's answer at the end of its group: none when it was answered early (its
        caller has it: nothing is counted twice) or when it has windows left (it queues
        again)."""
        if job.answered:
            return {"ok": True, "answered": "early"}
        if isinstance(result, str):
            return {"ok": True, engine.PARTIAL: True}
        return self._answer(job, result, batch)

    def _deliver(self, job: engine.Job, result: list[TextResult] | None, batch: BatchInfo) -> None:
        """Answer one request of a running group (on the event loop)."""
        early = self._early.get(id(job))
        if early is not None and not early.done():
            self._settle(job, self._answer(job, result, batch))

    def _answer(
        self, job: engine.Job, results: list[TextResult] | None, batch: BatchInfo
    ) -> dict[str, Any]:
        if results is None:
            self.stats.dropped += 1
            why = "cancelled by its client" if job.cancelled else "past its deadline"
            log.warning("request %s dropped: %s", job.request_id, why)
            return refusal(504, "timeout", f"request {why}", job.request_id)
        response = ExtractResponse(
            results=results,
            model=job.model.ref,
            format=job.model.format,
            entity_types=job.types,
            batch=batch,
        )
        return {"ok": True, "response": response.model_dump(mode="json")}


__all__ = ["MODEL_DEPLOYMENT", "BatchStats", "NERModel"]
