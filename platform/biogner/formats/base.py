"""What every entity writing shares: parse results, mention lookup on token boundaries,
type names and line escaping.

A writing turns spans into text and back. Parsers are tolerant: they never raise on model
output; they return the spans they can recover and count what they could not read.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from biogner.types import Sentence, Span

NONE_ANSWER = "None"


@dataclass
class ParseResult:
    """Spans recovered from generated text, plus what went wrong while reading it."""

    spans: list[Span] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    predicted_mentions: int = 0
    hallucinated: int = 0
    # items in which constrained decoding overruled the model's own choice
    # (`biogner.generation.constraints`), and how many of them it dropped before parsing; free: none
    overruled: int = 0
    dropped: int = 0
    # where in the answers each span was written: (answer index, start, end) in the answer
    # text the parser read (a line, an object, a bracket, a run of tagged words); the
    # generator scores a span by the model's probabilities of the tokens written there
    sources: dict[Span, tuple[int, int, int]] = field(default_factory=dict)
    scores: dict[Span, float] = field(default_factory=dict)  # confidence, in [0, 1]

    def add(self, span: Span, start: int, end: int) -> None:
        """A span read from answer[start:end]."""
        self.spans.append(span)
        self.locate(span, start, end)

    def locate(self, span: Span, start: int, end: int) -> None:
        """Where a span was written (the first source of a repeated span stays)."""
        self.sources.setdefault(span, (0, start, end))

    def extend(self, other: ParseResult, answer: int = 0) -> None:
        """Take `other`'s spans and counts; its sources move to answer index `answer` on."""
        self.spans.extend(other.spans)
        self.problems.extend(other.problems)
        self.predicted_mentions += other.predicted_mentions
        self.hallucinated += other.hallucinated
        self.overruled += other.overruled
        self.dropped += other.dropped
        for span, (a, start, end) in other.sources.items():
            self.sources.setdefault(span, (a + answer, start, end))
        for span, score in other.scores.items():
            self.scores[span] = max(score, self.scores.get(span, 0.0))

    def finish(self) -> ParseResult:
        """Deduplicate and sort spans (a model may repeat itself)."""
        self.spans = sorted(set(self.spans))
        return self


class TokenIndex:
    """Token boundaries of a sentence: mentions only match whole tokens (`APC` is not in `APC2`)."""

    def __init__(self, sentence: Sentence) -> None:
        self.sentence = sentence
        self.offsets = sentence.token_offsets()
        self.starts = [s for s, _ in self.offsets]
        self.ends = {e for _, e in self.offsets}

    def occurrences(self, mention: str) -> list[tuple[int, int]]:
        """Every (start, end) where `mention` occurs starting and ending on token boundaries."""
        if not mention:
            return []
        text = self.sentence.text
        n = len(mention)
        return [
            (s, s + n) for s in self.starts if text.startswith(mention, s) and s + n in self.ends
        ]

    def occurrences_ignoring_spaces(self, mention: str) -> list[tuple[int, int]]:
        """Token ranges whose concatenation equals the mention with spaces removed
        (a model often writes `Parkinson's` for the tokenized `Parkinson ' s`)."""
        target = "".join(mention.split())
        if not target:
            return []
        found = []
        toks = self.sentence.tokens
        for i in range(len(toks)):
            acc = ""
            for j in range(i, len(toks)):
                acc += toks[j]
                if len(acc) >= len(target):
                    if acc == target:
                        found.append((self.offsets[i][0], self.offsets[j][1]))
                    break
                if not target.startswith(acc):
                    break
        return found


class MentionPlacer:
    """Maps mention strings to spans: the first not-yet-used occurrence, in order.

    This is the declared ambiguity of string-only writings: when a string occurs several
    times and only some occurrences are entities, the order decides.
    """

    def __init__(self, sentence: Sentence, result: ParseResult) -> None:
        self.index = TokenIndex(sentence)
        self.result = result
        self.used: set[Span] = set()

    def place(
        self,
        mention: str,
        label: str,
        occurrence: int | None = None,
        source: tuple[int, int] | None = None,
    ) -> Span | None:
        """The span `mention` names (None: not in the text, or listed too often); `source`:
        where in the answer it was written."""
        span = self._place(mention, label, occurrence)
        if span is not None and source is not None:
            self.result.locate(span, *source)
        return span

    def _place(self, mention: str, label: str, occurrence: int | None) -> Span | None:
        result = self.result
        result.predicted_mentions += 1
        mention = mention.strip()
        found = self.index.occurrences(mention)
        if not found:
            found = self.index.occurrences_ignoring_spaces(mention)
            if found:
                result.problems.append(f"mention {mention!r} matched ignoring spaces")
        if not found:
            result.hallucinated += 1
            result.problems.append(f"mention {mention!r} not in the text")
            return None
        candidates = [Span(s, e, label) for s, e in found]
        if occurrence is not None:
            if 1 <= occurrence <= len(candidates):
                span = candidates[occurrence - 1]
                self.used.add(span)
                result.spans.append(span)
                return span
            result.problems.append(
                f"occurrence {occurrence} of {mention!r} out of range 1..{len(candidates)}"
            )
        for span in candidates:
            if span not in self.used:
                self.used.add(span)
                result.spans.append(span)
                return span
        result.problems.append(f"mention {mention!r} listed more often than it occurs")
        return None


def canonical_type(name: str, types: Sequence[str]) -> str | None:
    """The entity type the model meant (case- and space-insensitive), or None."""
    name = name.strip()
    if name in types:
        return name
    folded = {t.casefold().replace(" ", "_"): t for t in types}
    return folded.get(name.casefold().replace(" ", "_"))


