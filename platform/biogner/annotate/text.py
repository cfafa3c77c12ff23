"""Raw text -> corpus-like sentences -> spans back in the raw text's own offsets.

Why: the models were trained on IOB2 corpora whose text is tokens joined by one space
(`Parkinson ' s disease`, `5 - FU`, `( APC )`). A served abstract or clinical note must be
tokenized the same way before the model sees it, and the spans the model finds in the joined
text must be mapped back to exact offsets in the text the client sent.

Pipeline: `tokenize_text` (runs of letters/digits, every other visible character alone;
combining marks stay with the character before them, control and format characters such as
U+200B are read like spaces) ->
`split_sentences` (., ? or ! before whitespace and an uppercase letter or digit, unless after a
common abbreviation; a blank line always ends a sentence) -> `iter_windows` (at most N tokens
and M characters per window) -> `Window.to_original` for every span.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from biogner.types import Sentence

# A token is a run of letters/digits (any script), or any other non-space character alone:
# `[^\W_]` is a word character that is not the underscore, so `_` falls in the second branch.
TOKEN_RE = re.compile(r"[^\W_]+|[^\w\s]|_")
_WORD_CHAR = re.compile(r"[^\W_]")
SENTENCE_END = frozenset(".?!")
# Words after which a period does not end a sentence (compared lower-cased, without the
# final period). A single letter covers initials (`J. Smith`) and the tail of `e.g.`/`i.e.`.
ABBREVIATIONS = frozenset(
    {
        "e.g",
        "i.e",
        "et al",
        "al",
        "fig",
        "figs",
        "vs",
        "dr",
        "cf",
        "approx",
        "ca",
        "ref",
        "refs",
        "eq",
        "resp",
        "prof",
        "mr",
        "mrs",
        "ms",
        "st",
        "no",
        "vol",
        "pp",
    }
)
_WORD_BEFORE = re.compile(r"(?:^|[^\w.])((?:\w+\.)*\w+(?: al)?)$")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")

Offsets = tuple[int, int]


def _is_mark(char: str) -> bool:
    return unicodedata.category(char)[0] == "M"


def _is_invisible(char: str) -> bool:
    """Control (Cc) and format (Cf: zero-width space/joiners, BOM, soft hyphen) characters:
    nothing the corpora's tokens hold or a model could read."""
    return unicodedata.category(char) in ("Cc", "Cf")


def splits_character(text: str, pos: int) -> bool:
    """Whether offset `pos` falls between a character and a combining mark of it (`e` and
    U+0301 in a decomposed `é`): no token or span edge may lie there."""
    if not 0 < pos < len(text) or not _is_mark(text[pos]):
        return False
    before = text[pos - 1]
    return not (before.isspace() or _is_invisible(before))


def widen_to_characters(text: str, start: int, end: int) -> Offsets:
    """[start, end) widened so that neither edge separates a character from its marks."""
    while splits_character(text, start):
        start -= 1
    while splits_character(text, end):
        end += 1
    return start, end


def tokenize_text(text: str) -> list[Offsets]:
    """(start, end) of every token of `text`, in order. Every character is in one token,
    except whitespace and invisible characters (control, format), which separate tokens;
    combining marks belong to the token of the character before them (a mark after a
    separator is a token of its own), and a word run continues after them: `cafe`, U+0301,
    `s` is one token, as the precomposed `cafés` is."""
    tokens: list[Offsets] = []
    for match in TOKEN_RE.finditer(text):
        start, end = match.span()
        if end - start == 1 and _is_invisible(text[start]):
            continue
        if tokens and tokens[-1][1] == start:
            prev = tokens[-1][0]
            if _is_mark(text[start]) or (
                _is_mark(text[start - 1])
                and _WORD_CHAR.match(text, prev)
                and _WORD_CHAR.match(text, start)
            ):
                tokens[-1] = (prev, end)
                continue
        tokens.append((start, end))
    return tokens


def _is_abbreviation(text: str, period: int) -> bool:
    """Whether the period at `text[period]` closes an abbreviation rather than a sentence."""
    match = _WORD_BEFORE.search(text, max(0, period - 24), period)
    if match is None:
        return False
    word = match.group(1).lower()
    return len(word) == 1 or word in ABBREVIATIONS or word.rsplit(" ", 1)[-1] in ABBREVIATIONS


