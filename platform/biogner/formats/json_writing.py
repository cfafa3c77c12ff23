"""`json`: a JSON list of `{"text": mention, "type": type}` objects.

Lossy like `term` (strings only). The parser recovers objects from truncated or chatty output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from biogner.formats.base import (
    MentionPlacer,
    ParseResult,
    TokenIndex,
    Writing,
    canonical_type,
    ordered,
    overlaps,
)
from biogner.formats.grammar import alternatives, excluding, literal, span_terminals
from biogner.types import Sentence, Span

_OBJECT = re.compile(r"\{[^{}]*\}")
# A string or a bracket outside strings, to measure how deep an answer nests.
_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
# Answers nest 2 deep (a list of flat objects); deeper ones are not read as a whole, which
# also keeps json.loads (recursive) far from Python's recursion limit.
MAX_DEPTH = 8
# One object as `render` writes it (json.dumps' separators), in an answer being generated.
_WRITTEN_OBJECT = re.compile(r'\{"text": "((?:[^"\\]|\\.)*)", "type": "((?:[^"\\]|\\.)*)"\}')


def _json_string_body(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _depth(text: str) -> int:
    """How deep brackets nest in `text` (outside strings; unclosed ones count)."""
    depth = deepest = 0
    for match in _NESTING.finditer(text):
        bracket = match.group(0)
        if bracket in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in ("]", "}"):
            depth = max(depth - 1, 0)
    return deepest


def _load(text: str) -> Any:
    """json.loads, refusing (ValueError) what nests deeper than MAX_DEPTH."""
    if _depth(text) > MAX_DEPTH:
        raise ValueError(f"nests deeper than {MAX_DEPTH}")
    return json.loads(text)


def _items(answer: str, result: ParseResult) -> list[Any]:
    text = answer.strip()
    try:
        data = _load(text)
        if isinstance(data, list):
            return data
        if isinstance(data, dict):
            return [data]
        result.problems.append("JSON answer is not a list")
        return []
    except ValueError as exc:
        reason = str(exc).partition(":")[0]
    result.problems.append(f"answer is not valid JSON ({reason}); recovered objects one by one")
    items = []
    for match in _OBJECT.finditer(text):
        try:
            items.append(_load(match.group(0)))
        except ValueError:
            result.problems.append(f"unreadable object {match.group(0)!r:.200}")
    return items


class JsonWriting(Writing):
    name = "json"
    budget_per_text_token = 2.0
    budget_floor = 24
    exact = False
    nesting = True
    instruction = 'A JSON list of {"text": mention, "type": type}; [] if none.'

    def render(self, sentence: Sentence, spans: Sequence[Span], types: Sequence[str]) -> str:
        items = [{"text": s.text_in(sentence.text), "type": s.label} for s in ordered(spans)]
        return json.dumps(items, ensure_ascii=False)

    def parse(self, answer: str, sentence: Sentence, types: Sequence[str]) -> ParseResult:
        result = ParseResult()
        placer = MentionPlacer(sentence, result)
        items = _items(answer, result)
        # where each item was written: the answer's objects in order, when they are the items
        objects = [(m.start(), m.end()) for m in _OBJECT.finditer(answer)]
        places: list[tuple[int, int] | None] = (
            list(objects) if len(objects) == len(items) else [None] * len(items)
        )
        for item, place in zip(items, places, strict=True):
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                result.problems.append(f"item {item!r} has no string 'text'")
                continue
            type_name = item.get("type", types[0] if len(types) == 1 else "")
            label = canonical_type(str(type_name), types)
            if label is None:
                result.problems.append(f"unknown type {type_name!r}")
                continue
            placer.place(item["text"], label, source=place)
        return result.finish()

    item_end = "}"
    mention_ends = ('"',)

    def spent(
        self, written: str, sentence: Sentence, types: Sequence[str]
    ) -> tuple[list[str], int]:
        """Complete objects whose mention (per type) is listed as often as it occurs."""
        objects = list(_WRITTEN_OBJECT.finditer(written))
        if not objects:
            return [], len(written)
        index = TokenIndex(sentence)
        counts: dict[str, int] = {}
        for match in objects:
            counts[match.group(0)] = counts.get(match.group(0), 0) + 1
        spent = []
        for item, n in counts.items():
            mention = json.loads(item)["text"]
            if n >= len(index.occurrences(mention)):
                spent.append(item)
        return spent, objects[-1].end()

    def without_items(self, answer: str, ranges: Sequence[tuple[int, int]]) -> tuple[str, int]:
        """The list less the objects that share a character (or the separator before them)
        with `ranges`."""
        objects = list(_WRITTEN_OBJECT.finditer(answer))
        kept = []
        for k, match in enumerate(objects):
            start = objects[k - 1].end() if k else match.start()
            if not overlaps(start, match.end(), ranges):
                kept.append(match.group(0))
        if len(kept) == len(objects):
            return answer, 0
        return "[" + ", ".join(kept) + "]", len(objects) - len(kept)

    def complete(self, prefix: str, sentence: Sentence, types: Sequence[str]) -> str:
        """The list up to its last complete object, closed (no object cut short)."""
        objects = list(_WRITTEN_OBJECT.finditer(prefix))
        return prefix[: objects[-1].end()] + "]" if objects else "[]"

    def grammar(self, sentence: Sentence, types: Sequence[str], spent: Sequence[str] = ()) -> str:
        """`[]`, or a list of `{"text": span, "type": type}` objects written as `render`
        writes them (json.dumps, literal non-ASCII), each span a span of the sentence."""
        defs, names = span_terminals(sentence, spell=_json_string_body)
        kinds = alternatives([literal(_json_string_body(t)) for t in types])
        if not names:
            return 'start: "[]"\n' if not spent else 'start: "]"\n'
        head, middle, tail = (literal(part) for part in ('{"text": "', '", "type": "', '"}'))
        obj = excluding(f"{head} ({alternatives(names)}) {middle} ({kinds}) {tail}", spent)
        comma = literal(", ")
        if spent:
            start = f"start: ({comma} OBJ)* {literal(']')}"
        else:
            start = f"start: {literal('[]')} | {literal('[')} OBJ ({comma} OBJ)* {literal(']')}"
        return "\n".join([start, f"OBJ: {obj}", *defs])
