"""Sentences and character spans: the one currency every stage trades in."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Span:
    """An entity mention: character offsets into the sentence text (end exclusive)."""

    start: int
    end: int
    label: str

    def text_in(self, text: str) -> str:
        return text[self.start : self.end]


@dataclass(frozen=True)
class Sentence:
    """A tokenized sentence; `text` is the tokens joined by one space."""

    id: str
    text: str
    tokens: tuple[str, ...]
    spans: tuple[Span, ...] = field(default=())

    @classmethod
    def from_tokens(cls, id: str, tokens: list[str] | tuple[str, ...], spans=()) -> Sentence:
        return cls(id=id, text=" ".join(tokens), tokens=tuple(tokens), spans=tuple(sorted(spans)))

    def token_offsets(self) -> list[tuple[int, int]]:
        """Character (start, end) of every token in `text`."""
        offsets = []
        pos = 0
        for tok in self.tokens:
            offsets.append((pos, pos + len(tok)))
            pos += len(tok) + 1
        return offsets

    def mentions(self) -> list[tuple[str, str]]:
        """(surface text, label) of every gold span, in span order."""
        return [(s.text_in(self.text), s.label) for s in self.spans]
