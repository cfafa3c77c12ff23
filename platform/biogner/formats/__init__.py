"""Output formats: turn style (`multi`, `conv`) x entity writing (term, triple, json,
inline, bio). Adding a writing = one module + one `register_writing` call (or one entry in
the built-ins below); both turn styles follow, and the writing brings its own answer budget
and (optionally) its grammar for constrained decoding.
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


def register_writing(writing: Writing) -> list[str]:
    """Add a writing and its format in every turn style; returns the new format names.

    Why a function: a writing defined outside this package (a plugin, a test) becomes usable
    by conversion, training, generation and evaluation with no other change."""
    if writing.name in WRITINGS:
        raise ValueError(f"a writing named {writing.name!r} is already registered")
    WRITINGS[writing.name] = writing
    names = [f"{turn}_{writing.name}" for turn in TURN_STYLES]
    for turn, name in zip(TURN_STYLES, names, strict=True):
        FORMATS[name] = Format(turn, writing)
    return names


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
    "register_writing",
    "resolve_formats",
]
