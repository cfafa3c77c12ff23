"""The Ray Serve application: an HTTP ingress (FastAPI) in front of a batched NER model.

`NERModel` holds one model per replica. Requests from many clients are merged by
`@serve.batch`; their sentence windows go to the model `generation.batch_size` at a time, off
the replica's event loop (Serve's health checks run on it). The ingress checks every limit,
the window count included, before a request costs model work; a request past
`limits.request_timeout_s` gets a 504 and its remaining windows are dropped.
`reconfigure(user_config)` swaps the model in place (champion swap): requests accepted before
the swap are answered by the model they were validated against, later ones by the new model;
nothing in flight is dropped, and a model that fails to load leaves the old one serving.

Start it with `serve run biogner.serve.app:build_app model_uri=...`, a config file under
`serve_configs/`, or `biogner serve`.
"""

# No `from __future__ import annotations`: FastAPI must see real annotations on the methods.

import asyncio
import hashlib
import json
import logging
import os
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from biogner.config import deep_merge, parse_overrides, validate
from biogner.formats import get_format
from biogner.generation import GenerationConfig
from biogner.serve import engine
from biogner.serve.auth import api_key_from_env
from biogner.serve.schema import (
    BatchInfo,
    Batching,
    ErrorResponse,
    ExtractRequest,
    ExtractResponse,
    Limits,
    ModelInfo,
    ReloadStatus,
    ServeConfig,
    TextResult,
    Tracking,
)
from biogner.serve.text import Window

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------- model replica


@dataclass
class BatchStats:
    """Counters of one replica, for /v1/stats (and the benchmark's mean batch size)."""

    batches: int = 0
    requests: int = 0
    windows: int = 0
    failures: int = 0
    dropped: int = 0
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
            "mean_batch_size": self.requests / self.batches if self.batches else 0.0,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


def _replica_id() -> str:
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside a replica (direct use in tests)
        return f"pid-{os.getpid()}"


def _check_ongoing(batching: Batching) -> None:
    """Refuse to start a replica whose Serve options would starve its batches (the options
    may come from a config file's `deployments:` section, which build_app never sees)."""
    try:
        limit = serve.get_replica_context()._deployment_config.max_ongoing_requests
    except Exception:
        return
    need = batching.max_batch_size * batching.max_concurrent_batches
    if limit < need:
        raise ValueError(
            f"NERModel max_ongoing_requests ({limit}) must be >= max_batch_size "
            f"({batching.max_batch_size}) * max_concurrent_batches "
            f"({batching.max_concurrent_batches}) = {need}"
        )


