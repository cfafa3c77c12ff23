"""Generations of sentence windows -> entities with offsets in the texts as sent.

Why apart from the model: the offset mapping is where a served entity could drift from the
text, so it is one pure function, tested with real formats and real parsers."""

from __future__ import annotations

from collections.abc import Sequence

from biogner.annotate.entities import Entity, TextResult
from biogner.annotate.text import Window
from biogner.generation import Generation


def assemble(
    texts: Sequence[str],
    windows: Sequence[Sequence[Window]],
    generations: Sequence[Generation],
    labels: set[str] | None = None,
    min_score: float = 0.0,
) -> list[TextResult]:
    """Entities per text from the generations of its windows (flattened, in window order),
    of the `labels` asked for (a group asked whole may answer more), scored at least
    `min_score` (an entity found in two overlapping windows keeps its best score).

    Every entity's offsets index the text as sent and `text` is exactly `text[start:end]`.
    """
    results: list[TextResult] = []
    it = iter(generations)
    for text, text_windows in zip(texts, windows, strict=True):
        found: dict[tuple[int, int, str], float | None] = {}
        incomplete = False
        for window in text_windows:
            gen = next(it)
            incomplete = incomplete or gen.truncated
            for span in gen.parse.spans:
                if labels is not None and span.label not in labels:
                    continue
                mapped = window.to_original(span.start, span.end)
                if mapped is None:
                    continue
                key = (mapped[0], mapped[1], span.label)
                score = gen.parse.scores.get(span)
                best = found.get(key)
                found[key] = score if best is None or (score or 0.0) > best else best
        entities = [
            Entity(start=s, end=e, label=lab, text=text[s:e], score=score)
            for (s, e, lab), score in sorted(found.items())
            if score is None or score >= min_score
        ]
        results.append(
            TextResult(
                entities=entities,
                truncated=any(w.truncated for w in text_windows),
                incomplete=incomplete,
            )
        )
    if next(it, None) is not None:
        raise ValueError("more generations than windows")
    return results


__all__ = ["assemble"]
