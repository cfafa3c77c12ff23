"""The HTTP ingress (`Ingress`, FastAPI `api`): auth, body and request limits, JSON errors.

Why a deployment of its own: every check a request can fail (auth, size, JSON, the window
count) runs here, before it costs model work, and its windows are prepared here, off the
model replica's event loop (`check_request` in a thread). The model replica sees only
valid, counted work; a request past `limits.request_timeout_s` gets a 504 and its handle call
is cancelled, so the replica drops the rest of its work.
"""

# No `from __future__ import annotations`: FastAPI must see real annotations on the methods.

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from biogner.serve.auth import api_key_from_env
from biogner.serve.errors import ERROR_RESPONSES, error, outcome_error
from biogner.serve.requests import RequestError, check_request, parse_request
from biogner.serve.schema import ExtractRequest, ExtractResponse, Limits, ModelInfo

log = logging.getLogger(__name__)

INGRESS_DEPLOYMENT = "Ingress"
READY_TIMEOUT_S = 5.0
READY_CACHE_S = 2.0  # a readiness answer serves every /readyz for this long
JSON_MEDIA_TYPE = "application/json"

api = FastAPI(
    title="biogner NER",
    version="1",
    description="Biomedical named entity recognition with a fine-tuned generative model.",
)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error(exc.status_code, "http_error", str(exc.detail))


def _unavailable(exc: BaseException) -> bool:
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import (
        BackPressureError,
        DeploymentUnavailableError,
        ReplicaUnavailableError,
    )

    return isinstance(
        exc,
        RayActorError | BackPressureError | DeploymentUnavailableError | ReplicaUnavailableError,
    )


def _request_id() -> str:
    """Names one request in error responses and in the log lines that hold the details."""
    return uuid.uuid4().hex[:16]


async def _await_cancelling(response: Any, timeout_s: float) -> Any:
    """The result of a handle call; past `timeout_s` (TimeoutError) or when the caller is
    cancelled (its client went away), the call is cancelled too, so that the model replica
    does not keep working for nobody."""
    try:
        return await asyncio.wait_for(_result(response), timeout_s)
    except (TimeoutError, asyncio.CancelledError):
        response.cancel()
        raise


async def _result(response: Any) -> Any:
    return await response


