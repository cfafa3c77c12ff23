"""Starting and stopping the application on the Ray this process is connected to, for
`biogner serve`, the demo and the benchmarks: Serve's HTTP proxy on a chosen host and port,
the application deployed, readiness awaited over HTTP (as a client would see it).
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

import httpx

from biogner.runtime import requiet_logs
from biogner.serve.application import build_application
from biogner.serve.schema import DEFAULT_APP, ServeConfig

READY_TIMEOUT_S = 300.0


class ServeStartError(RuntimeError):
    """The endpoint could not be started or did not become ready (port busy, model failed)."""


def check_port_free(host: str, port: int) -> None:
    """Fail fast, naming the address, when something already listens there: Serve's proxy
    would otherwise retry binding in the background and the app would never answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServeStartError(
                    f"{host}:{port} is already in use (another server, or a running "
                    "`biogner serve`?): stop it or choose another port with --port"
                ) from None
            raise ServeStartError(f"cannot bind {host}:{port}: {exc}") from None


def start_app(
    cfg: ServeConfig, host: str, port: int, name: str = DEFAULT_APP, route_prefix: str = "/"
) -> str:
    """Start Serve's HTTP proxy on host:port (unless Serve already runs on this Ray) and
    deploy the application; returns its base URL once Serve reports it running."""
    from ray import serve

    requiet_logs()  # importing ray.serve gave its logger a console handler
    if not serve.status().proxies:
        check_port_free(host, port)
        serve.start(http_options={"host": host, "port": port})
    serve.run(build_application(cfg), name=name, route_prefix=route_prefix)
    return f"http://{host}:{port}{route_prefix.rstrip('/')}"


def wait_ready(base_url: str, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
    """Poll GET /readyz until the model answers; the last error is in the exception."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            r = httpx.get(f"{base_url}/readyz", timeout=10)
            if r.status_code == 200:
                ready: dict[str, Any] = r.json()
                return ready
            last = f"HTTP {r.status_code}: {r.text[:300]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise ServeStartError(
                f"{base_url}/readyz not ready after {timeout_s:.0f} s ({last}); if Serve was "
                "already running on this Ray, it keeps the HTTP host/port it was started with"
            )
        time.sleep(0.5)


def stop_app(name: str) -> None:
    """Delete the application; stop Serve too when no other application is left."""
    from ray import serve

    serve.delete(name)
    if not serve.status().applications:
        serve.shutdown()


__all__ = [
    "DEFAULT_APP",
    "READY_TIMEOUT_S",
    "ServeStartError",
    "check_port_free",
    "start_app",
    "stop_app",
    "wait_ready",
]