def escape_line(line: str) -> str:
    """Escape a free-text line so it is never read as the empty answer or as an escape."""
    if line == NONE_ANSWER or line.startswith("\\"):
        return "\\" + line
    return line


def unescape_line(line: str) -> str:
    return line[1:] if line.startswith("\\") else line


def located_lines(answer: str) -> list[tuple[str, int, int]]:
    """Non-empty lines of an answer, stripped, each with where it is in `answer` (its
    ending newline included); [] for the empty answer."""
    lines: list[tuple[str, int, int]] = []
    start = 0
    for raw in answer.splitlines(keepends=True):
        end = start + len(raw)
        if raw.strip():
            lines.append((raw.strip(), start, end))
        start = end
    if len(lines) == 1 and lines[0][0] == NONE_ANSWER:
        return []
    return lines


def overlaps(start: int, end: int, ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether [start, end) shares a character with any of `ranges`."""
    return any(a < end and b > start for a, b in ranges)


def without_lines(answer: str, ranges: Sequence[tuple[int, int]]) -> tuple[str, int]:
    """`answer` less its lines that share a character (their ending newline included) with
    `ranges`, and how many went; `None` when no line is left."""
    kept, dropped, start = [], 0, 0
    for line in answer.split("\n"):
        end = start + len(line) + 1  # with the newline that ends it
        if overlaps(start, end, ranges):
            dropped += line.strip() not in ("", NONE_ANSWER)
        else:
            kept.append(line)
        start = end
    text = "\n".join(kept).strip()
    return (text or NONE_ANSWER), dropped


def ordered(spans: Iterable[Span]) -> list[Span]:
    """Reading order: by start, longer first, then label."""
    return sorted(spans, key=lambda s: (s.start, -s.end, s.label))


class Writing(ABC):
    """How entities are written in one answer (one turn)."""

    name: str
    exact: bool  # carries positions: parse(render(s)) == s.spans, always
    nesting: bool  # can write nested spans
    instruction: str  # one line telling the model the syntax
    # The answer's token budget: tokens per token of the sentence, and a floor (measured on
    # the corpora's gold answers, with headroom), so a model cannot ramble on for ever and a
    # writing that restates the sentence gets room to do it.
    budget_per_text_token: float = 2.0
    budget_floor: int = 32

    @abstractmethod
    def render(self, sentence: Sentence, spans: Sequence[Span], types: Sequence[str]) -> str:
        """The answer text for `spans` (all of a label in `types`)."""

    @abstractmethod
    def parse(self, answer: str, sentence: Sentence, types: Sequence[str]) -> ParseResult:
        """Spans from an answer; never raises."""

    def grammar(
        self, sentence: Sentence, types: Sequence[str], spent: Sequence[str] = ()
    ) -> str | None:
        """The answers `parse` reads without a problem for this sentence, as a Lark grammar
        (`formats.grammar`) that constrained generation turns into token masks; None: this
        writing is generated unconstrained. With `spent` (items written as often as
        the parser reads them, see `spent`), the grammar of what may follow the items
        written so far: more items, none of those."""
        return None

    def answer_budget(self, text_tokens: int, types_in_answer: int) -> int:
        """Most tokens one answer to a sentence of `text_tokens` tokens may take, when it
        covers `types_in_answer` entity types (a multi-turn answer covers them all)."""
        return max(math.ceil(self.budget_per_text_token * text_tokens), self.budget_floor)

    @property
    def constrainable(self) -> bool:
        """Whether this writing brings a grammar (constrained decoding applies to it)."""
        return type(self).grammar is not Writing.grammar

    def complete(self, prefix: str, sentence: Sentence, types: Sequence[str]) -> str | None:
        """A whole answer made from `prefix` (a prefix the grammar allows, cut by the token
        budget): extended as briefly as the grammar allows, or cut back to its last complete
        item and closed; None: cut it back to the longest prefix the grammar accepts. Writings
        that restate the sentence or bracket a list need this: no prefix of theirs is whole."""
        return None

    def without_items(self, answer: str, ranges: Sequence[tuple[int, int]]) -> tuple[str, int]:
        """`answer` less the items (a line, an object) that share a character with `ranges`,
        and how many went; the rest must still parse. Constrained decoding counts, or drops,
        the items in which its grammar overruled the model (`GenerationConfig.overruled`).
        Default: no items (a writing that restates the sentence has none to drop)."""
        return answer, 0

    # What in a token means its writer is ending the current mention (a line's newline, the
    # separator after a triple's mention, a json string's quote): constrained decoding counts
    # an item the grammar would not let end as stretched (`RowConstraint.overrule`).
    mention_ends: tuple[str, ...] = ()

    # The answer restates the sentence (inline, bio): generation drafts the restatement's
    # next tokens from `complete` and verifies them in one forward pass (copy speculation).
    restates_sentence: bool = False

    # A character that can end an item (a line, an object) of an answer; None: items are
    # not counted. Constrained generation asks `spent` whenever one is generated.
    item_end: str | None = None

    def spent(
        self, written: str, sentence: Sentence, types: Sequence[str]
    ) -> tuple[list[str], int]:
        """Items of the answer `written` so far that the parser would not read again (a
        mention listed as often as it occurs), and where what follows them starts in
        `written`: the grammar cannot count, so generation continues from there under
        `grammar(..., spent=...)`."""
        return [], len(written)
