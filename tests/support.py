"""Helpers every kind of test uses: a free port, and waits on a condition with a deadline.

A test that waits for something (a server up, a heartbeat written, a request queued behind a
busy model) polls the condition itself until a deadline, never sleeps a fixed time and hopes:
on a loaded 2-core box a fixed sleep is sometimes too short (a flaky failure) and always too
long (wasted seconds). The deadline is generous; a test reaches it only when the behaviour it
waits for is broken, and then fails naming what it waited for.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

# Long enough for any wait on a loaded box; reached only when what a test waits for is broken.
DEADLINE_S = 60.0
POLL_S = 0.01


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], object],
    timeout_s: float = DEADLINE_S,
    what: str = "",
    poll_s: float = POLL_S,
) -> None:
    """Return once `predicate()` is true; fail the test (AssertionError naming `what`) when
    it is still false after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s:.0f} s: {what or predicate!r}")
        time.sleep(poll_s)


async def wait_until_async(
    predicate: Callable[[], object],
    timeout_s: float = DEADLINE_S,
    what: str = "",
    poll_s: float = POLL_S,
) -> None:
    """`wait_until` inside an event loop: the loop keeps running while it waits."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s:.0f} s: {what or predicate!r}")
        await asyncio.sleep(poll_s)
