"""`biogner serve`: start the NER endpoint locally from a Serve config file (blocking).

The config file is the same one `serve run` / `serve deploy` read; this command only adds
`--model`, `--host`, `--port` and `--set key=value` overrides, starts a local Ray (or joins
RAY_ADDRESS), runs the application and prints its URL until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from biogner.config import ConfigError, deep_merge, parse_overrides
from biogner.serve.schema import DEFAULT_APP

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def add_serve_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `serve` on the `biogner` sub-command parser."""
    p = subparsers.add_parser("serve", help="serve a model over HTTP with Ray Serve (batched)")
    p.add_argument("--config", help="Serve config file, e.g. serve_configs/local.yaml")
    p.add_argument("--app", help="application name in the config (default: the first)")
    p.add_argument(
        "--model",
        help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model or a directory",
    )
    p.add_argument("--host", help=f"bind address (default: config, else {DEFAULT_HOST})")
    p.add_argument("--port", type=int, help=f"HTTP port (default: config, else {DEFAULT_PORT})")
    p.add_argument("--tracking-uri", help="MLflow store holding the model (overrides the config)")
    p.add_argument("--artifact-root", help="artifact root of a local MLflow store")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an application arg (dotted keys, e.g. batching.max_batch_size=8)",
    )
    p.add_argument("--check", action="store_true", help="validate and print the config; no serve")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="the same as --set: positional key=value, as every other command takes them",
    )
    p.set_defaults(func=run_serve)
    return p


def load_serve_file(path: str | None, app: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(http_options, application entry) from a Serve config file, or defaults without one."""
    if path is None:
        return {}, {"name": DEFAULT_APP, "route_prefix": "/", "args": {}}
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"serve config {path} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    apps = data.get("applications") if isinstance(data, dict) else None
    if not isinstance(apps, list) or not apps:
        raise ConfigError(f"{path}: no `applications:` list")
    entry = apps[0] if app is None else next((a for a in apps if a.get("name") == app), None)
    if entry is None:
        names = [a.get("name") for a in apps]
        raise ConfigError(f"{path}: no application named {app!r}; found {names}")
    if not str(entry.get("import_path", "")).startswith("biogner.serve.app:"):
        raise ConfigError(
            f"{path}: application {entry.get('name')!r} import_path must be "
            f"biogner.serve.app:build_app, got {entry.get('import_path')!r}"
        )
    return dict(data.get("http_options") or {}), dict(entry)


def run_serve(args: argparse.Namespace) -> int:
    from biogner.serve.application import check_overrides, parse_config, resolve_locations
    from biogner.serve.local import ServeStartError, start_app, stop_app, wait_ready

    try:
        http, entry = load_serve_file(args.config, args.app)
        app_args = deep_merge(
            dict(entry.get("args") or {}), parse_overrides([*args.set, *args.overrides])
        )
        if args.model:
            app_args["model_uri"] = args.model
        for key in ("tracking_uri", "artifact_root"):
            if getattr(args, key, None):
                app_args.setdefault("tracking", {})[key] = getattr(args, key)
        cfg = resolve_locations(parse_config(app_args))
        check_overrides(cfg, list(entry.get("deployments") or []), args.config or "serve")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host = args.host or http.get("host") or DEFAULT_HOST
    port = int(args.port or http.get("port") or DEFAULT_PORT)
    name = str(entry.get("name") or DEFAULT_APP)
    prefix = str(entry.get("route_prefix") or "/")
    if args.check:
        print(json.dumps({"host": host, "port": port, "name": name, **cfg.model_dump()}, indent=2))
        return 0

    from biogner.runtime import init_ray

    try:
        init_ray()
        print(f"starting {name}: model {cfg.model_uri} ...", flush=True)
        base = start_app(cfg, host, port, name, prefix)
        wait_ready(base)
    except ServeStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"serving {cfg.model_uri} at {base}/v1/extract (docs: {base}/docs)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("shutting down", flush=True)
    stop_app(name)
    return 0


__all__ = ["add_serve_command", "load_serve_file", "run_serve"]
