"""The model replica (`NERModel`): one model in memory per Ray Serve replica, requests from
many clients merged into batches as soon as the model is free (`batcher.AdaptiveBatcher`),
the model swapped in place.

Batching: the ingress prepares and counts each request's sentence windows; here they go to the
model `generation.batch_size` at a time in a thread, off the replica's event loop (Serve's
health checks run on it), and the windows of a request past its deadline or cancelled by its
client are dropped.

Swaps in place (Serve's `user_config`, the registry alias moving) are `swaps.ModelHolder`'s.
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
from biogner.serve.batcher import AdaptiveBatcher
from biogner.serve.errors import refusal
from biogner.serve.loaded import LoadedModel
from biogner.serve.requests import RequestError
from biogner.serve.scheduling import Group, Job, Outcome
from biogner.serve.schema import (
    BatchInfo,
    Batching,
    ExtractResponse,
    Limits,
    ModelInfo,
    TextResult,
)
from biogner.serve.swaps import ModelHolder

log = logging.getLogger(__name__)

MODEL_DEPLOYMENT = "NERModel"
UNFINISHED = "unfinished"  # an answer's key: the job has windows left and queues again


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


@serve.deployment(name=MODEL_DEPLOYMENT)
class NERModel(ModelHolder):
    """One model in memory; batched extraction; in-place swaps (user_config, alias moves)."""

    def __init__(
        self, batching: Mapping[str, Any], limits: Mapping[str, Any], generation: Mapping[str, Any]
    ) -> None:
        self.batching = Batching.model_validate(batching)
        super().__init__(
            _replica_id(),
            GenerationConfig.model_validate(generation),
            Limits.model_validate(limits),
        )
        self.stats = BatchStats()
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
        self._running: list[Group] = []  # groups being decoded now

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

    def _require_model(self) -> LoadedModel:
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
        job = Job(model, texts, windows, types, deadline, request_id, min_score=min_score)
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
                if not outcome.get(UNFINISHED):
                    return outcome
        finally:
            self._early.pop(id(job), None)

    def _join(self, job: Job) -> bool:
        """Let `job` join a group being decoded for the same model and questions, its
        windows decoded as rows of the running batch leave (`scheduling.Group.add`), instead of
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

    async def _run_batch(self, jobs: list[Job]) -> list[dict[str, Any]]:
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

    async def _serve_group(self, jobs: list[Job], batch: BatchInfo) -> list[dict[str, Any]]:
        """Generation and assembly off the event loop; a failure answers the group with a 500
        that names the request (the details stay in the log)."""
        loop = asyncio.get_running_loop()

        def done(k: int, result: list[TextResult] | None) -> None:  # from the thread
            loop.call_soon_threadsafe(self._deliver, group.jobs[k], result, batch)

        group = Group(jobs, self.generation.batch_size, done, self.batching.max_batch_windows)
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
            for job, answer in zip(group.jobs[len(jobs) :], failed[len(jobs) :], strict=True):
                self._settle(job, answer)
            return failed[: len(jobs)]
        finally:
            self._running.remove(group)
        for job, outcome in zip(group.jobs[len(jobs) :], results[len(jobs) :], strict=True):
            if not job.answered:  # joined, and dropped (its deadline, its client gone)
                self._settle(job, self._answer(job, outcome.results, batch))
        return [
            self._final(job, res, batch)
            for job, res in zip(jobs, results[: len(jobs)], strict=True)
        ]

    def _settle(self, job: Job, outcome: dict[str, Any]) -> None:
        """Answer a request that joined a running group (it waits on its early future)."""
        early = self._early.get(id(job))
        if early is not None and not early.done():
            early.set_result(outcome)
            job.answered = True

    def _final(self, job: Job, outcome: Outcome, batch: BatchInfo) -> dict[str, Any]:
        """A job's answer at the end of its group: none when it was answered early (its
        caller has it: nothing is counted twice) or when it has windows left (it queues
        again)."""
        if job.answered:
            return {"ok": True, "answered": "early"}
        if outcome.unfinished:
            return {"ok": True, UNFINISHED: True}
        return self._answer(job, outcome.results, batch)

    def _deliver(self, job: Job, result: list[TextResult] | None, batch: BatchInfo) -> None:
        """Answer one request of a running group (on the event loop)."""
        early = self._early.get(id(job))
        if early is not None and not early.done():
            self._settle(job, self._answer(job, result, batch))

    def _answer(
        self, job: Job, results: list[TextResult] | None, batch: BatchInfo
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
