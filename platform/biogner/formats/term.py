"""`term`: one mention string per line (`Type: mention` when several types share a turn).

Lossy: strings carry no position, so repeated strings map to occurrences in order.
"""

from __future__ import annotations

from collections.abc import Sequence

from biogner.formats.base import (
    NONE_ANSWER,
    MentionPlacer,
    ParseResult,
    Writing,
    answer_lines,
    canonical_type,
    escape_line,
    ordered,
    unescape_line,
)
from biogner.types import Sentence, Span

TYPE_SEP = ": "


class TermWriting(Writing):
    name = "term"
    exact = False
    nesting = True
    instruction = (
        "Mentions as written, one per line (as type: mention for several types); None if none."
    )

    def render(self, sentence: Sentence, spans: Sequence[Span], types: Sequence[str]) -> str:
        lines = []
        for span in ordered(spans):
            mention = span.text_in(sentence.text)
            lines.append(
                f"{span.label}{TYPE_SEP}{mention}" if len(types) > 1 else escape_line(mention)
            )
        return "\n".join(lines) if lines else NONE_ANSWER

    def parse(self, answer: str, sentence: Sentence, types: Sequence[str]) -> ParseResult:
        result = ParseResult()
        placer = MentionPlacer(sentence, result)
        for line in answer_lines(answer):
            label: str | None = types[0] if len(types) == 1 else None
            mention = unescape_line(line)
            if len(types) > 1:
                head, sep, rest = line.partition(TYPE_SEP)
                label = canonical_type(head, types) if sep else None
                if label is None:
                    result.problems.append(f"line {line!r} does not start with a known type")
                    continue
                mention = rest
            assert label is not None
            placer.place(mention, label)
        return result.finish()
