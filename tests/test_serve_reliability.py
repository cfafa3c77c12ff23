"""Serving under abuse and failure, without a Ray cluster: the window cap, deadlines and
dropped work, model work off the event loop, a failed model reload, overload and error
responses that keep internals in the log.

The serving code runs for real (`scheduling`, and the Ingress/NERModel classes constructed
directly, as in test_serve_auth.py); what stands in is only what they call: the model's
generator (it answers every sentence in one fixed way, or fails, or is slow) and the
Ingress's handle to the model deployment (it answers, fails, or never answers).
The same behaviours over HTTP are in test_serve.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from starlette.requests import Request
from support import DEADLINE_S, POLL_S, wait_until, wait_until_async

from biogner.annotate.annotator import Annotator
from biogner.formats import get_format
from biogner.generation import Generation
from biogner.generation.generator import extract_in_batches
from biogner.models.card import ModelCard
from biogner.serve.loaded import LoadedModel
from biogner.serve.requests import RequestError, check_request
from biogner.serve.scheduling import Group, Job
from biogner.serve.schema import Limits, ModelRef
from biogner.types import Sentence

TYPES = ["Disease"]
KEY = "k3y"
KEY_ENV = "BIOGNER_TEST_RELIABILITY_KEY"
FLOOD = ["Ab. " * 5000] * 64  # 1.3 MB: under the body limit, 320,000 windows


class Model:
    """Stands in for `Generator`: answers `cancer` for every sentence (multi_term, one type),
    records the sentences of each call, and runs `on_call` first (a failure, a slow model, a
    client that goes away). Sentences are streamed to it a batch at a time, as to a
    `Generator` whose rows cannot join a running batch."""

    def batch_continuously(self, fmt: str, types: Sequence[str], intake, done) -> None:
        extract_in_batches(lambda batch: self.extract(batch, fmt, types), intake, done, 64)

    def __init__(self, on_call: Callable[[int], None] = lambda n: None) -> None:
        self.calls: list[list[str]] = []
        self.on_call = on_call
        self.threads: set[int] = set()

    def extract(self, sentences: Sequence[Sentence], fmt: str, types: Sequence[str]):
        self.threads.add(threading.get_ident())
        self.on_call(len(self.calls))
        self.calls.append([s.text for s in sentences])
        writing = get_format(fmt)
        answers = ["cancer"]  # one type: the bare mention
        return [
            Generation(s, answers, writing.parse(answers, s, list(types)), 0) for s in sentences
        ]


class Turns:
    """A `Model`'s `on_call` that paces the model by what the test waits for: before call n
    it waits until `before[n]()` holds (at most `timeout_s`; past it the call goes on and
    `missed` names n, for the test to assert), then runs `then(n)`. A test makes things
    happen while the model is busy on a known call, and reads answers at known points of
    the stream, however slow the box: fixed sleeps did both by the clock, and failed when a
    loaded box was slower than they assumed."""

    def __init__(
        self,
        before: dict[int, Callable[[], object]],
        then: Callable[[int], None] = lambda n: None,
        timeout_s: float = DEADLINE_S,
    ) -> None:
        self.before, self.then, self.timeout_s = before, then, timeout_s
        self.started: list[int] = []  # the model calls begun
        self.missed: list[int] = []  # calls whose condition did not come in time

    def __call__(self, n: int) -> None:
        self.started.append(n)
        if n in self.before:
            try:
                wait_until(self.before[n], self.timeout_s, f"the condition of model call {n}")
            except AssertionError:
                self.missed.append(n)
        self.then(n)

    def reached(self, n: int) -> Callable[[], bool]:
        """A predicate: the model has begun call n."""
        return lambda: n in self.started


def loaded(generator: Any) -> LoadedModel:
    card = ModelCard(format="multi_term", entity_types=TYPES)
    return LoadedModel(Annotator(generator, card, card.format), ModelRef(name="m", uri="/models/m"))


def job(model: LoadedModel, texts: list[str], deadline_s: float = 60.0, rid: str = "r") -> Job:
    windows = check_request(texts, None, Limits(window_tokens=8))
    return Job(model, texts, windows, TYPES, time.monotonic() + deadline_s, rid)


# --------------------------------------------------------------------------- window cap


def test_the_flood_is_refused_before_any_model_work() -> None:
    with pytest.raises(RequestError) as refused:
        check_request(FLOOD, None, Limits())
    err = refused.value
    assert (err.status, err.code, err.field) == (413, "too_many_windows", "texts")
    assert "more than 512" in err.message and "513 counted by texts[0]" in err.message
    assert "limits.max_windows" in err.message


def test_the_window_cap_counts_every_text_and_allows_exactly_the_cap() -> None:
    texts = ["One cancer. Two cancers. Three."] * 4  # 3 windows each
    assert sum(len(ws) for ws in check_request(texts, None, Limits(max_windows=12))) == 12
    with pytest.raises(RequestError, match="12 counted by texts\\[3\\]"):
        check_request(texts, None, Limits(max_windows=11))


# --------------------------------------------------------------------------- deadlines


def test_run_group_sends_windows_in_chunks_and_matches_one_call() -> None:
    texts = ["Colon cancer and fever. " * 3, "No cancer here. Or there.", "x"]
    whole = Model()
    expected = Group([job(loaded(whole), texts)], chunk_size=1000).run()
    chunked = Model()
    got = Group([job(loaded(chunked), texts)], chunk_size=2).run()
    assert got == expected and expected[0].results is not None
    assert len(whole.calls) == 1 and [len(c) for c in chunked.calls] == [2, 2, 2]
    assert [e.text for e in expected[0].results[0].entities] == ["cancer"] * 3


def test_work_of_a_request_whose_client_left_is_dropped() -> None:
    jobs: list[Job] = []

    def client_b_leaves(n: int) -> None:
        if n == 0:
            jobs[1].cancelled = True  # as NERModel.extract does when its caller is cancelled

    model = loaded(Model(client_b_leaves))
    jobs += [job(model, ["Cancer. " * 4], rid="a"), job(model, ["Fever. " * 40], rid="b")]
    results = Group(jobs, chunk_size=2).run()
    assert results[1].results is None and results[0].results is not None
    generated = [text for call in model.generator.calls for text in call]
    assert generated.count("Fever .") <= 2  # at most the first chunk, nothing after it
    assert generated.count("Cancer .") == 4


def test_an_expired_request_costs_no_model_work() -> None:
    model = loaded(Model())
    results = Group([job(model, ["Cancer."], deadline_s=-1.0)], chunk_size=4).run()
    assert [r.results for r in results] == [None] and model.generator.calls == []


# --------------------------------------------------------------------------- NERModel


def ner_model(generator: Any | None = None) -> Any:
    """The replica class itself (no replica: `serve.batch` is bypassed by calling the batch
    function directly)."""
    from biogner.serve.replica import NERModel

    cls = NERModel.func_or_class  # type: ignore[attr-defined]
    replica = cls({}, {}, {"device": "cpu"})
    if generator is not None:
        replica.current = loaded(generator)
    return replica


def test_model_failure_answers_a_request_id_and_logs_the_details(caplog) -> None:
    def broken(n: int) -> None:
        raise RuntimeError("CUDA out of memory at /secret/path")

    replica = ner_model(Model(broken))
    with caplog.at_level(logging.ERROR, logger="biogner.serve.replica"):
        [outcome] = asyncio.run(replica._run_batch([job(replica.current, ["Cancer."])]))
    assert outcome["status"] == 500 and outcome["code"] == "model_error"
    assert "secret" not in json.dumps(outcome) and outcome["request_id"] == "r"
    assert "'r'" in caplog.text and "/secret/path" in caplog.text


def test_generation_runs_off_the_replica_event_loop() -> None:
    """Serve's health check runs on the replica's loop: it must keep turning meanwhile. Each
    model call waits until a watcher on the loop has seen it begin: run on the loop's thread,
    the call would block the watcher, wait out its deadline and be named in `missed`."""
    seen: list[int] = []  # model calls the event loop saw while they ran
    turns = Turns({n: lambda n=n: n in seen for n in range(3)}, timeout_s=10.0)
    replica = ner_model(Model(turns))
    jobs = [job(replica.current, ["Cancer. " * 6])]  # 3 chunks of 2 windows: 3 model calls

    async def batch_and_watch() -> list[dict[str, Any]]:
        batch = asyncio.ensure_future(replica._run_batch(jobs))
        while not batch.done():
            seen.extend(range(len(seen), len(turns.started)))
            await asyncio.sleep(POLL_S)
        return await batch

    replica.generation = replica.generation.model_copy(update={"batch_size": 2})
    outcomes = asyncio.run(batch_and_watch())
    assert outcomes[0]["ok"] and threading.get_ident() not in replica.current.generator.threads
    assert turns.started == seen == [0, 1, 2] and turns.missed == []


def test_an_expired_request_gets_a_504_outcome() -> None:
    replica = ner_model(Model())
    jobs = [job(replica.current, ["Cancer."], deadline_s=-1.0), job(replica.current, ["Fever."])]
    late, ok = asyncio.run(replica._run_batch(jobs))
    assert (late["status"], late["code"]) == (504, "timeout") and ok["ok"]
    assert replica.stats.dropped == 1 and replica.current.generator.calls == [["Fever ."]]


def test_a_failed_reload_keeps_the_old_model_and_reports_it(tmp_path) -> None:
    replica = ner_model(Model())
    old = replica.current
    bad = {"model_uri": str(tmp_path / "no-such-model"), "tracking": {}, "revision": ""}
    asyncio.run(replica.reconfigure(bad))  # does not raise: Serve would restart the replica
    assert replica.current is old
    info = replica.info()
    assert info["model"]["uri"] == "/models/m"
    reload = info["last_reload"]
    assert reload["ok"] is False and reload["model_uri"] == bad["model_uri"]
    assert "does not exist" in reload["error"] and reload["at"] > 0
    [outcome] = asyncio.run(replica._run_batch([job(replica.current, ["Cancer."])]))
    assert outcome["ok"]  # the old model still answers


def test_a_replica_with_no_model_fails_on_a_bad_first_load(tmp_path) -> None:
    replica = ner_model()
    with pytest.raises(FileNotFoundError):
        asyncio.run(replica.reconfigure({"model_uri": str(tmp_path / "none"), "tracking": {}}))
    assert replica.last_reload is not None and replica.last_reload.ok is False


# --------------------------------------------------------------------------- Ingress


class Response:
    """Stands in for a DeploymentResponse: awaits `result` (or never, or raises)."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.cancelled = False

    def __await__(self):
        return self._get().__await__()

    async def _get(self) -> Any:
        if self.result is Ellipsis:
            await asyncio.Event().wait()  # never answers
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    def cancel(self) -> None:
        self.cancelled = True


