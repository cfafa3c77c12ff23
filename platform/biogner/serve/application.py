"""The application builder: a validated `ServeConfig` -> the Serve application (NERModel
behind the Ingress), with every deployment option set from the config.

Why validation lives here and not in the replica: the only place a replica could read its
effective `max_ongoing_requests` is private Ray API, so the rules that keep batches fillable
(`ServeConfig` validators) are checked where the options are made: `build_app` (any `serve
run`/`serve deploy` of this application), and `check_overrides` for what a Serve config file's
`deployments:` section sets on top (Serve applies it after the builder; `biogner serve` and
the tests check it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.serve import Application

from biogner.config import deep_merge, parse_overrides, validate
from biogner.runtime import compute_runtime_env
from biogner.serve.http import INGRESS_DEPLOYMENT, Ingress
from biogner.serve.replica import MODEL_DEPLOYMENT, NERModel
from biogner.serve.schema import ModelSource, ServeConfig

# Serve option (a config file's `deployments:` entry) -> ServeConfig key, per deployment
_OVERRIDES = {
    MODEL_DEPLOYMENT: ("model", {"max_ongoing_requests", "max_queued_requests", "num_replicas"}),
    INGRESS_DEPLOYMENT: ("ingress", {"max_ongoing_requests", "max_queued_requests"}),
}


def parse_config(args: Mapping[str, Any]) -> ServeConfig:
    """ServeConfig from `args` (a config file's nested mapping and/or `serve run` key=value
    strings; dotted keys such as `batching.max_batch_size=8` address nested fields)."""
    plain = {k: v for k, v in args.items() if "." not in k}
    dotted = [f"{k}={v}" for k, v in args.items() if "." in k]
    return validate(ServeConfig, deep_merge(plain, parse_overrides(dotted)), "biogner serve args")


def check_overrides(cfg: ServeConfig, deployments: list[Mapping[str, Any]], where: str) -> None:
    """Refuse (ConfigError naming `where`) a config file's `deployments:` options that break
    the rules `cfg` was validated by, e.g. a NERModel `max_ongoing_requests` too small for its
    batches, or a NERModel `user_config` that is no `ModelSource` (Serve applies these after
    `build_app`, which never sees them)."""
    merged = cfg.model_dump()
    for entry in deployments:
        name = str(entry.get("name"))
        if name not in _OVERRIDES:
            continue
        section, keys = _OVERRIDES[name]
        update = {key: entry[key] for key in keys & entry.keys()}
        if section == "model" and isinstance(entry.get("autoscaling_config"), dict):
            update["autoscaling"] = entry["autoscaling_config"]
        if section == "model" and "user_config" in entry:
            validate(ModelSource, dict(entry["user_config"] or {}), f"{where}: {name}.user_config")
        merged = deep_merge(merged, {section: update})
    validate(ServeConfig, merged, f"{where} (with its deployments: options)")


def resolve_locations(cfg: ServeConfig) -> ServeConfig:
    """Pin a local model path to an absolute location in the building process, so that
    replicas (other processes, other working directories) address the same one (the store's
    locations were resolved when the config was validated, in this process too)."""
    uri = cfg.model_uri
    if "://" not in uri and ":/" not in uri and Path(uri).expanduser().exists():
        uri = str(Path(uri).expanduser().resolve())
    return cfg.model_copy(update={"model_uri": uri})


def with_compute_env(actor_options: dict[str, Any]) -> dict[str, Any]:
    """A model replica's actor options with the compute workers' environment (nice 0,
    jemalloc: `runtime.compute_runtime_env`) under the user's own `runtime_env`, whose
    env_vars win. Why: a replica runs the model for days; at Ray's nice 15 any other
    process on the node stalls its threads, and glibc's heap grows with every new batch
    shape."""
    user_env = dict(actor_options.get("runtime_env") or {})
    env_vars = {**compute_runtime_env()["env_vars"], **(user_env.get("env_vars") or {})}
    return {**actor_options, "runtime_env": {**user_env, "env_vars": env_vars}}


def build_application(cfg: ServeConfig) -> Application:
    """The Serve application for a validated config.

    The model is the NERModel deployment's `user_config` (`ServeConfig.model_source`): a
    Serve config file's `deployments: [{name: NERModel, user_config: ...}]` changes it with a
    lightweight update (`serve deploy`), which swaps the model in place. A redeploy that
    changes the builder's args (`serve run`, `biogner serve`) replaces the replicas."""
    cfg = resolve_locations(cfg)
    m = cfg.model
    options: dict[str, Any] = {
        "max_ongoing_requests": m.max_ongoing_requests,
        "max_queued_requests": m.max_queued_requests,  # more: BackPressureError -> 503
        "ray_actor_options": with_compute_env(m.ray_actor_options),
        "health_check_period_s": m.health_check_period_s,
        "health_check_timeout_s": m.health_check_timeout_s,
        "graceful_shutdown_timeout_s": m.graceful_shutdown_timeout_s,
        "user_config": cfg.model_user_config(),
    }
    if m.autoscaling is not None:
        options["autoscaling_config"] = m.autoscaling.model_dump()
    else:
        options["num_replicas"] = m.num_replicas
    model = NERModel.options(**options).bind(  # type: ignore[attr-defined]
        cfg.batching.model_dump(), cfg.limits.model_dump(), cfg.generation.model_dump()
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
    "build_app",
    "build_application",
    "check_overrides",
    "parse_config",
    "resolve_locations",
]
