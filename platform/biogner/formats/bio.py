"""`bio`: every word followed by its IOB2 tag in parentheses, `word(B-Disease)` (GNER style).

Exact for flat entities; it cannot nest. The tag is read after the *last* `(`, so words
that contain parentheses or look like tags (`B-Disease`, `O`) are still unambiguous.
"""

from __future__ import annotations

from collections.abc import Sequence

from biogner.corpora.iob import spans_to_tags, tags_to_spans
from biogner.formats.alignment import position_map
from biogner.formats.base import ParseResult, Writing, canonical_type
from biogner.types import Sentence, Span


class BioWriting(Writing):
    name = "bio"
    exact = True
    nesting = False
    instruction = "Every word with its tag: word(B-type), word(I-type) or word(O)."

    def render(self, sentence: Sentence, spans: Sequence[Span], types: Sequence[str]) -> str:
        tags = spans_to_tags(sentence, list(spans))
        return " ".join(f"{tok}({tag})" for tok, tag in zip(sentence.tokens, tags, strict=True))

    def parse(self, answer: str, sentence: Sentence, types: Sequence[str]) -> ParseResult:
        result = ParseResult()
        words: list[str] = []
        tags: list[str] = []
        for item in answer.split():
            cut = item.rfind("(")
            if cut <= 0 or not item.endswith(")"):
                result.problems.append(f"{item!r} has no '(tag)'")
                words.append(item)
                tags.append("O")
                continue
            words.append(item[:cut])
            tags.append(self._tag(item[cut + 1 : -1], types, result))
        tokens = list(sentence.tokens)
        if words != tokens:
            result.problems.append("the repeated words differ from the input")
            aligned = ["O"] * len(tokens)
            for i, j in position_map(words, tokens).items():
                aligned[j] = tags[i]
            tags = aligned
        spans, _ = tags_to_spans(tokens, tags)
        result.spans.extend(spans)
        result.predicted_mentions = len(spans)
        return result.finish()

    @staticmethod
    def _tag(raw: str, types: Sequence[str], result: ParseResult) -> str:
        raw = raw.strip()
        if raw == "O":
            return raw
        prefix, sep, type_name = raw.partition("-")
        label = canonical_type(type_name, types) if sep else None
        if prefix not in ("B", "I") or label is None:
            result.problems.append(f"unknown tag {raw!r}")
            return "O"
        return f"{prefix}-{label}"
