"""One progress line per long stage, with rate and ETA, readable in a terminal and in a log.

In a terminal the line is redrawn in place; in a file or a pipe (CI, `ray job logs`) it is
printed at most every `every_s` seconds and at the end, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def duration(seconds: float) -> str:
    """`1h05m`, `3m07s`: short enough for a progress line."""
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


MIN_RATE_WINDOW_S = 1.0  # the shortest span after the first unit a rate is measured over


class Progress:
    def __init__(
        self,
        label: str,
        total: int,
        unit: str,
        every_s: float = 15.0,
        out: TextIO | None = None,
        also: str | None = None,
    ) -> None:
        """`also`: a second unit counted alongside (documents, and the sentences in them),
        shown with its own rate."""
        self.label, self.total, self.unit = label, total, unit
        self.also = also
        self.also_done = 0
        self._also_first = 0  # counted with the first unit, before the rate's clock starts
        self.done = 0
        self.every_s = every_s
        self.out = out or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last_print = -float("inf")
        self._first: float | None = None  # when the first unit was done

    def line(self) -> str:
        """The rate and ETA count from the first unit done, not from the start: a stage's
        start-up (a model loading) would make the first line promise hours. Units that come
        in one burst (a whole split in one block) span no measurable time after the first:
        their rate is then counted from the start (it read 559,957 sentences/s)."""
        now = time.perf_counter()
        elapsed = now - self.start
        measured = now - self._first if self._first is not None else 0.0
        if self.done > 1 and measured >= MIN_RATE_WINDOW_S:
            rate = (self.done - 1) / measured
        elif self.done > 1 and elapsed > 0:
            rate = self.done / elapsed
        else:
            rate = 0.0
        eta = duration((self.total - self.done) / rate) if rate > 0 else "?"
        also = ""
        if self.also is not None:
            also_rate = (self.also_done - self._also_first) / measured if measured > 0 else 0.0
            also = f" ({self.also_done} {self.also}, {also_rate:.1f}/s)"
        return (
            f"[{self.label}] {self.done}/{self.total} {self.unit}, {rate:.1f}/s{also}, "
            f"elapsed {duration(elapsed)}, eta {eta}"
        )

    def update(self, n: int = 1, also: int = 0) -> None:
        now = time.perf_counter()
        self.also_done += also
        if self._first is None:
            self._first = now
            self._also_first = self.also_done
        self.done += n
        finished = self.done >= self.total
        if self.tty:
            self.out.write("\r" + self.line() + ("\n" if finished else ""))
            self.out.flush()
        elif finished or now - self._last_print >= self.every_s:
            self.out.write(self.line() + "\n")
            self.out.flush()
            self._last_print = now
