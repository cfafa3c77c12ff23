"""`term`: one mention string per line (`Type: mention` when several types share a turn).

Lossy: strings carry no position, so repeated strings map to occurrences in order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from biogner.formats.base import (
    NONE_ANSWER,
    MentionPlacer,
    ParseResult,
    TokenIndex,
    Writing,
    canonical_type,
    escape_line,
    located_lines,
    ordered,
    unescape_line,
    without_lines,
)
from biogner.formats.grammar import alternatives, line_grammar, literal
from biogner.types import Sentence, Span

TYPE_SEP = ": "


class TermWriting(Writing):
    name = "term"
    budget_per_text_token = 1.0
    budget_floor = 16

    def answer_budget(self, text_tokens: int, types_in_answer: int) -> int:
        """A term answer lists each type's mentions: its budget grows with the types."""
        return super().answer_budget(text_tokens * types_in_answer, types_in_answer)

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
        for line, start, end in located_lines(answer):
            if len(types) > 1:
                head, sep, mention = line.partition(TYPE_SEP)
                label = canonical_type(head, types) if sep else None
            else:  # one type (or none asked: then no line can be read)
                label, mention = (types[0] if types else None), unescape_line(line)
            if label is None:
                result.problems.append(f"line {line!r} does not start with a known type")
                continue
            placer.place(mention, label, source=(start, end))
        return result.finish()

    item_end = "\n"
    mention_ends = ("\n",)

    def without_items(self, answer: str, ranges: Sequence[tuple[int, int]]) -> tuple[str, int]:
        return without_lines(answer, ranges)

    def spent(
        self, written: str, sentence: Sentence, types: Sequence[str]
    ) -> tuple[list[str], int]:
        """Complete lines whose mention (per type) is listed as often as it occurs."""
        *lines, _ = written.split("\n")
        index = TokenIndex(sentence)
        spent = []
        for line, n in Counter(lines).items():
            mention = line.partition(TYPE_SEP)[2] if len(types) > 1 else unescape_line(line)
            if n >= len(index.occurrences(mention.strip())):
                spent.append(line)
        return spent, written.rfind("\n")

    def grammar(self, sentence: Sentence, types: Sequence[str], spent: Sequence[str] = ()) -> str:
        """`None`, or lines of spans (`type: span` for several types). A line whose span is
        `None` may carry the escape; one starting with a backslash must (`escape_line`)."""

        def line(spans: list[str], s: Sentence) -> str:
            if len(types) > 1:
                kinds = alternatives([literal(t) for t in types])
                return f"({kinds}) {literal(TYPE_SEP)} ({alternatives(spans)})"
            escape = literal("\\")
            alts = []
            for name, tok in zip(spans, s.tokens, strict=True):
                if tok.startswith("\\"):
                    alts.append(f"{escape} {name}")
                elif tok == NONE_ANSWER:
                    alts += [name, f"{escape} {name}"]
                else:
                    alts.append(name)
            return alternatives(alts)

        return line_grammar(sentence, line, NONE_ANSWER, spent)
