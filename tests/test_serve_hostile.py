"""Hostile requests at the ingress (#29): a type bomb, a browser's simple request, a slow
upload, a readiness flood, and error texts that would show server paths. The Ingress class
runs for real, with the stand-in model handle of test_serve_reliability.py (no Ray)."""

from __future__ import annotations

import asyncio
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from test_serve_reliability import KEY, Handle, error_of, ingress

from biogner.serve import http
from biogner.serve.errors import without_paths
from biogner.serve.requests import RequestError, parse_request
from biogner.serve.schema import Limits

ROOT = Path(__file__).parents[1]
BOMB = b'{"texts": [' + b",".join([b"0"] * 990_000) + b"]}"  # 1.98 MB of integers


def raw_request(
    body: bytes, content_type: str | None = "application/json", stall: bool = False
) -> Request:
    headers = [(b"authorization", f"Bearer {KEY}".encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent and stall:
            await asyncio.Event().wait()  # a client that never sends the rest
        more = stall and not sent
        sent = True
        return {"type": "http.request", "body": body, "more_body": more}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


def test_a_type_bomb_is_refused_by_its_length_not_element_by_element() -> None:
    assert len(BOMB) < Limits().max_body_bytes
    with pytest.raises(RequestError) as refused:
        parse_request(BOMB, Limits())
    err = refused.value
    assert (err.status, err.code, err.field) == (422, "too_many_texts", "texts")
    assert err.message == "990000 texts; at most 64 per request"
    types_bomb = b'{"texts": ["a"], "entity_types": [' + b",".join([b"1"] * 100_000) + b"]}"
    with pytest.raises(RequestError, match="100000 entity_types; at most 32"):
        parse_request(types_bomb, Limits())


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 400, "not_json", "body"),
        (b'{"texts": ["a", 3]}', 422, "invalid", "texts[1]"),
        (b'{"texts": ["a"], "extra": 1}', 422, "invalid", "extra"),
        (b'"just a string"', 422, "invalid", "body"),
        (b'{"texts": ["caf\xe9"]}', 400, "not_utf8", "body"),
    ],
)
def test_malformed_bodies_name_what_is_wrong(body: bytes, status: int, code: str, field: str):
    with pytest.raises(RequestError) as refused:
        parse_request(body, Limits())
    assert (refused.value.status, refused.value.code, refused.value.field) == (status, code, field)


def test_the_body_is_parsed_off_the_event_loop(monkeypatch) -> None:
    """Parsing and validating run in a worker thread: a big body never stalls /healthz."""
    threads: list[int] = []
    real = http.parse_request

    def recording(body: bytes, limits: Limits) -> Any:
        threads.append(threading.get_ident())
        return real(body, limits)

    handle = Handle({"ok": True, "response": {"results": []}})
    app = ingress(handle, monkeypatch)
    # Serve's ingress wrapper gives the class's methods their own copy of the module globals
    monkeypatch.setitem(type(app).extract.__globals__, "parse_request", recording)
    r = asyncio.run(app.extract(raw_request(BOMB)))
    assert r.status_code == 422 and handle.calls == []
    assert threads and threads[0] != threading.get_ident()


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_only_json_bodies_are_read(monkeypatch, content_type: str | None) -> None:
    """A text/plain or form POST is what any web page may send without a CORS preflight."""
    handle = Handle({"ok": True, "response": {"results": []}})
    r = asyncio.run(
        ingress(handle, monkeypatch).extract(raw_request(b'{"texts": ["a"]}', content_type))
    )
    assert r.status_code == 415 and error_of(r)["code"] == "unsupported_media_type"
    assert error_of(r)["field"] == "content-type" and handle.calls == []
    ok = asyncio.run(
        ingress(handle, monkeypatch).extract(
            raw_request(b'{"texts": ["a"]}', "Application/JSON; charset=utf-8")
        )
    )
    assert ok.status_code == 200


def test_a_slow_upload_gets_a_408_and_frees_its_slot(monkeypatch) -> None:
    handle = Handle({"ok": True, "response": {"results": []}})
    app = ingress(handle, monkeypatch, body_timeout_s=0.2)
    r = asyncio.run(app.extract(raw_request(b'{"texts": ["a', stall=True)))
    assert r.status_code == 408 and error_of(r)["code"] == "body_timeout"
    assert "limits.body_timeout_s" in error_of(r)["message"] and handle.calls == []


class SlowInfo(Handle):
    """Answers `info` after a few turns of the event loop, as a busy replica answers later
    (turns, not seconds: every request of a flood is in before it answers, however slow the
    box)."""

    def __getattr__(self, method: str) -> Any:
        inner = super().__getattr__(method)

        class Method:
            def remote(self, *args: Any) -> Any:
                response = inner.remote(*args)

                async def later() -> Any:
                    for _ in range(20):
                        await asyncio.sleep(0)
                    return await response

                class Delayed:
                    def __await__(self):
                        return later().__await__()

                    def cancel(self) -> None:
                        response.cancel()

                return Delayed()

        return Method()


