"""Map positions in text a model rewrote back onto the original sentence.

`inline` and `bio` answers restate the sentence; a model may drop or alter a few characters
or words. Aligning instead of giving up keeps every entity whose boundaries survived.
"""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher


def position_map(source: Sequence[str] | str, target: Sequence[str] | str) -> dict[int, int]:
    """Index in `source` -> index in `target` for elements the two sequences share in order."""
    matcher = SequenceMatcher(None, source, target, autojunk=False)
    mapping: dict[int, int] = {}
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            mapping[a + k] = b + k
    return mapping
