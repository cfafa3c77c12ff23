"""The NER endpoint under faults: a killed replica, overload, champion swaps, autoscaling.

One local Ray, Serve on 127.0.0.1 only, a tiny-llama built from config (random weights,
answers capped at --max-new-tokens: the scenarios measure the serving path, not a model).
Every request of every scenario is recorded (start, end, HTTP status, Retry-After), so each
claim below is counted, not sampled:

- `kill`: closed-loop load at --concurrency for --duration s; at --kill-at s the model
  replica's process is killed (SIGKILL, as an OOM kill or a crash would). Reported: failed
  requests by status (only those in flight at the kill may fail, with a 5xx JSON error),
  seconds until requests succeed again, p50/p99 before the kill and after recovery.
- `overload`: a small queue (max_ongoing 8, max_queued 8, request timeout --timeout-s) under
  --overload-factor x its capacity of clients that honour Retry-After. Reported: share of 503s
  and how many carried Retry-After, p99 of accepted requests, the slowest answer of all
  (nothing may hang past the request timeout).
- `swap`: the endpoint serves `models:/bench-ner@champion` with `follow_alias_s`; under load
  the alias is moved in the registry (as a user does in the MLflow UI) to a second version,
  then to a broken one (weights truncated: listed, but fails to load). Reported: failed
  requests (must be 0), the version answering over time, when each move was picked up.
- `autoscale`: min 1 / max 2 model replicas, a load ramp (1 client, then --concurrency, then
  1 again). Reported per second: running replicas and the p50 latency of the requests that
  ended in it; when the second replica was up and when it went away.

Prints one table per scenario, writes bench/results/serve_faults.json. Usage:
    python -m bench.serve_faults [--scenarios kill,overload,swap,autoscale] [--duration 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import command, table, write_json
from bench.serve import TEXTS, build_tiny_model, free_port, percentile

APP = "bench-faults"
MODEL_NAME = "bench-ner"


@dataclass
class Call:
    start: float  # seconds since the scenario's t0
    end: float
    status: str  # HTTP status, or the client exception's name
    retry_after: str | None
    version: str | None  # registry version that answered (200 only)


class Load:
    """Closed-loop clients recording every call; the client count can change while it runs."""

    def __init__(self, url: str, t0: float, timeout_s: float) -> None:
        self.url, self.t0, self.timeout_s = url, t0, timeout_s
        self.calls: list[Call] = []
        self.target = 0  # clients that should be running
        self.honour_retry_after = False

    def now(self) -> float:
        return time.perf_counter() - self.t0

    async def _client(self, k: int, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        i = k
        while not stop.is_set():
            if k >= self.target:  # this client is not part of the current load level
                await asyncio.sleep(0.05)
                continue
            body = {"texts": [TEXTS[i % len(TEXTS)]]}
            i += 1
            start = self.now()
            retry_after = version = None
            try:
                r = await client.post("/v1/extract", json=body)
                status = str(r.status_code)
                retry_after = r.headers.get("retry-after")
                if r.status_code == 200:
                    version = r.json()["model"].get("version")
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            self.calls.append(Call(start, self.now(), status, retry_after, version))
            if status == "503" and self.honour_retry_after:
                await asyncio.sleep(float(retry_after or 1))

    async def run(
        self,
        levels: list[tuple[float, int]],
        events: list[tuple[float, Callable[[], Any]]] | None = None,
    ) -> None:
        """`levels`: (until second, clients) in order; `events`: (at second, blocking fn)."""
        most = max(n for _, n in levels)
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=most + 4, max_keepalive_connections=most + 4)
        async with httpx.AsyncClient(
            base_url=self.url, timeout=self.timeout_s, limits=limits
        ) as client:
            clients = [asyncio.create_task(self._client(k, client, stop)) for k in range(most)]

            async def fire(at: float, fn: Callable[[], Any]) -> None:
                await asyncio.sleep(max(0.0, at - self.now()))
                await asyncio.to_thread(fn)

            fired = [asyncio.create_task(fire(at, fn)) for at, fn in events or []]
            for until, n in levels:
                self.target = n
                await asyncio.sleep(max(0.0, until - self.now()))
            stop.set()
            await asyncio.gather(*clients, *fired)


def latency_ms(calls: list[Call]) -> dict[str, float]:
    ms = sorted((c.end - c.start) * 1000 for c in calls)
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99)}


def model_replica_pids() -> list[int]:
    """Processes of the NERModel replicas (Ray titles them `ray::ServeReplica:<app>:NERModel`)."""
    pids = []
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if "ServeReplica" in line and "NERModel" in line:
            pids.append(p.pid)
    return pids


def serve_cfg(model_uri: str, args: argparse.Namespace, **sections: Any) -> Any:
    from biogner.serve.app import parse_config, resolve_locations

    base: dict[str, Any] = {
        "model_uri": model_uri,
        "generation": {
            "device": "cpu",
            "batch_size": 16,
            "max_new_tokens_cap": args.max_new_tokens,
        },
        "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.02},
        "limits": {"request_timeout_s": args.timeout_s, "retry_after_s": 1},
        "model": {"max_ongoing_requests": 64, "ray_actor_options": {"num_cpus": 1}},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return resolve_locations(parse_config(base))


def deployed(cfg: Any, args: argparse.Namespace) -> str:
    from biogner.serve.local import start_app, wait_ready

    base = start_app(cfg, "127.0.0.1", args.port, APP)
    wait_ready(base, timeout_s=120)
    return base


# --------------------------------------------------------------------------- scenarios


def scenario_kill(model_uri: str, args: argparse.Namespace) -> dict[str, Any]:
    base = deployed(serve_cfg(model_uri, args), args)
    t0 = time.perf_counter()
    load = Load(base, t0, args.timeout_s + 30)
    killed: dict[str, Any] = {}

    def kill() -> None:
        pids = model_replica_pids()
        killed["at"], killed["pids"] = load.now(), pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    asyncio.run(load.run([(args.duration, args.concurrency)], [(args.kill_at, kill)]))
    kill_at = killed["at"]
    failed = [c for c in load.calls if c.status != "200"]
    after = [c for c in load.calls if c.start >= kill_at and c.status == "200"]
    recovered = min((c.end for c in after), default=float("nan")) - kill_at
    last_failure = max((c.end for c in failed), default=kill_at)
    in_flight = [c for c in load.calls if c.start < kill_at < c.end]
    return {
        "killed_pids": killed["pids"],
        "kill_at_s": kill_at,
        "requests": len(load.calls),
        "in_flight_at_kill": len(in_flight),
        "failed": dict(Counter(c.status for c in failed)),
        "failed_in_flight": dict(Counter(c.status for c in failed if c.start < kill_at < c.end)),
        "failed_sent_after_kill": dict(Counter(c.status for c in failed if c.start >= kill_at)),
        "failed_not_in_flight": sum(1 for c in failed if not (c.start < kill_at < c.end)),
        "first_success_after_kill_s": recovered,
        "last_failure_after_kill_s": last_failure - kill_at,
        "before": latency_ms([c for c in load.calls if c.end < kill_at and c.status == "200"]),
        "after_recovery": latency_ms(
            [c for c in load.calls if c.start > last_failure and c.status == "200"]
        ),
    }


def scenario_overload(model_uri: str, args: argparse.Namespace) -> dict[str, Any]:
    ongoing, queued = 8, 8
    cfg = serve_cfg(
        model_uri,
        args,
        batching={"max_batch_size": 8},
        model={"max_ongoing_requests": ongoing, "max_queued_requests": queued},
        ingress={"max_ongoing_requests": 4 * ongoing, "max_queued_requests": 4 * ongoing},
    )
    base = deployed(cfg, args)
    clients = args.overload_factor * (ongoing + queued)
    load = Load(base, time.perf_counter(), args.timeout_s + 30)
    load.honour_retry_after = True
    asyncio.run(load.run([(args.duration, clients)]))
    refused = [c for c in load.calls if c.status == "503"]
    ok = [c for c in load.calls if c.status == "200"]
    return {
        "capacity": ongoing + queued,
        "clients": clients,
        "requests": len(load.calls),
        "statuses": dict(Counter(c.status for c in load.calls)),
        "share_503": len(refused) / max(len(load.calls), 1),
        "503_with_retry_after": sum(1 for c in refused if c.retry_after),
        "accepted": latency_ms(ok),
        "slowest_s": max((c.end - c.start for c in load.calls), default=0.0),
        "request_timeout_s": args.timeout_s,
        "accepted_per_s": len(ok) / args.duration,
    }


def register_versions(store: Path, tiny: Path) -> tuple[Any, Any, list[str]]:
    """Three registered versions of the bench model: tiny, tiny again, and a broken copy
    (its weights truncated: the files are listed, loading fails)."""
    import shutil

    from mlflow.tracking import MlflowClient

    from biogner.tracking.config import TrackingConfig
    from biogner.tracking.models import log_hf_model
    from biogner.tracking.registry import register_champion, register_version
    from biogner.tracking.runs import tracked_run

    cfg = TrackingConfig(
        tracking_uri=f"sqlite:///{store / 'mlflow.db'}",
        experiment="bench-serve-faults",
        artifact_root=(store / "artifacts").as_uri(),
    )
    broken = store / "broken"
    shutil.copytree(tiny, broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    versions = []
    for model_dir in (tiny, tiny, broken):
        with tracked_run(cfg, "bench-model") as run_id:
            meta = {"format": "conv_term", "entity_types": ["Disease"], "base_model": "tiny"}
            log_hf_model(run_id, model_dir, metadata=meta, cfg=cfg)
        if not versions:
            versions.append(register_champion(cfg, run_id, MODEL_NAME))
        else:  # later versions registered without moving the alias
            versions.append(register_version(cfg, run_id, MODEL_NAME))
    return cfg, MlflowClient(cfg.uri), versions


def scenario_swap(model_uri: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg, client, versions = register_versions(Path(tmp), Path(model_uri))
        serve = serve_cfg(
            f"models:/{MODEL_NAME}@champion",
            args,
            tracking={"tracking_uri": cfg.uri, "artifact_root": cfg.artifact_root},
            follow_alias_s=args.follow_s,
        )
        base = deployed(serve, args)
        load = Load(base, time.perf_counter(), args.timeout_s + 30)
        moves: list[dict[str, Any]] = []
        checks: list[dict[str, Any]] = []

        def move(version: str) -> Callable[[], None]:
            def run() -> None:
                client.set_registered_model_alias(MODEL_NAME, "champion", version)
                moves.append({"at_s": load.now(), "to_version": version})

            return run

        def watch() -> None:  # /v1/model once a second: the version and the last check
            while load.now() < args.swap_duration:
                info = httpx.get(f"{base}/v1/model", timeout=30).json()
                checks.append({"at_s": load.now(), "version": info["model"].get("version")})
                time.sleep(1.0)

        third = args.swap_duration / 3
        events = [(0.0, watch), (third, move(versions[1])), (2 * third, move(versions[2]))]
        asyncio.run(load.run([(args.swap_duration, args.concurrency)], events))
        served = [c for c in load.calls if c.status == "200"]
        picked_up = {}
        for m in moves[:1]:
            first = min((c.end for c in served if c.version == m["to_version"]), default=None)
            picked_up[m["to_version"]] = None if first is None else first - m["at_s"]
        return {
            "versions": {"first": versions[0], "second": versions[1], "broken": versions[2]},
            "follow_alias_s": args.follow_s,
            "moves": moves,
            "requests": len(load.calls),
            "failed": dict(Counter(c.status for c in load.calls if c.status != "200")),
            "answered_by_version": dict(Counter(str(c.version) for c in served)),
            "new_version_first_answer_after_move_s": picked_up,
            "served_after_broken_move": sorted(
                {str(c.version) for c in served if c.start > moves[-1]["at_s"] + args.follow_s}
            ),
            "model_endpoint": checks,
        }


def running_replicas() -> int:
    from ray import serve

    status = serve.status().applications[APP].deployments["NERModel"]
    return int(status.replica_states.get("RUNNING", 0))


def scenario_autoscale(model_uri: str, args: argparse.Namespace) -> dict[str, Any]:
    cfg = serve_cfg(
        model_uri,
        args,
        model={
            "autoscaling": {
                "min_replicas": 1,
                "max_replicas": 2,
                "target_ongoing_requests": 4,
                "upscale_delay_s": 2,
                "downscale_delay_s": 10,
            },
            "ray_actor_options": {"num_cpus": 0.5},
        },
    )
    base = deployed(cfg, args)
    load = Load(base, time.perf_counter(), args.timeout_s + 30)
    replicas: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            replicas.append((load.now(), running_replicas()))
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    up_until = 10.0 + args.duration
    ramp = [(10.0, 1), (up_until, args.concurrency), (up_until + args.calm_s, 1)]
    asyncio.run(load.run(ramp))
    done.set()
    sampler.join()
    per_second = []
    for t, n in replicas:
        ended = [c for c in load.calls if t - 1 < c.end <= t and c.status == "200"]
        per_second.append(
            {"t_s": round(t), "replicas": n, **{k: v for k, v in latency_ms(ended).items()}}
        )
    up = next((t for t, n in replicas if n >= 2), None)
    down = next((t for t, n in replicas if up is not None and t > up and n == 1), None)
    return {
        "ramp": ramp,
        "requests": len(load.calls),
        "failed": dict(Counter(c.status for c in load.calls if c.status != "200")),
        "second_replica_running_at_s": up,
        "back_to_one_at_s": down,
        "max_replicas_seen": max((n for _, n in replicas), default=0),
        "timeline": per_second,
    }


SCENARIOS = {
    "kill": scenario_kill,
    "overload": scenario_overload,
    "swap": scenario_swap,
    "autoscale": scenario_autoscale,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--duration", type=float, default=60.0, help="s of load per scenario")
    parser.add_argument("--swap-duration", type=float, default=45.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kill-at", type=float, default=20.0)
    parser.add_argument("--calm-s", type=float, default=60.0, help="autoscale: 1 client after")
    parser.add_argument("--overload-factor", type=int, default=4)
    parser.add_argument("--timeout-s", type=float, default=20.0, help="limits.request_timeout_s")
    parser.add_argument("--follow-s", type=float, default=2.0, help="follow_alias_s (swap)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    names = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    args.port = args.port or free_port()

    from biogner.runtime import init_ray
    from biogner.serve.local import stop_app

    init_ray()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = str(build_tiny_model(Path(tmp) / "tiny-llama"))
        for name in names:
            print(f"== {name}", flush=True)
            started = time.perf_counter()
            try:
                results[name] = SCENARIOS[name](tiny, args)
            finally:
                stop_app(APP)
            results[name]["wall_s"] = time.perf_counter() - started
            summary = {
                k: v for k, v in results[name].items() if k not in ("timeline", "model_endpoint")
            }
            print(
                table([{"key": k, "value": str(v)} for k, v in summary.items()], ["key", "value"])
            )
    path = write_json(
        "serve_faults",
        {
            "command": command("bench.serve_faults", argv),
            "settings": vars(args),
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