def split_sentences(text: str, tokens: Sequence[Offsets]) -> list[list[Offsets]]:
    """Group tokens into sentences (abstracts, notes); never drops or reorders a token."""
    sentences: list[list[Offsets]] = []
    current: list[Offsets] = []
    for i, (start, end) in enumerate(tokens):
        current.append((start, end))
        if i + 1 == len(tokens):
            break
        nxt_start = tokens[i + 1][0]
        gap = text[end:nxt_start]
        if _BLANK_LINE.search(gap):
            boundary = True
        else:
            first = text[nxt_start]
            boundary = (
                text[start:end] in SENTENCE_END
                and gap != ""
                and (first.isupper() or first.isdigit())
                and not (text[start:end] == "." and _is_abbreviation(text, start))
            )
        if boundary:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


@dataclass(frozen=True)
class Window:
    """One model input: a corpus-like sentence and where each of its tokens is in the raw text.

    `truncated` is set when a token longer than the window's character limit was cut: the
    cut-off characters were not read by the model.
    """

    sentence: Sentence
    offsets: tuple[Offsets, ...]
    truncated: bool = False

    def to_original(self, start: int, end: int) -> Offsets | None:
        """Map [start, end) in `sentence.text` to the raw text; None if it holds no token char.

        A span edge on a joining space is moved inward to the nearest token character, so
        the result starts and ends on characters the model actually saw; an edge between a
        character and its combining marks is moved outward, so the span keeps them together.
        """
        start, end = widen_to_characters(self.sentence.text, start, end)
        joined = self.sentence.token_offsets()
        first = next((k for k, (_, e) in enumerate(joined) if start < e), None)
        last = next((k for k in range(len(joined) - 1, -1, -1) if end > joined[k][0]), None)
        if first is None or last is None or first > last:
            return None
        j_start, _ = joined[first]
        o_start = self.offsets[first][0] + max(start - j_start, 0)
        j_last, j_last_end = joined[last]
        o_end = self.offsets[last][0] + (min(end, j_last_end) - j_last)
        return (o_start, o_end) if o_start < o_end else None


def iter_windows(
    text: str, max_tokens: int, max_chars: int, id_prefix: str = "w"
) -> Iterator[Window]:
    """Sentences of `text` cut into windows of at most `max_tokens` tokens and `max_chars`
    characters of joined text (a single longer token is cut and the window flagged), one at
    a time, so that a caller enforcing a cap on windows can stop without cutting up the rest
    of a huge text. A text with nothing to read (blank, or only invisible characters) has no
    window: it gets no entities without reaching the model."""
    if max_tokens < 1 or max_chars < 1:
        raise ValueError(f"max_tokens and max_chars must be >= 1, got {max_tokens}, {max_chars}")
    count = 0
    for sentence in split_sentences(text, tokenize_text(text)):
        for group, cut in _sentence_groups(text, sentence, max_tokens, max_chars):
            tokens = [text[s:e] for s, e in group]
            yield Window(Sentence.from_tokens(f"{id_prefix}{count}", tokens), tuple(group), cut)
            count += 1


def _sentence_groups(
    text: str, sentence: Sequence[Offsets], max_tokens: int, max_chars: int
) -> Iterator[tuple[list[Offsets], bool]]:
    """One sentence's tokens in groups within the limits, each with whether a token was cut."""
    group: list[Offsets] = []
    width = 0
    cut = False
    for start, end in sentence:
        if end - start > max_chars:
            end, cut_here = start + max_chars, True
            while end > start + 1 and splits_character(text, end):
                end -= 1  # not between a character and its marks (unless one is too long)
        else:
            cut_here = False
        extra = (end - start) + (1 if group else 0)
        if group and (len(group) >= max_tokens or width + extra > max_chars):
            yield group, cut
            group, width, cut = [], 0, False
            extra = end - start
        group.append((start, end))
        width += extra
        cut = cut or cut_here
    if group:
        yield group, cut


__all__ = [
    "ABBREVIATIONS",
    "TOKEN_RE",
    "Window",
    "iter_windows",
    "split_sentences",
    "splits_character",
    "tokenize_text",
    "widen_to_characters",
]
