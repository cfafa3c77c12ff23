"""Output formats: turn style (`multi`, `conv`) x entity writing (term, triple, json,
inline, bio). Adding a writing = one module + one entry in WRITINGS; both turn styles follow.
"""

from __future__ import annotations

from biogner.formats.base import ParseResult, Writing
from biogner.formats.bio import BioWriting
from biogner.formats.inline import InlineWriting
from biogner.formats.json_writing import JsonWriting
from biogner.formats.term import TermWriting
from biogner.formats.triple import TripleWriting
from biogner.formats.turns import TURN_STYLES, Format, Message

WRITINGS: dict[str, Writing] = {
    w.name: w
    for w in (TermWriting(), TripleWriting(), JsonWriting(), InlineWriting(), BioWriting())
}
FORMATS: dict[str, Format] = {
    f"{turn}_{name}": Format(turn, writing)
    for turn in TURN_STYLES
    for name, writing in WRITINGS.items()
}


def get_format(name: str) -> Format:
    """Format by name; the error lists the known names."""
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown format {name!r}; known: {', '.join(FORMATS)}") from None


def resolve_formats(spec: str | list[str]) -> list[Format]:
    """`all`, one name, a comma-separated list or a list of names."""
    names = spec.split(",") if isinstance(spec, str) else spec
    if names == ["all"]:
        return list(FORMATS.values())
    return [get_format(n.strip()) for n in names]


__all__ = [
    "FORMATS",
    "WRITINGS",
    "Format",
    "Message",
    "ParseResult",
    "Writing",
    "get_format",
    "resolve_formats",
]