@serve.deployment(name=INGRESS_DEPLOYMENT)
@serve.ingress(api)
class Ingress:
    """HTTP: validation, limits, auth and JSON errors; the work is done by NERModel."""

    def __init__(
        self,
        model: DeploymentHandle,
        limits: Mapping[str, Any],
        api_key_env: str,
        require_auth: bool = False,
    ):
        self.model = model
        self.limits = Limits.model_validate(limits)
        # Stripped of whitespace; unset/blank = no auth, unless require_auth: then
        # MissingAPIKeyError (naming the variable) and the replica does not start.
        self.api_key = api_key_from_env(api_key_env, require_auth)
        if self.api_key is None:
            log.warning("%s is not set: the endpoint does not check API keys", api_key_env)
        # readiness: the last answer (time, info or None) and the one probe in flight, shared
        # by every /readyz meanwhile: a flood of them costs the model one call per READY_CACHE_S
        self._ready: tuple[float, dict[str, Any] | None] = (-READY_CACHE_S, None)
        self._probe: asyncio.Task[dict[str, Any] | None] | None = None

    def _authorized(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(
            token.strip().encode(), self.api_key.encode()
        )

    async def _call(self, request_id: str, timeout_s: float, method: str, *args: Any) -> Any:
        """`method` of the model deployment, or a JSON error that tells the client no
        internals (they are logged under `request_id`). Past `timeout_s` the call is
        cancelled and the client gets a 504."""
        try:
            return await _await_cancelling(getattr(self.model, method).remote(*args), timeout_s)
        except TimeoutError:
            log.warning(
                "request %s: model call %s timed out after %.1f s", request_id, method, timeout_s
            )
            return error(
                504,
                "timeout",
                f"not answered within {timeout_s:.1f} s (limits.request_timeout_s)",
                request_id=request_id,
            )
        except Exception as exc:
            if _unavailable(exc):
                log.warning("request %s: model unavailable: %s", request_id, exc)
                return error(
                    503,
                    "unavailable",
                    "the model is busy or unavailable: retry later",
                    request_id=request_id,
                    retry_after_s=self.limits.retry_after_s,
                )
            log.exception("request %s: model call %s failed", request_id, method)
            return error(500, "internal", "internal error", request_id=request_id)

    async def _read_body(self, request: Request) -> bytes | JSONResponse:
        """The body, if it is JSON, within `max_body_bytes` and sent within `body_timeout_s`."""
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != JSON_MEDIA_TYPE:
            # a text/plain or form POST is a browser "simple request": any web page could send
            # it to an endpoint on 127.0.0.1 without a CORS preflight
            return error(
                415,
                "unsupported_media_type",
                f"Content-Type must be {JSON_MEDIA_TYPE} (got {media_type or 'none'!r:.60})",
                "content-type",
            )
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return error(413, "body_too_large", f"{declared} bytes; at most {limit}", "body")
        try:
            return await asyncio.wait_for(self._stream_body(request), self.limits.body_timeout_s)
        except TimeoutError:
            return error(
                408,
                "body_timeout",
                f"body not received within {self.limits.body_timeout_s:.1f} s "
                "(limits.body_timeout_s)",
                "body",
            )

    async def _stream_body(self, request: Request) -> bytes | JSONResponse:
        limit = self.limits.max_body_bytes
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                return error(413, "body_too_large", f"more than {limit} bytes", "body")
        return bytes(body)

    async def _readiness(self) -> dict[str, Any] | None:
        """The model's info if a replica answers with a model loaded, else None; answered from
        the last probe when it is recent, else from the one probe in flight."""
        at, info = self._ready
        if time.monotonic() - at < READY_CACHE_S:
            return info
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._probe_model())
        return await asyncio.shield(self._probe)

    async def _unknown_types(
        self, requested: list[str] | None
    ) -> tuple[list[str], list[str]] | None:
        """(unknown, known) when the served model's card lacks a requested type: refused here,
        before the request takes a place in the model's queue (the replica checks again: a
        swap may have changed the model meanwhile)."""
        if not requested:
            return None
        info = await self._readiness()
        known = [str(t) for t in (info or {}).get("entity_types") or []]
        unknown = sorted({t for t in requested if t not in known})
        return (unknown, known) if known and unknown else None

    async def _probe_model(self) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] | None = await _await_cancelling(
                self.model.info.remote(), READY_TIMEOUT_S
            )
        except Exception as exc:
            log.warning("not ready: %s: %s", type(exc).__name__, exc)
            info = None
        self._ready = (time.monotonic(), info)
        return info

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """The HTTP front is up (says nothing about the model)."""
        return {"status": "ok"}

    @api.get("/readyz", responses=ERROR_RESPONSES)
    async def readyz(self, request: Request) -> Any:
        """A model replica answers and has a model loaded. Which model, and how its last
        reload went, only with the API key (run ids and errors are not for anyone)."""
        info = await self._readiness()
        if info is None:
            return error(
                503, "not_ready", "model not ready", retry_after_s=self.limits.retry_after_s
            )
        if not self._authorized(request):
            return {"status": "ready"}
        return {"status": "ready", "model": info["model"], "last_reload": info["last_reload"]}

    @api.get("/v1/model", response_model=ModelInfo, responses=ERROR_RESPONSES)
    async def model_info(self, request: Request) -> Any:
        """The model served (registry version included), its last reload and alias check."""
        if not self._authorized(request):
            return error(401, "unauthorized", "missing or wrong Bearer API key", "authorization")
        return await self._call(_request_id(), self.limits.request_timeout_s, "info")

    @api.get("/v1/stats", responses=ERROR_RESPONSES)
    async def stats(self, request: Request) -> Any:
        """Batching counters of the replica that answers (one replica per call)."""
        if not self._authorized(request):
            return error(401, "unauthorized", "missing or wrong Bearer API key", "authorization")
        return await self._call(_request_id(), self.limits.request_timeout_s, "get_stats")

    @api.post(
        "/v1/extract",
        response_model=ExtractResponse,
        responses=ERROR_RESPONSES,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ExtractRequest.model_json_schema()}},
            }
        },
    )
    async def extract(self, request: Request) -> Any:
        """Entities of each text, with character offsets into that text."""
        deadline = time.monotonic() + self.limits.request_timeout_s
        if not self._authorized(request):
            return error(401, "unauthorized", "missing or wrong Bearer API key", "authorization")
        body = await self._read_body(request)
        if isinstance(body, JSONResponse):
            return body
        if not body.strip():
            return error(400, "empty_body", "request body is empty", "body")
        try:  # parsing, validation and the window count: before any model work, off the loop
            req = await asyncio.to_thread(parse_request, body, self.limits)
            windows = await asyncio.to_thread(
                check_request, req.texts, req.entity_types, self.limits
            )
        except RequestError as exc:
            return error(exc.status, exc.code, exc.message, exc.field)
        unknown = await self._unknown_types(req.entity_types)
        if unknown:
            return error(
                422,
                "unknown_entity_types",
                f"unknown entity types {unknown[0]}; this model knows {unknown[1]}",
                "entity_types",
            )
        request_id = _request_id()
        left = deadline - time.monotonic()
        args = (req.texts, windows, req.entity_types, left, request_id, req.min_score)
        outcome = await self._call(request_id, left, "extract", *args)
        if isinstance(outcome, JSONResponse):
            return outcome
        if not outcome["ok"]:
            return outcome_error(outcome)
        return JSONResponse(outcome["response"])


__all__ = ["INGRESS_DEPLOYMENT", "Ingress", "api"]
