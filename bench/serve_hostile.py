"""Hostile requests against a real endpoint, and what they cost everybody else (#29).

One local Ray, Serve on 127.0.0.1, the tiny model built from config (the serving path, not a
model's speed), an API key set. A victim client sends one-sentence requests in a closed loop
throughout and /healthz is polled; in each scenario an attacker sends, for --seconds:
  baseline       nothing
  type-bomb      a 1.98 MB body of 990,000 integers in `texts` (422 expected)
  readyz-flood   64 anonymous /readyz in parallel, again and again
  big-neighbour  250-sentence requests, one after the other (the victim's neighbour)
  slow-upload    8 connections that send a body a byte every 0.5 s (408 expected)
  text-plain     a text/plain POST, a browser's CORS-free "simple request" (415 expected)
Reported per scenario: the attacker's statuses and median seconds, the victim's requests,
errors, p50/p95/max latency, and /healthz max latency. Prints a table, writes
bench/results/serve_hostile.json. Run it alone on the machine.

Usage: python -m bench.serve_hostile [--seconds 10] [--port 8011]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.common import table, write_json
from biogner.models.load import save_model_dir
from biogner.serve.app import parse_config, resolve_locations
from biogner.serve.local import start_app, stop_app, wait_ready

APP = "bench-hostile"
KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
META = {"format": "multi_term", "entity_types": ["Disease"], "base_model": "tiny-llama"}
SENTENCE = "Hereditary nonpolyposis colorectal cancer is caused by mismatch repair defects."
BOMB = b'{"texts": [' + b",".join([b"0"] * 990_000) + b"]}"
BIG = {"texts": [" ".join([SENTENCE] * 250)]}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def victim(base: str, stop: asyncio.Event, out: dict[str, list[Any]]) -> None:
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=120) as c:
        while not stop.is_set():
            t = time.perf_counter()
            r = await c.post("/v1/extract", json={"texts": [SENTENCE]})
            out["latency"].append(time.perf_counter() - t)
            out["status"].append(r.status_code)


async def health(base: str, stop: asyncio.Event, out: dict[str, list[Any]]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=120) as c:
        while not stop.is_set():
            t = time.perf_counter()
            await c.get("/healthz")
            out["health"].append(time.perf_counter() - t)
            await asyncio.sleep(0.1)


async def slow_upload(port: int, seconds: float) -> tuple[int, float]:
    """One connection sending a JSON body a byte every 0.5 s; its status and seconds."""
    t = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"texts": [SENTENCE]}).encode()
    head = (
        f"POST /v1/extract HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode())
    status = 0
    try:
        for byte in body:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                line = await asyncio.wait_for(reader.readline(), 0.5)
            except TimeoutError:
                if time.perf_counter() - t > seconds + 30:
                    break
                continue
            if line.startswith(b"HTTP/"):
                status = int(line.split()[1])
                break
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    return status, time.perf_counter() - t


async def attacker(name: str, base: str, port: int, stop: asyncio.Event) -> list[tuple[int, float]]:
    seen: list[tuple[int, float]] = []
    async with httpx.AsyncClient(base_url=base, timeout=300) as c:
        while not stop.is_set():
            t = time.perf_counter()
            if name == "type-bomb":
                r = await c.post(
                    "/v1/extract",
                    content=BOMB,
                    headers={**AUTH, "Content-Type": "application/json"},
                )
                seen.append((r.status_code, time.perf_counter() - t))
            elif name == "readyz-flood":
                rs = await asyncio.gather(*(c.get("/readyz") for _ in range(64)))
                seen += [(r.status_code, time.perf_counter() - t) for r in rs]
            elif name == "big-neighbour":
                r = await c.post("/v1/extract", json=BIG, headers=AUTH)
                seen.append((r.status_code, time.perf_counter() - t))
            elif name == "slow-upload":
                seen += await asyncio.gather(*(slow_upload(port, 10) for _ in range(8)))
            elif name == "text-plain":
                r = await c.post(
                    "/v1/extract",
                    content=b'{"texts": ["a"]}',
                    headers={**AUTH, "Content-Type": "text/plain"},
                )
                seen.append((r.status_code, time.perf_counter() - t))
                await asyncio.sleep(0.2)
            else:
                await asyncio.sleep(0.2)
    return seen


async def scenario(name: str, base: str, port: int, seconds: float) -> dict[str, Any]:
    stop = asyncio.Event()
    out: dict[str, list[Any]] = {"latency": [], "status": [], "health": []}
    tasks = [
        asyncio.create_task(victim(base, stop, out)),
        asyncio.create_task(health(base, stop, out)),
    ]
    attack = asyncio.create_task(attacker(name, base, port, stop))
    await asyncio.sleep(seconds)
    stop.set()
    seen = await attack
    await asyncio.gather(*tasks)
    statuses = Counter(s for s, _ in seen)
    lat = out["latency"]
    return {
        "scenario": name,
        "attacker statuses": " ".join(f"{k}x{v}" for k, v in sorted(statuses.items())) or "-",
        "attacker median s": round(statistics.median([s for _, s in seen]), 2) if seen else "-",
        "victim requests": len(lat),
        "victim errors": sum(s != 200 for s in out["status"]),
        "victim p50 ms": round(1000 * pct(lat, 50)),
        "victim p95 ms": round(1000 * pct(lat, 95)),
        "victim max ms": round(1000 * max(lat)) if lat else "-",
        "healthz max ms": round(1000 * max(out["health"])) if out["health"] else "-",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="serve_hostile")
    parser.add_argument(
        "--scenarios",
        default="baseline,type-bomb,readyz-flood,big-neighbour,slow-upload,text-plain",
    )
    args = parser.parse_args(argv)
    import tempfile

    from biogner.runtime import init_ray

    port = args.port or free_port()
    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_model_dir("tiny-llama", Path(tmp) / "tiny", META)
        cfg = resolve_locations(
            parse_config(
                {
                    "model_uri": str(model_dir),
                    "generation": {"device": "cpu", "max_new_tokens_cap": 16},
                    "limits": {
                        "max_windows": 512,
                        "max_chars_per_text": 40_000,
                        "body_timeout_s": 5.0,
                    },
                    "ingress": {
                        "ray_actor_options": {
                            "num_cpus": 0,
                            "runtime_env": {"env_vars": {"BIOGNER_API_KEY": KEY}},
                        }
                    },
                }
            )
        )
        base = start_app(cfg, "127.0.0.1", port, APP)
        wait_ready(base)
        rows = []
        try:
            for name in args.scenarios.split(","):
                row = asyncio.run(scenario(name, base, port, args.seconds))
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            stop_app(APP)
    columns = list(rows[0])
    print(table(rows, columns))
    write_json(args.name, {"seconds": args.seconds, "rows": rows})


if __name__ == "__main__":
    main()
