"""`bio`: every word followed by its IOB2 tag in parentheses, `word(B-Disease)` (GNER style).

Exact for flat entities; it cannot nest. The tag is read after the *last* `(`, so words
that contain parentheses or look like tags (`B-Disease`, `O`) are still unambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from biogner.corpora.iob import spans_to_tags, tags_to_spans
from biogner.formats.alignment import position_map
from biogner.formats.base import ParseResult, Writing, canonical_type
from biogner.formats.grammar import alternatives, literal
from biogner.types import Sentence, Span


class BioWriting(Writing):
    name = "bio"
    budget_per_text_token = 4.0
    budget_floor = 24
    exact = True
    restates_sentence = True
    nesting = False
    instruction = "Every word with its tag: word(B-type), word(I-type) or word(O)."

    def render(self, sentence: Sentence, spans: Sequence[Span], types: Sequence[str]) -> str:
        tags = spans_to_tags(sentence, list(spans))
        return " ".join(f"{tok}({tag})" for tok, tag in zip(sentence.tokens, tags, strict=True))

    def parse(self, answer: str, sentence: Sentence, types: Sequence[str]) -> ParseResult:
        result = ParseResult()
        words: list[str] = []
        tags: list[str] = []
        places = [(m.start(), m.end()) for m in re.finditer(r"\S+", answer)]
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
        item_of: dict[int, int] = {j: j for j in range(min(len(words), len(tokens)))}
        if words != tokens:
            result.problems.append("the repeated words differ from the input")
            aligned = ["O"] * len(tokens)
            item_of = {}
            for i, j in position_map(words, tokens).items():
                aligned[j] = tags[i]
                item_of[j] = i
            tags = aligned
        spans, _ = tags_to_spans(tokens, tags)
        offsets = sentence.token_offsets()
        first_token = {start: j for j, (start, _) in enumerate(offsets)}
        last_token = {end: j for j, (_, end) in enumerate(offsets)}
        located = len(places) == len(words)
        for span in spans:
            first, last = first_token.get(span.start), last_token.get(span.end)
            a = item_of.get(first) if first is not None else None
            b = item_of.get(last) if last is not None else None
            if a is None or b is None or not located:
                result.spans.append(span)
            else:  # the tagged words that wrote it
                result.add(span, places[a][0], places[b][1])
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

    def grammar(self, sentence: Sentence, types: Sequence[str], spent: Sequence[str] = ()) -> str:
        """Every word of the sentence, in order, each with one tag the parser reads: `O`,
        `B-type` or `I-type` (an `I-` after `O` is read as a begin, as the parser does)."""
        if not sentence.tokens:
            return 'start: ""\n'
        tags = alternatives(
            [literal("O")] + [literal(f"{p}-{t}") for t in types for p in ("B", "I")]
        )
        words = [f"{literal(tok + '(')} TAG {literal(')')}" for tok in sentence.tokens]
        return f"start: {f' {literal(chr(32))} '.join(words)}\nTAG: {tags}\n"

    def complete(self, prefix: str, sentence: Sentence, types: Sequence[str]) -> str:
        """Finish the word or tag being written (`O`, or the first tag it can still become),
        then every remaining word with `(O)`."""
        tokens = sentence.tokens
        *done, last = prefix.split(" ")
        j = len(done)
        if j >= len(tokens):
            return prefix
        tok = tokens[j]
        if len(last) <= len(tok):
            rest = tok[len(last) :] + "(O)"
        else:
            written = last[len(tok) + 1 :]
            if written.endswith(")"):
                rest = ""
            else:
                tags = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
                tag = next(t for t in tags if t.startswith(written))
                rest = tag[len(written) :] + ")"
        return prefix + rest + "".join(f" {t}(O)" for t in tokens[j + 1 :])
