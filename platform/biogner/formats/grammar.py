"""Grammars of answers over one sentence, in llguidance's Lark dialect.

A writing's grammar says what its parser accepts *for this sentence*: a mention is a span of
the sentence on its token boundaries, spelled as the text spells it, and a type is one of the
requested types. Generation turns the grammar into a token mask
(`biogner.generation.constraints`), so a constrained model can write nothing else.

Spans are terminals: `S_j` is the span starting at token j, `S_j: "tok_j" (" " S_{j+1})?`,
so all O(n^2) spans of an n-token sentence take O(n) definitions. The engine expands them
lazily.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from biogner.formats.base import TokenIndex
from biogner.types import Sentence


def literal(text: str) -> str:
    """A Lark string literal (JSON escapes, which llguidance's Lark reads)."""
    return json.dumps(text, ensure_ascii=False)


def alternatives(items: Sequence[str]) -> str:
    return " | ".join(items) if items else '""'


def excluding(expr: str, spent: Sequence[str]) -> str:
    """`expr` except the exact strings `spent` (llguidance's `&` and `~` on terminals)."""
    return f"({expr}) & ~({alternatives([literal(s) for s in spent])})" if spent else expr


def span_terminals(
    sentence: Sentence, prefix: str = "S", spell: Callable[[str], str] = lambda t: t
) -> tuple[list[str], list[str]]:
    """Definitions of `{prefix}_j` (every span starting at token j) and their names; `spell`
    writes the text as the answer does (JSON string escapes, say)."""
    offsets = sentence.token_offsets()
    text = sentence.text
    lines, names = [], []
    for j, (start, end) in enumerate(offsets):
        name = f"{prefix}_{j}"
        tok = literal(spell(text[start:end]))
        if j + 1 < len(offsets):
            gap = literal(spell(text[end : offsets[j + 1][0]]))
            lines.append(f"{name}: {tok} ({gap} {prefix}_{j + 1})?")
        else:
            lines.append(f"{name}: {tok}")
        names.append(name)
    return lines, names


def line_grammar(
    sentence: Sentence,
    line: Callable[[list[str], Sentence], str],
    empty: str,
    spent: Sequence[str] = (),
) -> str:
    """`empty` alone, or one or more lines separated by newlines; `line(span_names,
    sentence)` is the Lark expression of one line over the span terminals. With `spent`,
    what may follow lines already written: more lines, none of `spent`."""
    defs, names = span_terminals(sentence)
    newline = literal("\n")
    if not names:  # nothing to mention
        return f"start: {literal(empty)}\n" if not spent else 'start: ""\n'
    body = excluding(line(names, sentence), spent)
    if spent:
        start = f"start: ({newline} LINE)*"
    else:
        start = f"start: {literal(empty)} | LINE ({newline} LINE)*"
    return "\n".join([start, f"LINE: {body}", *defs])


def repeated_spans(sentence: Sentence) -> dict[str, int]:
    """Span strings that occur more than once on token boundaries, with their counts (only a
    span whose first token occurs again can repeat)."""
    offsets = sentence.token_offsets()
    text = sentence.text
    firsts: dict[str, int] = {}
    for tok in sentence.tokens:
        firsts[tok] = firsts.get(tok, 0) + 1
    index = TokenIndex(sentence)
    counts: dict[str, int] = {}
    for i, (start, _) in enumerate(offsets):
        if firsts[sentence.tokens[i]] < 2:
            continue
        for _, end in offsets[i:]:
            mention = text[start:end]
            if mention in counts:
                continue
            n = len(index.occurrences(mention))
            if n < 2:
                break  # a longer span from this start occurs no more often
            counts[mention] = n
    return counts
