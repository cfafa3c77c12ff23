"""`inline`: the sentence rewritten with `[mention | type]` around each entity.

Exact (the rewritten text carries the positions) and able to nest (`[[APC | GENE] gene | GENE]`).
Literal `\\`, `[`, `]` and `|` of the text are backslash-escaped so that corpus text can never
be read as markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from biogner.formats.alignment import position_map
from biogner.formats.base import ParseResult, Writing, canonical_type
from biogner.formats.grammar import alternatives, literal
from biogner.types import Sentence, Span

SPECIAL = "\\[]|"
MAX_DEPTH = 3  # brackets open at once in a constrained answer (corpora nest at most 2 deep)


def escape(text: str) -> str:
    return "".join("\\" + ch if ch in SPECIAL else ch for ch in text)


class InlineWriting(Writing):
    name = "inline"
    budget_per_text_token = 2.0
    budget_floor = 24
    exact = True
    restates_sentence = True
    nesting = True
    instruction = "The text with each entity as [mention | type]; \\ escapes [ ] | \\."

    def render(self, sentence: Sentence, spans: Sequence[Span], types: Sequence[str]) -> str:
        text = sentence.text
        starts: dict[int, list[Span]] = {}
        for span in sorted(spans, key=lambda s: (s.start, -s.end, s.label)):
            starts.setdefault(span.start, []).append(span)
        out: list[str] = []
        stack: list[Span] = []
        for pos in range(len(text) + 1):
            while stack and stack[-1].end == pos:
                out.append(f" | {stack.pop().label}]")
            for span in starts.get(pos, []):
                if stack and span.end > stack[-1].end:
                    continue  # crosses an open entity: brackets cannot say that
                out.append("[")
                stack.append(span)
            if pos < len(text):
                out.append(escape(text[pos]))
        return "".join(out)

    def grammar(self, sentence: Sentence, types: Sequence[str], spent: Sequence[str] = ()) -> str:
        return _inline_grammar(sentence, types)

    def complete(self, prefix: str, sentence: Sentence, types: Sequence[str]) -> str:
        """Finish the word or the ` | type]` being written, close every open bracket, then
        the rest of the sentence without markup."""
        words = [escape(t) for t in sentence.tokens]
        close = f" | {types[0]}]"
        j = pos = depth = i = 0
        pending = ""
        while i < len(prefix):
            if j < len(words) and pos < len(words[j]):
                if pos == 0 and prefix[i] == "[":
                    depth += 1
                else:
                    pos += 1
                i += 1
                continue
            rest = prefix[i:]
            if rest.startswith(" |"):
                end = prefix.find("]", i)
                if end < 0:  # a closing ` | type]` cut short
                    target = next(c for c in (f" | {t}]" for t in types) if c.startswith(rest))
                    pending = target[len(rest) :]
                    depth -= 1
                    break
                depth -= 1
                i = end + 1
            else:  # the space between two words
                j, pos, i = j + 1, 0, i + 1
        out = prefix + pending
        if j < len(words):
            out += words[j][pos:]
        out += close * depth
        return out + "".join(f" {w}" for w in words[j + 1 :])

    def parse(self, answer: str, sentence: Sentence, types: Sequence[str]) -> ParseResult:
        result = ParseResult()
        plain: list[str] = []
        open_at: list[int] = []
        opened: list[int] = []  # where in the answer each open bracket is
        found: list[tuple[int, int, str, int, int]] = []
        lead = len(answer) - len(answer.lstrip())
        i = 0
        answer = answer.strip()
        while i < len(answer):
            ch = answer[i]
            if ch == "\\" and i + 1 < len(answer):
                plain.append(answer[i + 1])
                i += 2
                continue
            if ch == "[":
                open_at.append(len(plain))
                opened.append(i)
            elif ch == "|" and open_at:
                close = _closing_bracket(answer, i + 1)
                if close < 0:
                    result.problems.append("an entity's type is not closed by ']'")
                    break
                start = open_at.pop()
                if len(plain) > start and plain[-1] == " ":
                    plain.pop()  # the space of the ' | ' separator
                type_name = answer[i + 1 : close]
                found.append((start, len(plain), type_name, lead + opened.pop(), lead + close + 1))
                i = close + 1
                continue
            elif ch == "]":
                if open_at:
                    open_at.pop()
                    opened.pop()
                result.problems.append("']' without '| type'")
            elif ch == "|":
                result.problems.append("'|' outside brackets")
                plain.append(ch)
            else:
                plain.append(ch)
            i += 1
        if open_at:
            result.problems.append(f"{len(open_at)} unclosed '['")
        rewritten = "".join(plain)
        mapping: dict[int, int] | None = None
        if rewritten.strip() != sentence.text:
            result.problems.append("the rewritten text differs from the input")
            mapping = position_map(rewritten, sentence.text)
        offset = len(rewritten) - len(rewritten.lstrip())
        for start, end, type_name, written_from, written_to in found:
            label = canonical_type(type_name, types)
            if label is None:
                result.problems.append(f"unknown type {type_name.strip()!r}")
                continue
            result.predicted_mentions += 1
            # Strip spaces the model put inside the brackets.
            while start < end and rewritten[start] == " ":
                start += 1
            while end > start and rewritten[end - 1] == " ":
                end -= 1
            if start >= end:
                result.problems.append("empty entity")
                continue
            if mapping is None:
                span = Span(start - offset, end - offset, label)
            else:
                s, e = mapping.get(start), mapping.get(end - 1)
                if s is None or e is None:
                    result.hallucinated += 1
                    result.problems.append(f"entity {rewritten[start:end]!r} not in the text")
                    continue
                span = Span(s, e + 1, label)
            result.add(span, written_from, written_to)
        return result.finish()


def _inline_grammar(sentence: Sentence, types: Sequence[str]) -> str:
    """The sentence's words in order, escaped, separated by its single spaces, with
    `[` opening before a word and ` | type]` closing after one, at most MAX_DEPTH deep.
    `at_j_k`: before word j with k brackets open; `after_j_k`: after it."""
    n = len(sentence.tokens)
    if n == 0:
        return 'start: ""\n'
    close = f"{literal(' | ')} TYPE {literal(']')}"
    rules = ["start: at_0_0", f"TYPE: {alternatives([literal(t) for t in types])}"]
    for j, tok in enumerate(sentence.tokens):
        for k in range(MAX_DEPTH + 1):
            at = [f"{literal(escape(tok))} after_{j}_{k}"]
            if k < MAX_DEPTH:
                at.append(f"{literal('[')} at_{j}_{k + 1}")
            after = []
            if k > 0:
                after.append(f"{close} after_{j}_{k - 1}")
            if j + 1 < n:
                after.append(f"{literal(' ')} at_{j + 1}_{k}")
            elif k == 0:
                after.append('""')
            rules.append(f"at_{j}_{k}: {' | '.join(at)}")
            rules.append(f"after_{j}_{k}: {' | '.join(after)}")
    return "\n".join(rules) + "\n"


def _closing_bracket(answer: str, i: int) -> int:
    """Index of the next unescaped ']' (type names have no brackets), or -1."""
    while i < len(answer):
        if answer[i] == "\\":
            i += 2
            continue
        if answer[i] == "]":
            return i
        if answer[i] == "[":
            return -1
        i += 1
    return -1
