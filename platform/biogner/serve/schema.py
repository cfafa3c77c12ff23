"""The serving config (validated before anything starts) and the HTTP request/response schema.

Why validate here: a Serve deployment whose `max_ongoing_requests` is below
`max_batch_size * max_concurrent_batches` silently never fills its batches, and an autoscaler
whose `target_ongoing_requests` is not below `max_ongoing_requests` never scales; both are
config mistakes that should fail at `serve run`, not show up as a slow service.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from biogner.annotate.entities import Entity, TextResult
from biogner.annotate.windows import WINDOW_CHARS, WINDOW_TOKENS
from biogner.models.config import GenerationConfig
from biogner.tracking.config import TrackingConfig
from biogner.tracking.uris import alias_of

API_KEY_ENV = "BIOGNER_API_KEY"
DEFAULT_APP = "biogner"  # the Serve application name when a config file names none


class Limits(BaseModel):
    """Request limits; a request over any of them gets a 4xx naming the field."""

    model_config = ConfigDict(extra="forbid")

    max_texts: int = Field(64, ge=1, description="texts per request")
    max_chars_per_text: int = Field(20_000, ge=1)
    max_body_bytes: int = Field(2_000_000, ge=1)
    max_entity_types: int = Field(32, ge=1)
    window_tokens: int = Field(
        WINDOW_TOKENS, ge=1, description="tokens per model input (long sentences)"
    )
    window_chars: int = Field(WINDOW_CHARS, ge=1, description="characters per model input")
    max_windows: int = Field(
        512,
        ge=1,
        description="model inputs (sentences, or window_tokens/window_chars pieces of them) per "
        "request, counted at the ingress before any model work; more: 413. Keep the largest "
        "request answerable within request_timeout_s",
    )
    request_timeout_s: float = Field(
        300.0,
        gt=0,
        description="a request not answered within this many seconds gets a 504; the replica "
        "drops its remaining model work",
    )
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="seconds a client has to send its whole body; slower: 408 (a slow upload "
        "must not hold an ingress slot for ever)",
    )
    retry_after_s: int = Field(
        5, ge=1, description="Retry-After of a 503 (model queue full, replica unavailable)"
    )


class Batching(BaseModel):
    """`AdaptiveBatcher` settings: requests from many clients merged into one model call."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(16, ge=1)
    max_batch_windows: int = Field(
        128,
        ge=1,
        description="model inputs (sentence windows) a batch gathers at most: requests join a "
        "batch while their windows fit (a bigger one forms a batch of its own), so a small "
        "request never waits behind more than one bounded batch",
    )
    batch_wait_timeout_s: float = Field(
        0.0,
        ge=0.0,
        description="a batch forms when the model is free, with every request waiting; under "
        "load (the batch before held several requests) it may wait this long for more "
        "(closed-loop clients resend together); a request on an idle replica never waits "
        "(`serve.batcher`)",
    )
    max_concurrent_batches: int = Field(1, ge=1)
    join_running: bool = Field(
        False,
        description="a request that arrives while a batch of the same model and questions is "
        "decoded joins it (its windows go in as rows leave, with generation.rows_join) "
        "instead of waiting for the next batch; only while no other request waits, and for "
        "requests of at most max_batch_windows / 4 windows. Off by default: on a 2-core CPU "
        "it served 32 clients no faster (bench/RESULTS.md#serving)",
    )


class Autoscaling(BaseModel):
    """A subset of Serve's autoscaling_config (passed through as is)."""

    model_config = ConfigDict(extra="allow")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.min_replicas ({self.min_replicas}) > max_replicas "
                f"({self.max_replicas})"
            )
        return self


