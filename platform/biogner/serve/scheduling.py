"""Requests' windows on the model: jobs that ask the same questions decoded together, a small
request answered as soon as its own windows are, a big one served a slice at a time.

Why apart from the replica: scheduling is plain threads and data (no Serve), so its fairness
and its drops (deadline passed, client gone) are tested directly on a real model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from biogner.annotate.assemble import assemble
from biogner.annotate.entities import TextResult
from biogner.annotate.text import Window
from biogner.generation import Generation
from biogner.serve.loaded import LoadedModel
from biogner.types import Sentence


@dataclass
class Job:
    """One request's model work, pinned to the model it was validated on. The batch loop
    skips it once its client is gone (`cancelled`) or its deadline (monotonic) has passed,
    so an abandoned request does not hold the replica. A big job is served a slice at a
    time (`Group`'s budget): `found` keeps what is done between its batches."""

    model: LoadedModel
    texts: list[str]
    windows: list[list[Window]]
    types: list[str]
    deadline: float
    request_id: str = ""
    min_score: float = 0.0
    cancelled: bool = False
    answered: bool = False  # its caller got its results before the rest of its batch
    found: list[Generation | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.found:
            self.found = [None] * sum(len(ws) for ws in self.windows)

    def live(self) -> bool:
        return not self.cancelled and time.monotonic() < self.deadline

    @property
    def left(self) -> int:
        """Windows not generated yet."""
        return sum(g is None for g in self.found)


@dataclass(frozen=True)
class Outcome:
    """What serving a group did for one job: its results (None: dropped, not live), or
    `unfinished` when the window budget ran out before its windows did (the caller queues
    it again; what is done stays in `job.found`)."""

    results: list[TextResult] | None = None
    unfinished: bool = False


class Group:
    """Jobs that share a model and entity types, served together in one stream of windows
    (`Generator.batch_continuously`), and the jobs that join it while it runs (`add`).

    Windows go to the model as it has room for them (rows join its batch as others leave),
    at most `chunk_size` at a time, the job with the fewest left first, so a small request
    is answered as soon as its own windows are, whatever its neighbours hold, and a big one
    takes at most `budget` windows a batch, so it cannot hold the model while others wait;
    `on_done(k, results)` hands job k (in `jobs`, joined ones after the first) its results as
    soon as its own windows are done. The windows of jobs no longer live are dropped before
    they go in. A job that joins (from the event loop, while `run` decodes in a thread) has
    its windows queued after those there; the group takes no more once its stream ended."""

    def __init__(
        self,
        jobs: Sequence[Job],
        chunk_size: int,
        on_done: Callable[[int, list[TextResult] | None], None] | None = None,
        budget: int | None = None,
    ) -> None:
        self.jobs = list(jobs)
        self.model = jobs[0].model
        self.types = self.model.asked_types(jobs[0].types)  # the same for every job
        self.chunk_size = chunk_size
        self.on_done = on_done
        sizes = [job.left for job in jobs]
        self.missing = list(sizes)
        self.queue = sorted(
            (item for k, job in enumerate(jobs) for item in _pending(k, job)),
            key=lambda item: (sizes[item[0]], item[0], len(item[2].text)),
        )[:budget]
        self.pos = 0  # windows of `queue` handed to the model so far
        self.dropped: set[int] = set()  # jobs whose windows were dropped (not live)
        self.closed = False
        self.lock = threading.Lock()

    def accepts(self, job: Job) -> bool:
        """Whether `job` may join: the same model and questions, and not closed."""
        return (
            not self.closed
            and job.model is self.model
            and self.model.asked_types(job.types) == self.types
        )

    def add(self, job: Job) -> int | None:
        """Queue all of `job`'s windows behind those waiting; its index in `jobs`, or None
        when the group takes no more (its stream ended) or serves other questions."""
        with self.lock:
            if not self.accepts(job):
                return None
            k = len(self.jobs)
            self.jobs.append(job)
            self.missing.append(job.left)
            self.queue += _pending(k, job)
            return k

    def run(self) -> list[Outcome]:
        """Serve the windows until none is left; then each job's `Outcome`. Blocking: run
        it off the replica's event loop."""
        for k, n in enumerate(self.missing):
            if n == 0:  # nothing to read: done before any model call
                self._finished(k)
        try:
            while True:
                generator = self.model.generator
                generator.batch_continuously(
                    self.model.format, self.types, self._intake, self._done
                )
                with self.lock:  # a job that joined after the stream's last intake: go on
                    if self.pos >= len(self.queue):
                        break
        finally:
            with self.lock:
                self.closed = True
        return [
            Outcome(unfinished=True) if job.live() and job.left else Outcome(_results(job))
            for job in self.jobs
        ]

    def _intake(self, room: int) -> list[tuple[int, Sentence]]:
        """The next windows of live jobs, at most `room` (the model asks as rows leave)."""
        out: list[tuple[int, Sentence]] = []
        with self.lock:
            live: dict[int, bool] = {}
            while self.pos < len(self.queue) and len(out) < min(room, self.chunk_size):
                k, _, sentence = self.queue[self.pos]
                if live.setdefault(k, self.jobs[k].live()):
                    out.append((self.pos, sentence))
                elif k not in self.dropped:  # answered now (a 504), not when the group ends
                    self.dropped.add(k)
                    self._finished(k)
                self.pos += 1
        return out

    def _done(self, index: int, generation: Generation) -> None:
        k, j, _ = self.queue[index]
        self.jobs[k].found[j] = generation
        self.missing[k] -= 1
        if self.missing[k] == 0:
            self._finished(k)

    def _finished(self, k: int) -> None:
        if self.on_done is not None:
            self.on_done(k, _results(self.jobs[k]))


def _pending(k: int, job: Job) -> list[tuple[int, int, Sentence]]:
    """(k, window index, its sentence) for each window of job k not generated yet."""
    windows = (w for ws in job.windows for w in ws)
    return [(k, j, w.sentence) for j, w in enumerate(windows) if job.found[j] is None]


def _results(job: Job) -> list[TextResult] | None:
    """A job's entities, or None when some of its windows were dropped (no partial answer)."""
    done = [g for g in job.found if g is not None]
    if len(done) < len(job.found):
        return None
    return assemble(job.texts, job.windows, done, set(job.types), job.min_score)


__all__ = ["Group", "Job", "Outcome"]