class Handle:
    """Stands in for the Ingress's DeploymentHandle to NERModel; records every call."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.responses: list[Response] = []

    def __getattr__(self, method: str) -> Any:
        handle = self

        class Method:
            def remote(self, *args: Any) -> Response:
                handle.calls.append((method, args))
                handle.responses.append(Response(handle.result))
                return handle.responses[-1]

        return Method()


def ingress(handle: Handle, monkeypatch, **limits: Any) -> Any:
    from biogner.serve.http import Ingress

    wrapper = Ingress.func_or_class  # type: ignore[attr-defined]
    cls = next(c for c in wrapper.__mro__ if "_authorized" in vars(c))
    monkeypatch.setenv(KEY_ENV, KEY)
    obj = object.__new__(cls)
    cls.__init__(obj, handle, limits, KEY_ENV, True)
    return obj


def request(body: dict[str, Any] | None = None, auth: bool = True) -> Request:
    data = json.dumps(body).encode() if body is not None else b""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    if auth:
        headers.append((b"authorization", f"Bearer {KEY}".encode()))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    return Request(scope, receive)


def error_of(response: Any) -> dict[str, Any]:
    detail: dict[str, Any] = json.loads(response.body)["error"]
    return detail


def test_ingress_refuses_the_flood_without_calling_the_model(monkeypatch) -> None:
    handle = Handle({"ok": True, "response": {}})
    r = asyncio.run(ingress(handle, monkeypatch).extract(request({"texts": FLOOD})))
    assert r.status_code == 413 and error_of(r)["code"] == "too_many_windows"
    assert "more than 512" in error_of(r)["message"] and handle.calls == []


def test_ingress_sends_prepared_windows_and_the_time_left(monkeypatch) -> None:
    handle = Handle({"ok": True, "response": {"results": []}})
    app = ingress(handle, monkeypatch, request_timeout_s=30)
    r = asyncio.run(app.extract(request({"texts": ["Cancer. Fever."]})))
    assert r.status_code == 200
    [(method, (texts, windows, types, left, rid, min_score))] = handle.calls
    assert method == "extract" and texts == ["Cancer. Fever."] and types is None
    assert min_score == 0.0  # the request's default: every entity
    assert [w.sentence.text for w in windows[0]] == ["Cancer .", "Fever ."]
    assert 25 < left <= 30 and len(rid) == 16


def test_a_request_past_its_deadline_gets_a_504_and_is_cancelled(monkeypatch) -> None:
    handle = Handle(Ellipsis)  # the model never answers
    app = ingress(handle, monkeypatch, request_timeout_s=0.2)
    r = asyncio.run(app.extract(request({"texts": ["Cancer."]})))
    assert r.status_code == 504 and error_of(r)["code"] == "timeout"
    assert handle.responses[0].cancelled  # the replica is told to drop the work


def test_internal_errors_send_a_request_id_not_the_exception(monkeypatch, caplog) -> None:
    handle = Handle(RuntimeError("Traceback ... in /secret/replica.py"))
    with caplog.at_level(logging.ERROR, logger="biogner.serve.http"):
        r = asyncio.run(ingress(handle, monkeypatch).extract(request({"texts": ["Cancer."]})))
    err = error_of(r)
    assert r.status_code == 500 and "secret" not in r.body.decode()
    assert err["request_id"] and err["request_id"] in caplog.text
    assert "/secret/replica.py" in caplog.text


def test_a_full_model_queue_is_a_503_with_retry_after(monkeypatch) -> None:
    from ray.serve.exceptions import BackPressureError

    handle = Handle(BackPressureError(num_queued_requests=9, max_queued_requests=8))
    r = asyncio.run(ingress(handle, monkeypatch).extract(request({"texts": ["Cancer."]})))
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert error_of(r)["code"] == "unavailable" and "max_queued" not in r.body.decode()


def test_readyz_shows_details_only_with_the_key(monkeypatch) -> None:
    info = {"model": {"uri": "runs:/0123abcd/model", "run_id": "0123abcd"}, "last_reload": None}
    app = ingress(Handle(info), monkeypatch)
    assert asyncio.run(app.readyz(request(auth=False))) == {"status": "ready"}
    detailed = asyncio.run(app.readyz(request()))
    assert detailed["model"]["run_id"] == "0123abcd" and "last_reload" in detailed
    down = asyncio.run(ingress(Handle(RuntimeError("run 0123abcd")), monkeypatch).readyz(request()))
    assert down.status_code == 503 and "0123abcd" not in down.body.decode()


def test_deployments_get_bounded_queues() -> None:
    from biogner.serve.app import build_application, parse_config

    cfg = parse_config({"model": {"max_queued_requests": 7}, "ingress": {"max_queued_requests": 9}})
    app = build_application(cfg)
    ingress_deployment = app._bound_deployment
    model_deployment = ingress_deployment.init_args[0]._bound_deployment
    assert model_deployment.max_queued_requests == 7
    assert ingress_deployment.max_queued_requests == 9
    assert ingress_deployment.backpressure_config.retry_after_s == cfg.limits.retry_after_s


def parked(replica: Any) -> int:
    """Requests that joined a running group or wait for a batch: where a request sent while
    the model is busy goes before the model goes on."""
    return int(replica.stats.joined + replica._batched.waiting)


def test_a_small_request_is_not_held_behind_a_big_neighbour() -> None:
    """Head-of-line blocking (#29): a one-sentence request sent just after a 40-sentence one
    was answered only when the big one was. Now a batch takes at most `max_batch_windows`
    windows of a big request (it queues again for the rest) and answers each request as soon
    as its own windows are done. The small one comes during the big one's first model call,
    and the model's 4th call waits for its answer (held behind the big one, it would wait in
    vain: `missed`)."""
    from biogner.serve.replica import NERModel

    cls = NERModel.func_or_class  # type: ignore[attr-defined]
    replica = cls({"max_batch_windows": 8}, {}, {"device": "cpu", "batch_size": 4})
    answered: dict[str, int] = {}  # request -> model calls made when it was answered
    turns = Turns({0: lambda: parked(replica) == 1, 3: lambda: "small" in answered})
    model = Model(turns)
    replica.current = loaded(model)
    big_texts = ["We saw cancer. " * 40]
    big_windows = check_request(big_texts, None, Limits(window_tokens=8))
    small_windows = check_request(["Fever."], None, Limits(window_tokens=8))

    async def send(name: str, texts: list[str], windows: Any) -> Any:
        outcome = await replica.extract(texts, windows, None, 60.0, name)
        answered[name] = len(model.calls)
        return outcome

    async def both() -> list[Any]:
        big = asyncio.ensure_future(send("big", big_texts, big_windows))
        await wait_until_async(turns.reached(0), what="the big one's first model call")
        small = asyncio.ensure_future(send("small", ["Fever."], small_windows))
        return list(await asyncio.gather(big, small))

    big, small = asyncio.run(both())
    assert big["ok"] and small["ok"] and turns.missed == []
    assert len(big["response"]["results"][0]["entities"]) == 40  # all of it, once
    assert sum(len(c) for c in model.calls) == 41  # every window generated exactly once
    assert answered["small"] <= 3 < answered["big"] == len(model.calls) == 11
    assert max(len(c) for c in model.calls) <= 4


# --------------------------------------------------------------------------- joining


def joining_replica(on_call: Callable[[int], None], join: bool = True) -> Any:
    from biogner.serve.replica import NERModel

    cls = NERModel.func_or_class  # type: ignore[attr-defined]
    batching = {"max_batch_windows": 64, "join_running": join}
    replica = cls(batching, {}, {"device": "cpu", "batch_size": 2})
    replica.current = loaded(Model(on_call))
    return replica


async def send(replica: Any, name: str, text: str, timeout_s: float = 60.0) -> Any:
    windows = check_request([text], None, Limits(window_tokens=8))
    return await replica.extract([text], windows, None, timeout_s, name)


@pytest.mark.parametrize("join", [True, False])
def test_a_request_joins_the_batch_running_for_its_questions(join: bool) -> None:
    """A request that comes while a batch of the same questions is decoded joins it (its
    windows go in as the model has room) and is answered as soon as they are done, not
    after the batch, nor with the next one (`batching.join_running`; off: the next one).
    The late one comes during the long one's 2nd call; the 6th call waits until the long one
    is answered (answered only after the batch, it would wait in vain: `missed`)."""
    answered: dict[str, int] = {}
    go = threading.Event()
    turns = Turns({1: go.is_set, 5: lambda: "long" in answered})
    replica = joining_replica(turns, join)

    async def client(name: str, text: str) -> Any:
        outcome = await send(replica, name, text)
        answered[name] = len(replica.current.generator.calls)
        return outcome

    async def run() -> list[Any]:
        long = asyncio.ensure_future(client("long", "We saw cancer. " * 10))  # 10 windows: 5 calls
        await wait_until_async(turns.reached(1), what="the long one's 2nd model call")
        late = asyncio.ensure_future(client("late", "Fever."))
        await wait_until_async(lambda: parked(replica) == 1, what="the late one joined or queued")
        go.set()
        return list(await asyncio.gather(long, late))

    long, late = asyncio.run(run())
    assert long["ok"] and late["ok"] and turns.missed == []
    if not join:
        assert replica.stats.joined == 0 and replica.stats.batches == 2
        assert (answered["long"], answered["late"]) == (5, 6)  # after it: a batch of its own
        return
    assert replica.stats.joined == 1 and replica.stats.batches == 1
    assert [e["text"] for e in late["response"]["results"][0]["entities"]] == []
    # in the long one's stream, right after its windows (2 a call: the long one's 5 first)
    assert (answered["long"], answered["late"]) == (5, 6)
    assert replica.current.generator.calls[5] == ["Fever ."]


def test_no_request_joins_while_another_waits_for_a_batch() -> None:
    """Joining only while the batch queue is empty: a stream that kept taking requests would
    starve one waiting for other questions (or a new model). During the long one's 2nd call
    a request for another model queues, then the late one comes."""
    go = threading.Event()
    turns = Turns({1: go.is_set})
    replica = joining_replica(turns)
    other_model = loaded(Model())

    async def other_types() -> Any:  # another model: its own batch, after this one
        windows = check_request(["Rash."], None, Limits(window_tokens=8))
        job = Job(other_model, ["Rash."], windows, TYPES, time.monotonic() + 60, "other")
        return await replica._batched(job)

    async def run() -> list[Any]:
        long = asyncio.ensure_future(send(replica, "long", "We saw cancer. " * 10))
        await wait_until_async(turns.reached(1), what="the long one's 2nd model call")
        other = asyncio.ensure_future(other_types())
        await wait_until_async(lambda: parked(replica) == 1, what="the other one queued")
        late = asyncio.ensure_future(send(replica, "late", "Fever."))  # the other one waits
        await wait_until_async(lambda: parked(replica) == 2, what="the late one joined or queued")
        go.set()
        return list(await asyncio.gather(long, other, late))

    long, _, late = asyncio.run(run())
    assert long["ok"] and late["ok"] and turns.missed == []
    # the late one waited for the next batch, with the other model's request
    assert replica.stats.joined == 0 and replica.stats.batches == 2


def test_a_joined_request_past_its_deadline_is_answered_when_its_turn_comes() -> None:
    """Its windows are dropped when they would go in, and it gets its 504 then, not when
    the stream it joined ends (which requests joining after it keep going). Both join
    during the long one's first call, which waits until the late one's deadline has passed;
    the 5th call (the later one's first, right after the late one's turn) waits for the 504
    (answered only when the stream ends, it would wait in vain: `missed`)."""
    answered: dict[str, int] = {}  # request -> model calls made when it was answered
    go = threading.Event()
    turns = Turns({0: go.is_set, 4: lambda: "late" in answered})
    replica = joining_replica(turns)

    async def client(name: str, text: str, timeout_s: float) -> Any:
        outcome = await send(replica, name, text, timeout_s)
        answered[name] = len(replica.current.generator.calls)
        return outcome

    async def run() -> list[Any]:
        long = asyncio.ensure_future(client("long", "We saw cancer. " * 8, 60.0))  # 4 calls
        await wait_until_async(turns.reached(0), what="the long one's first model call")
        # joins with 2 windows queued behind 6: past its deadline when they go in
        late = asyncio.ensure_future(client("late", "Fever. Rash.", 0.05))
        await wait_until_async(lambda: parked(replica) == 1, what="the late one joined")
        late_deadline = time.monotonic() + 0.05  # past the one `extract` gave it
        later = asyncio.ensure_future(client("later", "Cough. " * 8, 60.0))  # 4 calls more
        await wait_until_async(lambda: parked(replica) == 2, what="the later one joined")
        await wait_until_async(lambda: time.monotonic() > late_deadline, what="the deadline")
        go.set()
        return list(await asyncio.gather(long, late, later))

    long, late, later = asyncio.run(run())
    assert long["ok"] and later["ok"] and (late["status"], late["code"]) == (504, "timeout")
    assert replica.stats.joined == 2 and replica.stats.dropped == 1 and turns.missed == []
    assert answered["late"] == 4 < answered["later"] == 8  # at its turn, before the later one's
    calls = [t for call in replica.current.generator.calls for t in call]
    assert "Fever ." not in calls and "Rash ." not in calls and calls.count("Cough .") == 8


def test_a_model_failure_answers_joined_requests_too() -> None:
    go = threading.Event()

    def fails_third(n: int) -> None:
        if n == 2:
            raise RuntimeError("model broke")

    turns = Turns({1: go.is_set}, then=fails_third)
    replica = joining_replica(turns)

    async def run() -> list[Any]:
        long = asyncio.ensure_future(send(replica, "long", "We saw cancer. " * 10))
        await wait_until_async(turns.reached(1), what="the long one's 2nd model call")
        late = asyncio.ensure_future(send(replica, "late", "Fever."))
        await wait_until_async(lambda: parked(replica) == 1, what="the late one joined")
        go.set()
        return list(await asyncio.gather(long, late))

    long, late = asyncio.run(run())
    assert replica.stats.joined == 1
    assert (long["status"], late["status"]) == (500, 500)
    assert late["request_id"] == "late"