class ModelDeployment(BaseModel):
    """Options of the NERModel deployment (one model copy per replica)."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(1, ge=1)
    autoscaling: Autoscaling | None = None
    max_ongoing_requests: int = Field(64, ge=1)
    max_queued_requests: int = Field(
        128,
        ge=1,
        description="requests waiting for a replica, per caller; more get a 503 with Retry-After",
    )
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 1})
    health_check_period_s: float = Field(10.0, gt=0)
    health_check_timeout_s: float = Field(30.0, gt=0)
    graceful_shutdown_timeout_s: float = Field(30.0, ge=0)


class IngressDeployment(BaseModel):
    """Options of the HTTP ingress (thin: validation and JSON only)."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(1, ge=1)
    max_ongoing_requests: int = Field(256, ge=1)
    max_queued_requests: int = Field(
        512, ge=1, description="requests waiting at each proxy; more get a 503 with Retry-After"
    )
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 0})


FOLLOW_ALIAS_DOC = (
    "seconds between the model replicas' looks at the registry alias of a "
    "models:/<name>@<alias> model_uri: when the alias points to another version, it is loaded "
    "in the background and swapped in (a failed load keeps the old model). None or 0: off; "
    "ignored for a pinned version, a run or a directory"
)


class ModelSource(BaseModel):
    """Which model a replica serves: its Serve `user_config`, so that changing it (a Serve
    config's `deployments: [{name: NERModel, user_config: ...}]`, a lightweight update)
    swaps the model in place instead of replacing the replica."""

    model_config = ConfigDict(extra="forbid")

    model_uri: str
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    revision: str = ""
    format: str | None = Field(
        None,
        description="the format to answer in: one the model was trained in (its card's "
        "`formats`); default: the card's own. Another is refused when the model loads",
    )
    follow_alias_s: float | None = Field(None, ge=0, description=FOLLOW_ALIAS_DOC)

    @property
    def follow_period_s(self) -> float | None:
        """The alias-check period in effect: None when off or when nothing can move."""
        if not self.follow_alias_s or alias_of(self.model_uri) is None:
            return None
        return self.follow_alias_s


class ServeConfig(BaseModel):
    """Everything `build_app(args)` accepts; `args:` of a Serve config file is this, as YAML."""

    model_config = ConfigDict(extra="forbid")

    model_uri: str = Field(
        "models:/biogner@champion",
        description="models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model or a dir",
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    revision: str = Field(
        "",
        description="change it to reload the model (same model_uri, new version behind it): in "
        "place as the NERModel user_config of a Serve config's deployments: section (serve "
        "deploy); as an args change the replicas are replaced. follow_alias_s needs neither",
    )
    follow_alias_s: float | None = Field(None, ge=0, description=FOLLOW_ALIAS_DOC)
    format: str | None = Field(
        None,
        description="the format to answer in: one the model was trained in (its card's "
        "`formats`); default: the card's own. Another is refused when the model loads",
    )
    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(device="auto"))
    limits: Limits = Field(default_factory=Limits)
    batching: Batching = Field(default_factory=Batching)
    model: ModelDeployment = Field(default_factory=ModelDeployment)
    ingress: IngressDeployment = Field(default_factory=IngressDeployment)
    api_key_env: str = Field(
        API_KEY_ENV,
        min_length=1,
        description="env var holding the Bearer key (surrounding whitespace is stripped); "
        "unset or blank: requests are not checked, unless require_auth",
    )
    require_auth: bool = Field(
        False,
        description="refuse to start when the api_key_env variable is unset or blank, instead "
        "of serving without auth (on in the cluster configs)",
    )

    @model_validator(mode="after")
    def _batches_can_fill(self) -> ServeConfig:
        b, m = self.batching, self.model
        need = b.max_batch_size * b.max_concurrent_batches
        if m.max_ongoing_requests < need:
            raise ValueError(
                f"model.max_ongoing_requests ({m.max_ongoing_requests}) must be >= "
                f"batching.max_batch_size ({b.max_batch_size}) * "
                f"batching.max_concurrent_batches ({b.max_concurrent_batches}) = {need}: "
                "otherwise a replica never receives enough requests to fill a batch"
            )
        if self.ingress.max_ongoing_requests < b.max_batch_size:
            raise ValueError(
                f"ingress.max_ongoing_requests ({self.ingress.max_ongoing_requests}) must be >= "
                f"batching.max_batch_size ({b.max_batch_size}): the ingress would cap batches"
            )
        a = m.autoscaling
        if a is not None and a.target_ongoing_requests >= m.max_ongoing_requests:
            raise ValueError(
                f"model.autoscaling.target_ongoing_requests ({a.target_ongoing_requests}) must "
                f"be < model.max_ongoing_requests ({m.max_ongoing_requests}): a replica can "
                "never report more ongoing requests than it accepts, so it would never scale"
            )
        return self

    def model_source(self) -> ModelSource:
        """What NERModel.reconfigure receives (as its user_config)."""
        return ModelSource(
            model_uri=self.model_uri,
            tracking=self.tracking,
            revision=self.revision,
            format=self.format,
            follow_alias_s=self.follow_alias_s,
        )

    def model_user_config(self) -> dict[str, Any]:
        """The NERModel deployment's user_config: changing it swaps the model in place."""
        return self.model_source().model_dump(mode="json")