@serve.deployment(name="NERModel")
class NERModel:
    """One model in memory; batched extraction; in-place model swaps via user_config."""

    def __init__(
        self, batching: Mapping[str, Any], limits: Mapping[str, Any], generation: Mapping[str, Any]
    ) -> None:
        self.batching = Batching.model_validate(batching)
        self.limits = Limits.model_validate(limits)
        self.generation = GenerationConfig.model_validate(generation)
        _check_ongoing(self.batching)
        self.replica = _replica_id()
        self.stats = BatchStats()
        self.current: engine.LoadedModel | None = None
        self.last_reload: ReloadStatus | None = None
        self._user_config: dict[str, Any] | None = None
        self._swap_lock = asyncio.Lock()
        self._batched = serve.batch(
            max_batch_size=self.batching.max_batch_size,
            batch_wait_timeout_s=self.batching.batch_wait_timeout_s,
            max_concurrent_batches=self.batching.max_concurrent_batches,
        )(self._run_batch)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load the model named by user_config and swap it in.

        A failed load keeps the old model serving and is reported (`last_reload` in
        /v1/model, the log): raising would make Serve restart the replica with the same
        config, an outage. Only a replica with no model yet raises."""
        async with self._swap_lock:
            if user_config == self._user_config and self.current is not None:
                return
            uri = str(user_config["model_uri"])
            tracking = Tracking.model_validate(user_config.get("tracking") or {})
            log.info("replica %s loading %s", self.replica, uri)
            try:
                new = await asyncio.to_thread(engine.load, uri, tracking, self.generation)
            except Exception as exc:
                self.last_reload = ReloadStatus(
                    ok=False, model_uri=uri, at=time.time(), error=f"{type(exc).__name__}: {exc}"
                )
                if self.current is None:
                    raise
                log.exception(
                    "replica %s: loading %s failed; still serving %s",
                    self.replica,
                    uri,
                    self.current.ref.uri,
                )
                return
            self.last_reload = ReloadStatus(ok=True, model_uri=uri, at=time.time())
            old, self.current, self._user_config = self.current, new, dict(user_config)
            log.info("replica %s now serves %s (%s)", self.replica, uri, new.ref)
            if old is not None:
                old.close()  # files only: jobs still holding `old` keep its weights alive

    def check_health(self) -> None:
        if self.current is None:
            raise RuntimeError("no model loaded")

    def info(self) -> dict[str, Any]:
        model = self._require_model()
        return ModelInfo(
            model=model.ref,
            format=model.format,
            entity_types=model.entity_types,
            base_model=model.metadata.get("base_model"),
            corpora=list(model.metadata.get("corpora") or []),
            constrained=self.generation.constrained
            and get_format(model.format).writing.constrainable,
            loaded_at=model.loaded_at,
            replica=self.replica,
            last_reload=self.last_reload,
        ).model_dump(mode="json")

    def get_stats(self) -> dict[str, Any]:
        return {"replica": self.replica, **self.stats.to_dict()}

    def _require_model(self) -> engine.LoadedModel:
        if self.current is None:
            raise RuntimeError("no model loaded yet")
        return self.current

    async def extract(
        self,
        texts: list[str],
        windows: list[list[Window]],
        entity_types: list[str] | None,
        timeout_s: float,
        request_id: str,
    ) -> dict[str, Any]:
        """Entities for `texts`, whose windows the ingress prepared and counted (off this
        replica's event loop); `timeout_s` is what is left of the request's deadline.

        Returns {"ok": True, "response": ...} or {"ok": False, ...}: an expected refusal is
        data, not an exception (the ingress maps it to a 4xx/5xx)."""
        deadline = time.monotonic() + timeout_s
        try:
            model = self._require_model()
            types = model.select_types(entity_types)
        except engine.RequestError as exc:
            return {"ok": False, **exc.to_dict()}
        job = engine.Job(model, texts, windows, types, deadline, request_id)
        try:
            outcome: dict[str, Any] = await self._batched(job)
        except asyncio.CancelledError:
            job.cancelled = True  # the caller is gone: the batch loop drops its windows
            raise
        return outcome

    async def _run_batch(self, jobs: list[engine.Job]) -> list[dict[str, Any]]:
        """One batch: jobs grouped by (model, entity types), each group served in a thread."""
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((id(job.model), tuple(job.types)), []).append(i)
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
        try:
            results = await asyncio.to_thread(engine.run_group, jobs, self.generation.batch_size)
        except Exception:  # the replica keeps serving; these requests get a 500
            ids = [job.request_id for job in jobs]
            log.exception("model failure in a batch of requests %s", ids)
            self.stats.failures += len(jobs)
            return [
                refusal(500, "model_error", "the model failed on this request", job.request_id)
                for job in jobs
            ]
        return [self._answer(job, res, batch) for job, res in zip(jobs, results, strict=True)]

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


def refusal(status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
    """A model-side outcome the ingress turns into a JSON error."""
    return {
        "ok": False,
        "status": status,
        "code": code,
        "message": message,
        "field": None,
        "request_id": request_id,
    }


# --------------------------------------------------------------------------- HTTP ingress

api = FastAPI(
    title="biogner NER",
    version="1",
    description="Biomedical named entity recognition with a fine-tuned generative model.",
)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 500, 503, 504)
}


def error(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    request_id: str | None = None,
    retry_after_s: int | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    if request_id is not None:
        body["error"]["request_id"] = request_id
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return JSONResponse(body, status_code=status, headers=headers or None)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error(exc.status_code, "http_error", str(exc.detail))


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


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


@serve.deployment(name="Ingress")
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
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return error(413, "body_too_large", f"{declared} bytes; at most {limit}", "body")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                return error(413, "body_too_large", f"more than {limit} bytes", "body")
        return bytes(body)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """The HTTP front is up (says nothing about the model)."""
        return {"status": "ok"}

    @api.get("/readyz", responses=ERROR_RESPONSES)
    async def readyz(self, request: Request) -> Any:
        """A model replica answers and has a model loaded. Which model, and how its last
        reload went, only with the API key (run ids and errors are not for anyone)."""
        try:
            info = await _await_cancelling(self.model.info.remote(), READY_TIMEOUT_S)
        except Exception as exc:
            log.warning("not ready: %s: %s", type(exc).__name__, exc)
            return error(
                503, "not_ready", "model not ready", retry_after_s=self.limits.retry_after_s
            )
        if not self._authorized(request):
            return {"status": "ready"}
        return {"status": "ready", "model": info["model"], "last_reload": info["last_reload"]}

    @api.get("/v1/model", response_model=ModelInfo, responses=ERROR_RESPONSES)
    async def model_info(self, request: Request) -> Any:
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
        try:
            raw = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return error(400, "not_utf8", f"body is not UTF-8 (byte {exc.start})", "body")
        try:
            req = ExtractRequest.model_validate_json(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            if err["type"] == "json_invalid":
                return error(400, "not_json", f"body is not JSON: {err['msg']}", "body")
            where = _field(tuple(err["loc"]))
            return error(422, "invalid", f"{err['msg']} (got {err.get('input')!r:.80})", where)
        try:  # the window count too, before any model work; off the event loop
            windows = await asyncio.to_thread(
                engine.check_request, req.texts, req.entity_types, self.limits
            )
        except engine.RequestError as exc:
            return error(exc.status, exc.code, exc.message, exc.field)
        request_id = _request_id()
        left = deadline - time.monotonic()
        args = (req.texts, windows, req.entity_types, left, request_id)
        outcome = await self._call(request_id, left, "extract", *args)
        if isinstance(outcome, JSONResponse):
            return outcome
        if not outcome["ok"]:
            o = outcome
            return error(o["status"], o["code"], o["message"], o["field"], o.get("request_id"))
        return JSONResponse(outcome["response"])


# --------------------------------------------------------------------------- application


def parse_config(args: Mapping[str, Any]) -> ServeConfig:
    """ServeConfig from `args` (a config file's nested mapping and/or `serve run` key=value
    strings; dotted keys such as `batching.max_batch_size=8` address nested fields)."""
    plain = {k: v for k, v in args.items() if "." not in k}
    dotted = [f"{k}={v}" for k, v in args.items() if "." in k]
    return validate(ServeConfig, deep_merge(plain, parse_overrides(dotted)), "biogner serve args")


def resolve_locations(cfg: ServeConfig) -> ServeConfig:
    """Pin the store and a local model path to absolute locations in the building process, so
    that replicas (other processes, other working directories) address the same ones."""
    from biogner.tracking import TrackingConfig

    tc = TrackingConfig(
        tracking_uri=cfg.tracking.tracking_uri, artifact_root=cfg.tracking.artifact_root
    )
    uri = cfg.model_uri
    if "://" not in uri and ":/" not in uri and Path(uri).expanduser().exists():
        uri = str(Path(uri).expanduser().resolve())
    return cfg.model_copy(
        update={
            "model_uri": uri,
            "tracking": Tracking(tracking_uri=tc.tracking_uri, artifact_root=tc.artifact_root),
        }
    )


def code_version(*parts: Any) -> str:
    """A deployment version that changes with the replica's constructor arguments, actor
    options and the serving code, but not with `user_config`."""
    digest = hashlib.sha256(_CODE_DIGEST.encode())
    digest.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _code_digest() -> str:
    """The package version and the serving sources as imported (read once, so that an edit
    while a process runs does not change the version it deploys)."""
    import biogner

    digest = hashlib.sha256(biogner.__version__.encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


_CODE_DIGEST = _code_digest()


def build_application(cfg: ServeConfig) -> Application:
    """The Serve application for a validated config."""
    cfg = resolve_locations(cfg)
    m = cfg.model
    options: dict[str, Any] = {
        "max_ongoing_requests": m.max_ongoing_requests,
        "max_queued_requests": m.max_queued_requests,  # more: BackPressureError -> 503
        "ray_actor_options": m.ray_actor_options,
        "health_check_period_s": m.health_check_period_s,
        "health_check_timeout_s": m.health_check_timeout_s,
        "graceful_shutdown_timeout_s": m.graceful_shutdown_timeout_s,
        "user_config": cfg.model_user_config(),
    }
    if m.autoscaling is not None:
        options["autoscaling_config"] = m.autoscaling.model_dump()
    else:
        options["num_replicas"] = m.num_replicas
    init_args = (cfg.batching.model_dump(), cfg.limits.model_dump(), cfg.generation.model_dump())
    # Serve gives every `serve.run` a random code version, which replaces all replicas even
    # when only the model changed. Pinning the version to what a replica is built from makes
    # a redeploy that changes only `user_config` (the model URI) an in-place `reconfigure`.
    options["version"] = code_version(init_args, m.ray_actor_options)
    model = NERModel.options(**options, _internal=True).bind(  # type: ignore[attr-defined]
        *init_args
    )
    return Ingress.options(  # type: ignore[attr-defined]
        num_replicas=cfg.ingress.num_replicas,
        max_ongoing_requests=cfg.ingress.max_ongoing_requests,
        max_queued_requests=cfg.ingress.max_queued_requests,  # more: the proxy answers 503
        backpressure_config={"status_code": 503, "retry_after_s": cfg.limits.retry_after_s},
        ray_actor_options=cfg.ingress.ray_actor_options,
    ).bind(model, cfg.limits.model_dump(), cfg.api_key_env, cfg.require_auth)


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for `serve run biogner.serve.app:build_app key=value ...` and for
    Serve config files (`import_path: biogner.serve.app:build_app`, `args:`)."""
    return build_application(parse_config(args))


__all__ = [
    "BatchStats",
    "Ingress",
    "NERModel",
    "api",
    "build_app",
    "build_application",
    "code_version",
    "parse_config",
    "resolve_locations",
]
