"""Texts -> the model inputs (sentence windows) of each, with an optional cap on their count.

Why one function: the endpoint refuses a request over its window cap as soon as the count
passes it (refusing costs at most that much work), while the Python API, the pyfunc and the
extraction job window whole texts; both count the same windows the same way."""

from __future__ import annotations

from collections.abc import Sequence

from biogner.annotate.text import Window, iter_windows

WINDOW_TOKENS = 128  # tokens per model input (a long sentence is cut into pieces)
WINDOW_CHARS = 1_000  # characters per model input


class TooManyWindows(ValueError):
    """More windows than the cap: `text` is the index of the text whose windows passed it,
    `count` the windows counted then (the count stops there)."""

    def __init__(self, cap: int, count: int, text: int) -> None:
        super().__init__(f"more than {cap} model inputs: {count} counted by texts[{text}]")
        self.cap = cap
        self.count = count
        self.text = text


def text_windows(
    texts: Sequence[str],
    window_tokens: int = WINDOW_TOKENS,
    window_chars: int = WINDOW_CHARS,
    max_windows: int | None = None,
) -> list[list[Window]]:
    """Each text's windows (ids `t<i>w<k>`); TooManyWindows as soon as the count passes
    `max_windows` (None: no cap)."""
    out: list[list[Window]] = []
    total = 0
    for i, text in enumerate(texts):
        windows: list[Window] = []
        for window in iter_windows(text, window_tokens, window_chars, f"t{i}w"):
            total += 1
            if max_windows is not None and total > max_windows:
                raise TooManyWindows(max_windows, total, i)
            windows.append(window)
        out.append(windows)
    return out


__all__ = ["WINDOW_CHARS", "WINDOW_TOKENS", "TooManyWindows", "text_windows"]
