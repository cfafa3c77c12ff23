"""`json`: a JSON list of `{"text": mention, "type": type}` objects.

Lossy like `term` (strings only). The parser recovers objects from truncated or chatty output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from biogner.formats.base import MentionPlacer, ParseResult, Writing, canonical_type, ordered
from biogner.types import Sentence, Span

_OBJECT = re.compile(r"\{[^{}]*\}")


def _items(answer: str, result: ParseResult) -> list[Any]:
    text = answer.strip()
    try:
        data = json.loads(text)
        if isinstance(data, list):
            return data
        if isinstance(data, dict):
            return [data]
        result.problems.append("JSON answer is not a list")
        return []
    except ValueError:
        pass
    result.problems.append("answer is not valid JSON; recovered objects one by one")
    items = []
    for match in _OBJECT.finditer(text):
        try:
            items.append(json.loads(match.group(0)))
        except ValueError:
            result.problems.append(f"unreadable object {match.group(0)!r}")
    return items


class JsonWriting(Writing):
    name = "json"
    exact = False
    nesting = True
    instruction = 'A JSON list of {"text": mention, "type": type}; [] if none.'

    def render(self, sentence: Sentence, spans: Sequence[Span], types: Sequence[str]) -> str:
        items = [{"text": s.text_in(sentence.text), "type": s.label} for s in ordered(spans)]
        return json.dumps(items, ensure_ascii=False)

    def parse(self, answer: str, sentence: Sentence, types: Sequence[str]) -> ParseResult:
        result = ParseResult()
        placer = MentionPlacer(sentence, result)
        for item in _items(answer, result):
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                result.problems.append(f"item {item!r} has no string 'text'")
                continue
            type_name = item.get("type", types[0] if len(types) == 1 else "")
            label = canonical_type(str(type_name), types)
            if label is None:
                result.problems.append(f"unknown type {type_name!r}")
                continue
            placer.place(item["text"], label)
        return result.finish()
