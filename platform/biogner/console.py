"""Keep Ray's known noise off the terminal of a `biogner` command.

Why: a few of Ray's lines reach the driver's stderr from its C++ core, past every Python
logger and `ray.init(log_to_driver=False)`, and say nothing a user can act on: Ray Data
creates every actor-pool stage (training's tokenizer, each evaluation) so that Ray's core
logs an ERROR-level line about actor restarts (ray-project/ray#57733, open). A user reads an
error where there is none. The command's file descriptor 2 is therefore routed through a
small filter process: lines in `NOISE` go to the command's log file, everything else to the
terminal unchanged. A process, not a thread: when the command dies abruptly (a C++ abort, a
kill), the filter still drains what was written and exits at end of input, so no real error
is lost. Only the CLI turns it on (`enable`); library callers and tests keep their stderr.

Ray's driver also prints the errors the cluster publishes (prefixed "(raylet)") to
`sys.stdout`, from a thread, one `print` each: those in `NOISE` are kept off by a thin
wrapper of `sys.stdout` (`RayPrints`), installed and removed with the filter.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

# What Ray writes to the driver's stderr (or prints to its stdout) that is kept off the console,
# each with why. A line matches when the pattern is found in it (bytes: the filter never
# decodes).
NOISE: tuple[re.Pattern[bytes], ...] = (
    # Ray Data puts each actor-pool stage's map function in the object store and creates the
    # stage's actors with max_restarts=-1: ray-project/ray#57733. The actors restart fine on
    # one machine (the driver holds the object), so the warning concerns nothing of ours.
    re.compile(
        rb"\] core_worker\.cc:\d+: Actor with class name: 'MapWorker\(.*\)' and ID: '\w+' "
        rb"has constructor arguments in the object store and max_restarts > 0"
    ),
    # `serve.shutdown()` waits on the controller's graceful_shutdown, which by design never
    # returns: the controller kills itself when Serve is down. The controller retries its
    # tasks forever, so Ray's core sometimes publishes the ended call as a retry (stdout).
    re.compile(
        rb"Task ServeController\.graceful_shutdown failed\. There are infinite retries "
        rb"remaining, so the task will be retried\. Error: The actor is dead because it was "
        rb"killed by `ray\.kill`"
    ),
)
KEPT_OFF = b"kept off the console: "
WAIT_S = 5.0  # how long an exiting command waits for the filter to drain

_wanted = False
_filter: subprocess.Popen[bytes] | None = None
_console_fd: int | None = None
_stdout: RayPrints | None = None


def is_noise(line: bytes) -> bool:
    return any(pattern.search(line) for pattern in NOISE)


class RayPrints:
    """`sys.stdout` less the writes that are noise (see the module's docstring). Ray prints a
    message as one write and its newline as the next, from its listener thread: a noise write
    goes to the log file, and the same thread's next write, if it is that newline, is
    dropped. Every other write, and every attribute, is the wrapped stream's."""

    def __init__(self, stream: TextIO, log_path: Path) -> None:
        self.stream = stream
        self.log_path = log_path
        self._after_noise = threading.local()

    def write(self, text: str) -> int:
        if text == "\n" and getattr(self._after_noise, "flag", False):
            self._after_noise.flag = False
            return len(text)
        self._after_noise.flag = False
        if is_noise(text.encode("utf-8", "replace")):
            try:
                with open(self.log_path, "ab") as log:
                    log.write(KEPT_OFF + text.rstrip("\n").encode("utf-8", "replace") + b"\n")
            except OSError:  # no log file: the line goes out rather than vanish, and no
                return self.stream.write(text)  # error reaches the thread that printed it
            self._after_noise.flag = True  # print's end="\n" follows in the next write
            return len(text)
        return self.stream.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> object:
        if name == "stream" or name.startswith("__"):  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self.stream, name)


def enable() -> None:
    """Ask for the filter: `start` (called by `runtime.init_ray` before Ray starts) installs it
    then. Called by the CLI's `main` only."""
    global _wanted
    _wanted = True


def wanted() -> bool:
    return _wanted


def filter_pid() -> int | None:
    """The filter process's pid: `runtime.stop_local_ray` leaves it alone (it ends by itself
    once every writer is gone, after `stop`)."""
    return _filter.pid if _filter is not None else None


def start(log_file: Path) -> bool:
    """Route this process's stderr (file descriptor 2, which Ray's C++ core writes to)
    through the filter process; idempotent. `stop` undoes it, at exit: registered here, before
    Ray starts, it runs after `runtime.stop_local_ray` (atexit is LIFO), so Ray's last words
    pass through the filter too. False when the filter could not
    start (no free descriptor or process): the command goes on with its stderr as it was,
    since a quiet console is not worth a failed run."""
    global _filter, _console_fd, _stdout
    if _filter is not None:
        return True
    try:
        console = os.dup(2)
    except OSError:
        return False
    read_end, write_end = os.pipe()
    try:
        _filter = subprocess.Popen(
            [sys.executable, "-m", "biogner.console", str(log_file)],
            stdin=read_end,
            stdout=console,
            stderr=console,
        )
    except OSError:
        for fd in (console, read_end, write_end):
            os.close(fd)
        return False
    os.close(read_end)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    _console_fd = console
    if sys.stdout is not None:  # None: no stdout at all, and print() does nothing
        _stdout = RayPrints(sys.stdout, log_file)
        sys.stdout = _stdout  # type: ignore[assignment]
    atexit.register(stop)
    return True


def stop(wait_s: float = WAIT_S) -> None:
    """Give file descriptor 2 back to the terminal and let the filter drain and exit (it ends
    when every writer has gone: this process and the processes it started)."""
    global _filter, _console_fd, _stdout
    if _stdout is not None and sys.stdout is _stdout:
        sys.stdout = _stdout.stream
    _stdout = None
    if _filter is None or _console_fd is None:
        return
    sys.stderr.flush()
    os.dup2(_console_fd, 2)
    os.close(_console_fd)
    # A child that still holds the pipe keeps the filter going: it drains without us.
    with contextlib.suppress(subprocess.TimeoutExpired):
        _filter.wait(timeout=wait_s)
    _filter, _console_fd = None, None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def forward(source: int, console: int, log_path: Path) -> None:
    """The filter's loop, until end of input: whole lines to the console or (noise) to the log
    file. A partial line goes out at once (a progress bar redrawn with \\r, a prompt) unless
    it may be the start of a C++ log line ("[<time> E ..."), which waits for its end."""
    pending = b""
    with open(log_path, "ab") as log:
        while chunk := os.read(source, 1 << 16):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if is_noise(line):
                    log.write(KEPT_OFF + line + b"\n")
                    log.flush()
                else:
                    _write_all(console, line + b"\n")
            if pending and not pending.startswith(b"["):
                _write_all(console, pending)
                pending = b""
        if pending:
            _write_all(console, pending)


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole foreground group: the filter outlives the command's own
    # handling of it, so the traceback or the "interrupted" line still gets through.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    forward(sys.stdin.fileno(), sys.stdout.fileno(), Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
