"""The Ray Serve application: an HTTP ingress (FastAPI) in front of a batched NER model.

`NERModel` holds one model per replica. Requests from many clients are merged by
`@serve.batch` into one `Generator.extract` call (one request = one batch item, all its
sentence windows go into that call). `reconfigure(user_config)` swaps the model in place
(champion swap): requests accepted before the swap are answered by the model they were
validated against, later ones by the new model; nothing in flight is dropped.

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
    ServeConfig,
    Tracking,
)
from biogner.serve.text import Window

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------- model replica


@dataclass
class Job:
    """One request waiting in the batch queue, pinned to the model it was validated on."""

    model: engine.LoadedModel
    texts: list[str]
    windows: list[list[Window]]
    types: list[str]


@dataclass
class BatchStats:
    """Counters of one replica, for /v1/stats (and the benchmark's mean batch size)."""

    batches: int = 0
    requests: int = 0
    windows: int = 0
    failures: int = 0
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
        self._user_config: dict[str, Any] | None = None
        self._swap_lock = asyncio.Lock()
        self._batched = serve.batch(
            max_batch_size=self.batching.max_batch_size,
            batch_wait_timeout_s=self.batching.batch_wait_timeout_s,
            max_concurrent_batches=self.batching.max_concurrent_batches,
        )(self._run_batch)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load the model named by user_config and swap it in; a failed load keeps the old one."""
        async with self._swap_lock:
            if user_config == self._user_config and self.current is not None:
                return
            uri = str(user_config["model_uri"])
            tracking = Tracking.model_validate(user_config.get("tracking") or {})
            log.info("replica %s loading %s", self.replica, uri)
            new = await asyncio.to_thread(engine.load, uri, tracking, self.generation)
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
        ).model_dump(mode="json")

    def get_stats(self) -> dict[str, Any]:
        return {"replica": self.replica, **self.stats.to_dict()}

    def _require_model(self) -> engine.LoadedModel:
        if self.current is None:
            raise RuntimeError("no model loaded yet")
        return self.current

    async def extract(self, texts: list[str], entity_types: list[str] | None) -> dict[str, Any]:
        """Entities for `texts`; returns {"ok": True, "response": ...} or {"ok": False, ...}
        (an expected refusal is data, not an exception: the ingress maps it to a 4xx/5xx)."""
        try:
            model = self._require_model()
            engine.check_entity_types(entity_types, self.limits)
            types = model.select_types(entity_types)
            engine.check_texts(texts, self.limits)
            windows = engine.prepare(texts, self.limits)
        except engine.RequestError as exc:
            return {"ok": False, **exc.to_dict()}
        outcome: dict[str, Any] = await self._batched(Job(model, texts, windows, types))
        return outcome

    async def _run_batch(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """One batch: jobs grouped by (model, entity types), one extract call per group."""
        outcomes: list[dict[str, Any]] = [{} for _ in jobs]
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((id(job.model), tuple(job.types)), []).append(i)
        n_windows = sum(len(w) for job in jobs for w in job.windows)
        self.stats.record(len(jobs), n_windows)
        batch = BatchInfo(requests=len(jobs), windows=n_windows)
        for members in groups.values():
            model, types = jobs[members[0]].model, jobs[members[0]].types
            flat = [w.sentence for i in members for ws in jobs[i].windows for w in ws]
            try:
                generations = await asyncio.to_thread(
                    model.generator.extract, flat, model.format, types
                )
                pos = 0
                for i in members:
                    job = jobs[i]
                    n = sum(len(ws) for ws in job.windows)
                    results = engine.assemble(job.texts, job.windows, generations[pos : pos + n])
                    pos += n
                    response = ExtractResponse(
                        results=results,
                        model=model.ref,
                        format=model.format,
                        entity_types=types,
                        batch=batch,
                    )
                    outcomes[i] = {"ok": True, "response": response.model_dump(mode="json")}
            except Exception as exc:  # the replica keeps serving; these requests get a 500
                log.exception("model failure in a batch of %d requests", len(members))
                self.stats.failures += len(members)
                for i in members:
                    outcomes[i] = {
                        "ok": False,
                        "status": 500,
                        "code": "model_error",
                        "message": f"model failed: {type(exc).__name__}: {exc}",
                        "field": None,
                    }
        return outcomes


# --------------------------------------------------------------------------- HTTP ingress

api = FastAPI(
    title="biogner NER",
    version="1",
    description="Biomedical named entity recognition with a fine-tuned generative model.",
)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 500, 503)
}


def error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


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

    async def _call(self, method: str, *args: Any) -> Any | JSONResponse:
        try:
            return await getattr(self.model, method).remote(*args)
        except Exception as exc:
            if _unavailable(exc):
                return error(503, "unavailable", f"model replica unavailable, retry: {exc}")
            log.exception("model call %s failed", method)
            return error(500, "internal", f"{type(exc).__name__}: {exc}")

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
    async def readyz(self) -> Any:
        """A model replica answers and has a model loaded."""
        try:
            info = await asyncio.wait_for(self.model.info.remote(), READY_TIMEOUT_S)
        except Exception as exc:
            return error(503, "not_ready", f"model not ready: {type(exc).__name__}: {exc}")
        return {"status": "ready", "model": info["model"]}

    @api.get("/v1/model", response_model=ModelInfo, responses=ERROR_RESPONSES)
    async def model_info(self, request: Request) -> Any:
        if not self._authorized(request):
            return error(401, "unauthorized", "missing or wrong Bearer API key", "authorization")
        return await self._call("info")

    @api.get("/v1/stats", responses=ERROR_RESPONSES)
    async def stats(self, request: Request) -> Any:
        """Batching counters of the replica that answers (one replica per call)."""
        if not self._authorized(request):
            return error(401, "unauthorized", "missing or wrong Bearer API key", "authorization")
        return await self._call("get_stats")

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
        outcome = await self._call("extract", req.texts, req.entity_types)
        if isinstance(outcome, JSONResponse):
            return outcome
        if not outcome["ok"]:
            return error(outcome["status"], outcome["code"], outcome["message"], outcome["field"])
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
