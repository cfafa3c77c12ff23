"""The model side of serving, without Ray: resolve and load a model URI, turn texts into model
inputs, and turn generations back into entities with offsets in the texts as sent.

Kept apart from the Serve deployment so that the offset and format handling can be tested
directly with real formats and real parsers.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from biogner.annotate.text import Window
from biogner.generation import Generation, Generator
from biogner.generation.routing import ask_plan
from biogner.models.card import ModelCard
from biogner.models.config import GenerationConfig
from biogner.serve.requests import RequestError
from biogner.serve.schema import Entity, ModelRef, TextResult
from biogner.tracking.config import TrackingConfig
from biogner.tracking.open import open_model
from biogner.tracking.registry import model_version
from biogner.tracking.uris import parse_model_uri
from biogner.types import Sentence


@dataclass
class LoadedModel:
    """A model in memory plus what the service reports about it."""

    generator: Generator
    ref: ModelRef
    card: ModelCard
    loaded_at: float = field(default_factory=time.time)
    download_dir: Path | None = None
    served_format: str | None = None  # checked against the card when loaded (`load`)

    @property
    def format(self) -> str:
        """The format served: the one asked for, else the card's own; never a format the
        model was not trained in (`ModelCard.serving_format`)."""
        return self.served_format or self.card.format

    @property
    def entity_types(self) -> list[str]:
        return self.card.entity_types

    def close(self) -> None:
        """Delete the downloaded copy (weights are already in memory)."""
        if self.download_dir is not None:
            shutil.rmtree(self.download_dir, ignore_errors=True)
            self.download_dir = None

    def select_types(self, requested: Sequence[str] | None) -> list[str]:
        """The entity types to extract, in the model's own order (conv turns follow it)."""
        if requested is None:
            return list(self.entity_types)
        if not requested:
            raise RequestError(422, "empty", "entity_types must not be empty", "entity_types")
        unknown = sorted({t for t in requested if t not in self.entity_types})
        if unknown:
            raise RequestError(
                422,
                "unknown_entity_types",
                f"unknown entity types {unknown}; this model knows {self.entity_types}",
                "entity_types",
            )
        wanted = set(requested)
        return [t for t in self.entity_types if t in wanted]

    def asked_types(self, types: Sequence[str]) -> list[str]:
        """Every type the model is asked to answer `types`: the whole type groups they
        belong to (`generation.routing`), in the model's order."""
        plan = ask_plan(types, self.card.type_groups)
        asked = {t for group in plan for t in group}
        return [t for t in self.entity_types if t in asked] + sorted(asked - set(self.entity_types))


def alias_version(model_uri: str, tracking: TrackingConfig) -> str:
    """The registry version a `models:/<name>@<alias>` URI points to now (a registry lookup:
    blocking; the alias follower runs it off the replica's event loop)."""
    uri = parse_model_uri(model_uri)
    if uri.alias is None:
        raise ValueError(f"{model_uri} names no registry alias (models:/<name>@<alias>)")
    return str(model_version(tracking, uri).version)


def load(
    model_uri: str,
    tracking: TrackingConfig,
    generation: GenerationConfig,
    fmt: str | None = None,
) -> LoadedModel:
    """Resolve `model_uri` (registry, run or directory) once, download it and load it, to
    answer in `fmt` (default: the card's format; one it was not trained in: ModelCardError)."""
    model = open_model(model_uri, tracking, temporary=True)
    try:
        served = model.card.serving_format(fmt)
        generator = Generator(model.dir, generation)
    except BaseException:
        model.close()
        raise
    ref = ModelRef(name=model.name, version=model.version, uri=model_uri, run_id=model.run_id)
    return LoadedModel(
        generator=generator,
        ref=ref,
        card=model.card,
        download_dir=model.download_dir,
        served_format=served,
    )


@dataclass
class Job:
    """One request's model work, pinned to the model it was validated on. The batch loop
    skips it once its client is gone (`cancelled`) or its deadline (monotonic) has passed,
    so an abandoned request does not hold the replica. A big job is served a slice at a
    time (`run_group`'s budget): `found` keeps what is done between its batches."""

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


PARTIAL = "partial"  # run_group's word for a job whose windows are not all done yet


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

    def run(self) -> list[list[TextResult] | None | str]:
        """Serve the windows until none is left; then results per job: entities per text,
        None when a job was dropped (not live), or PARTIAL when the window budget ran out
        before its windows did (the caller queues it again; what is done stays in
        `job.found`). Blocking: run it off the replica's event loop."""
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
            PARTIAL if job.live() and job.left else _results(job, job.found) for job in self.jobs
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
            self.on_done(k, _results(self.jobs[k], self.jobs[k].found))


def _pending(k: int, job: Job) -> list[tuple[int, int, Sentence]]:
    """(k, window index, its sentence) for each window of job k not generated yet."""
    windows = (w for ws in job.windows for w in ws)
    return [(k, j, w.sentence) for j, w in enumerate(windows) if job.found[j] is None]


def run_group(
    jobs: Sequence[Job],
    chunk_size: int,
    on_done: Callable[[int, list[TextResult] | None], None] | None = None,
    budget: int | None = None,
) -> list[list[TextResult] | None | str]:
    """Results of jobs served together as one `Group`, none joining."""
    return Group(jobs, chunk_size, on_done, budget).run()


def _results(job: Job, generations: list[Generation | None]) -> list[TextResult] | None:
    """A job's entities, or None when some of its windows were dropped (no partial answer)."""
    done = [g for g in generations if g is not None]
    if len(done) < len(generations):
        return None
    return assemble(job.texts, job.windows, done, set(job.types), job.min_score)


def assemble(
    texts: Sequence[str],
    windows: Sequence[Sequence[Window]],
    generations: Sequence[Generation],
    labels: set[str] | None = None,
    min_score: float = 0.0,
) -> list[TextResult]:
    """Entities per text from the generations of its windows (flattened, in window order),
    of the `labels` asked for (a group asked whole may answer more), scored at least
    `min_score` (an entity found in two overlapping windows keeps its best score).

    Every entity's offsets index the text as sent and `text` is exactly `text[start:end]`.
    """
    results: list[TextResult] = []
    it = iter(generations)
    for text, text_windows in zip(texts, windows, strict=True):
        found: dict[tuple[int, int, str], float | None] = {}
        incomplete = False
        for window in text_windows:
            gen = next(it)
            incomplete = incomplete or gen.truncated
            for span in gen.parse.spans:
                if labels is not None and span.label not in labels:
                    continue
                mapped = window.to_original(span.start, span.end)
                if mapped is None:
                    continue
                key = (mapped[0], mapped[1], span.label)
                score = gen.parse.scores.get(span)
                best = found.get(key)
                found[key] = score if best is None or (score or 0.0) > best else best
        entities = [
            Entity(start=s, end=e, label=lab, text=text[s:e], score=score)
            for (s, e, lab), score in sorted(found.items())
            if score is None or score >= min_score
        ]
        results.append(
            TextResult(
                entities=entities,
                truncated=any(w.truncated for w in text_windows),
                incomplete=incomplete,
            )
        )
    if next(it, None) is not None:
        raise ValueError("more generations than windows")
    return results


__all__ = [
    "Group",
    "Job",
    "LoadedModel",
    "alias_version",
    "assemble",
    "load",
    "run_group",
]