# --------------------------------------------------------------------------- HTTP schema


class ExtractRequest(BaseModel):
    """POST /v1/extract body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] = Field(description="raw texts (abstracts, notes); sentences are found")
    entity_types: list[str] | None = Field(
        None, description="subset of the model's entity types; default: all of them"
    )
    min_score: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="leave out entities scored below this (trade recall for precision)",
    )


class ModelRef(BaseModel):
    name: str | None = None
    version: str | None = None
    uri: str
    run_id: str | None = None


class BatchInfo(BaseModel):
    requests: int = Field(description="requests merged into the model call that served this one")
    windows: int = Field(description="model inputs (sentence windows) in that call")


class ExtractResponse(BaseModel):
    results: list[TextResult]
    model: ModelRef
    format: str
    entity_types: list[str]
    batch: BatchInfo


class ReloadStatus(BaseModel):
    """The outcome of the replica's last model swap (a failed one keeps the old model)."""

    ok: bool
    model_uri: str
    version: str | None = Field(
        None, description="the registry version tried, when the alias follower found it"
    )
    at: float = Field(description="Unix time of the attempt")
    error: str | None = None


class AliasCheck(BaseModel):
    """The replica's last look at the registry alias it follows (`follow_alias_s`)."""

    at: float = Field(description="Unix time of the check")
    ok: bool = Field(description="the registry answered")
    version: str | None = Field(None, description="the version the alias pointed to")
    error: str | None = None


class ModelInfo(BaseModel):
    model: ModelRef
    format: str
    entity_types: list[str]
    type_groups: list[list[str]] = Field(
        default_factory=list,
        description="the types the model learned to find together (one group per training "
        "corpus); a request's types are asked one group at a time, so a request touching "
        "several groups costs a model pass per group",
    )
    base_model: str | None = None
    corpora: list[str] = Field(default_factory=list)
    constrained: bool = Field(
        description="answers are decoded under the format's grammar: every entity is a span "
        "of the text (generation.constrained, and the format's writing has a grammar)"
    )
    overruled: Literal["drop_unended", "keep", "drop"] | None = Field(
        None,
        description="constrained: which entities the grammar had to steer the model into are "
        "dropped (generation.overruled); None when not constrained",
    )
    loaded_at: float
    replica: str
    last_reload: ReloadStatus | None = Field(
        None, description="the last model swap on this replica; none since it started"
    )
    follow_alias_s: float | None = Field(
        None, description="the registry alias is checked this often (None: not followed)"
    )
    last_check: AliasCheck | None = Field(
        None, description="the last alias check on this replica; none yet, or not followed"
    )


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None
    request_id: str | None = Field(
        None, description="names the request in the service's log (server errors)"
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


__all__ = [
    "API_KEY_ENV",
    "AliasCheck",
    "Autoscaling",
    "BatchInfo",
    "Batching",
    "Entity",
    "ErrorDetail",
    "ErrorResponse",
    "ExtractRequest",
    "ExtractResponse",
    "IngressDeployment",
    "Limits",
    "ModelDeployment",
    "ModelInfo",
    "ModelRef",
    "ModelSource",
    "ReloadStatus",
    "ServeConfig",
    "TextResult",
]