def test_a_readiness_flood_costs_the_model_one_call(monkeypatch) -> None:
    """Anonymous /readyz must not fill the model's queue (keyed /v1/extract got 503s)."""
    info = {"model": {"uri": "runs:/r/model"}, "last_reload": None}
    handle = SlowInfo(info)
    app = ingress(handle, monkeypatch)

    def anonymous() -> Request:
        return Request({"type": "http", "method": "GET", "path": "/readyz", "headers": []})

    async def flood() -> list[Any]:
        return list(await asyncio.gather(*(app.readyz(anonymous()) for _ in range(200))))

    answers = asyncio.run(flood())
    assert answers == [{"status": "ready"}] * 200
    assert [method for method, _ in handle.calls] == ["info"]


def test_reload_errors_name_no_server_path() -> None:
    from biogner.serve.swaps import _describe

    exc = FileNotFoundError(
        "/tmp/biogner-serve-k2/model/biogner_model.json not found: not a biogner model directory"
    )
    text = _describe(exc)
    assert "/tmp" not in text and text.startswith("FileNotFoundError: <path> not found")
    assert without_paths("models:/biogner/3 (runs:/0a1b/model) failed") == (
        "models:/biogner/3 (runs:/0a1b/model) failed"
    )
    assert "/home" not in without_paths("OSError: cannot open '/home/a b/c.bin'")
    assert without_paths("sqlite:///srv/mlflow.db locked") == "sqlite:///<path> locked"


def test_the_declared_python_raises_the_timeout_serving_catches() -> None:
    """`asyncio.wait_for` raises `asyncio.TimeoutError`, the builtin only from 3.11 on: on
    3.10 the ingress answered a timeout with a 500. The project requires 3.11."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"].startswith(">=3.11")
    assert asyncio.TimeoutError is TimeoutError


def test_unknown_types_are_refused_at_the_ingress_from_the_served_card(monkeypatch) -> None:
    answer = {
        "ok": True,
        "response": {"results": []},
        "entity_types": ["Chemical", "Disease"],
        "model": {"uri": "m"},
        "last_reload": None,
    }
    handle = Handle(answer)
    app = ingress(handle, monkeypatch)
    body = b'{"texts": ["Aspirin."], "entity_types": ["Chemical", "GENE", "protein"]}'
    r = asyncio.run(app.extract(raw_request(body)))
    assert r.status_code == 422 and error_of(r)["code"] == "unknown_entity_types"
    assert "['GENE', 'protein']" in error_of(r)["message"]
    assert [method for method, _ in handle.calls] == ["info"]  # no place in the model queue
    ok = asyncio.run(app.extract(raw_request(b'{"texts": ["A."], "entity_types": ["Disease"]}')))
    assert ok.status_code == 200
    assert [method for method, _ in handle.calls] == ["info", "extract"]  # the card was cached


class Answers:
    """Stands in for the Generator: marks the first word as every type it is asked for
    (streamed sentences a batch at a time)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def batch_continuously(self, fmt: str, types: Any, intake: Any, done: Any) -> None:
        from biogner.generation.generator import extract_in_batches

        extract_in_batches(lambda batch: self.extract(batch, fmt, types), intake, done, 64)

    def extract(self, sentences: Any, fmt: str, types: Any) -> list[Any]:
        from biogner.formats.base import ParseResult
        from biogner.generation import Generation
        from biogner.types import Span

        self.calls.append(list(types))
        out = []
        for s in sentences:
            first = len(s.tokens[0])
            spans = [Span(0, first, t) for t in types]
            out.append(Generation(s, ["x"], ParseResult(spans=spans), 1))
        return out


def test_requests_for_types_of_one_group_are_one_model_call() -> None:
    """Each distinct entity_types subset was its own batch group (batching defeated)."""
    import time

    from biogner.annotate.annotator import Annotator
    from biogner.models.card import ModelCard
    from biogner.serve.loaded import LoadedModel
    from biogner.serve.requests import check_request
    from biogner.serve.scheduling import Group, Job
    from biogner.serve.schema import ModelRef

    types = ["Chemical", "Disease", "Species"]
    card = ModelCard(
        format="multi_term", entity_types=types, type_groups=[["Chemical", "Disease"], ["Species"]]
    )
    generator = Answers()
    model = LoadedModel(Annotator(generator, card, card.format), ModelRef(uri="m"))  # type: ignore[arg-type]
    assert model.asked_types(["Disease"]) == model.asked_types(["Chemical"]) == types[:2]
    assert model.asked_types(["Species", "Chemical"]) == types

    def job(wanted: list[str]) -> Job:
        texts = ["Aspirin helps.", "Fever rose."]
        windows = check_request(texts, wanted, Limits())
        return Job(model, texts, windows, wanted, time.monotonic() + 60)

    chemical, disease = (
        o.results for o in Group([job(["Chemical"]), job(["Disease"])], chunk_size=64).run()
    )
    assert generator.calls == [["Chemical", "Disease"]]  # one call for both requests
    assert chemical is not None and disease is not None
    assert {e.label for r in chemical for e in r.entities} == {"Chemical"}
    assert {e.label for r in disease for e in r.entities} == {"Disease"}
    assert [e.text for r in chemical for e in r.entities] == ["Aspirin", "Fever"]
