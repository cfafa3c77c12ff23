"""`triple`: `mention | type | k` per line, k = which occurrence of that string (1-based,
counted on token boundaries). Exact: the occurrence index pins the position."""

from __future__ import annotations

from collections.abc import Sequence

from biogner.formats.base import (
    NONE_ANSWER,
    MentionPlacer,
    ParseResult,
    TokenIndex,
    Writing,
    canonical_type,
    located_lines,
    ordered,
    without_lines,
)
from biogner.formats.grammar import (
    alternatives,
    excluding,
    literal,
    repeated_spans,
    span_terminals,
)
from biogner.types import Sentence, Span

SEP = " | "


class TripleWriting(Writing):
    name = "triple"
    budget_per_text_token = 1.5
    budget_floor = 24
    exact = True
    nesting = True
    instruction = "mention | type | n (its n-th occurrence), one per line; None if none."
    mention_ends = ("|", "\n")

    def render(self, sentence: Sentence, spans: Sequence[Span], types: Sequence[str]) -> str:
        index = TokenIndex(sentence)
        lines = []
        for span in ordered(spans):
            mention = span.text_in(sentence.text)
            k = index.occurrences(mention).index((span.start, span.end)) + 1
            lines.append(f"{mention}{SEP}{span.label}{SEP}{k}")
        return "\n".join(lines) if lines else NONE_ANSWER

    def parse(self, answer: str, sentence: Sentence, types: Sequence[str]) -> ParseResult:
        result = ParseResult()
        placer = MentionPlacer(sentence, result)
        for line, start, end in located_lines(answer):
            parts = line.rsplit(SEP.strip(), 2)
            occurrence: int | None = None
            if len(parts) == 3:
                mention, type_name, k = parts
                try:
                    occurrence = int(k.strip())
                except ValueError:
                    result.problems.append(f"occurrence {k.strip()!r} is not a number")
            elif len(parts) == 2:
                mention, type_name = parts
                result.problems.append(f"line {line!r} has no occurrence index")
            else:
                result.problems.append(f"line {line!r} is not 'mention | type | n'")
                continue
            label = canonical_type(type_name, types)
            if label is None:
                result.problems.append(f"unknown type {type_name.strip()!r}")
                continue
            placer.place(mention.strip(), label, occurrence, source=(start, end))
        return result.finish()

    def without_items(self, answer: str, ranges: Sequence[tuple[int, int]]) -> tuple[str, int]:
        return without_lines(answer, ranges)

    def grammar(self, sentence: Sentence, types: Sequence[str], spent: Sequence[str] = ()) -> str:
        """`None`, or `span | type | k` lines where k can only be an occurrence the span has:
        1 for a span that occurs once, 1..n for the (few) spans that occur n times."""
        defs, names = span_terminals(sentence)
        if not names:
            return f"start: {literal(NONE_ANSWER)}\n"
        sep = literal(SEP)
        kinds = alternatives([literal(t) for t in types])
        repeated = repeated_spans(sentence)
        once = excluding(alternatives(names), list(repeated))
        lines = [f"({once}) {sep} ({kinds}) {sep} {literal('1')}"]
        for mention, n in repeated.items():
            ks = alternatives([literal(str(k)) for k in range(1, n + 1)])
            lines.append(f"{literal(mention)} {sep} ({kinds}) {sep} ({ks})")
        newline = literal("\n")
        return "\n".join(
            [
                f"start: {literal(NONE_ANSWER)} | LINE ({newline} LINE)*",
                f"LINE: {alternatives([f'({line})' for line in lines])}",
                *defs,
            ]
        )
