"""Copy speculation: an inline or bio answer restates its sentence, so most of its next
tokens are known before the model computes them; a term, triple or json answer quotes its
mentions from the sentence, so once a mention is begun, its rest is likely there too.

The draft is the writing's own completion of the answer so far (`Writing.complete`: the
rest of the sentence with no more markup, or every remaining word tagged `(O)`), tokenized,
followed by the end token when the completion is whole. The model reads the draft in the
same forward pass as the row's next token (prompt-lookup decoding); each drafted token is
kept only while it equals what constrained greedy decoding chooses at its place from those
logits, and the first that differs is replaced by that choice (`step.settle`). Lossless by
construction: a draft only saves forward passes, it never decides a token.

`MentionDrafter` (the writings that quote mentions) drafts the sentence's text after the
longest tail of the answer found in the sentence: after `breast ca` it drafts `ncer in the
...`, and the model's line end refuses the draft where the mention ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from biogner.formats.base import Writing
from biogner.types import Sentence, Span


class Drafter(Protocol):
    length: int  # tokens a draft holds (the configured length; more in small batches)

    def draft(self, tokens: Sequence[int], limit: int) -> list[int]:
        """Up to `limit` tokens that likely follow the answer's `tokens` ([] for none)."""
        ...


def written(tokenizer: Any, tokens: Sequence[int]) -> str | None:
    """The answer so far as text; None when its last token cuts a character (nothing to
    draft from until the character is whole)."""
    text: str = tokenizer.decode(list(tokens))
    return None if text.endswith("\ufffd") else text


class CopyDrafter:
    """Drafts the next tokens of one answer that restates its sentence."""

    def __init__(
        self,
        tokenizer: Any,
        writing: Writing,
        sentence: Sentence,
        types: Sequence[str],
        end_id: int,
        length: int,
        guesses: Sequence[Span] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.length = length
        self.writing = writing
        self.sentence = sentence
        self.types = list(types)
        self.end_id = end_id
        self.guesses = list(guesses)  # spans the model likely marks (`memory.MentionMemory`)
        # the last answer drafted with guessed markup; at first, the one marking every guess
        self._guessed: str | None = None

    def draft(self, tokens: Sequence[int], limit: int) -> list[int]:
        """Up to `limit` tokens that likely follow `tokens` (none when the answer so far is
        not one the writing can complete: a character cut between tokens, free decoding
        gone off the sentence)."""
        if limit <= 0:
            return []
        prefix = written(self.tokenizer, tokens)
        if prefix is None:
            return []
        try:
            whole = self.writing.complete(prefix, self.sentence, self.types)
        except (StopIteration, ValueError, IndexError):
            return []
        if whole is None or not whole.startswith(prefix):
            return []
        if self.guesses:
            whole = self._with_guesses(prefix, whole)
        rest = whole[len(prefix) :]
        ids = self.tokenizer(rest, add_special_tokens=False)["input_ids"] if rest else []
        return [*ids, self.end_id][:limit]

    def _with_guesses(self, prefix: str, plain: str) -> str:
        """The answer `prefix` goes on to if the model marks the guessed spans still ahead of
        it (a guess it is writing is kept to its guessed end), else `plain`: the spans
        written so far (read from the plain completion) with the guesses from the k-th on,
        for the first k whose answer `prefix` begins."""
        if self._guessed is None:  # first: the answer that marks every guess
            self._guessed = self.writing.render(self.sentence, self.guesses, self.types)
        last = self._guessed
        if last.startswith(prefix) and len(last) > len(prefix):
            return last  # the model follows the guesses: no parse, no render
        so_far = self.writing.parse(plain, self.sentence, self.types).spans
        for k in range(len(self.guesses)):
            spans = with_guesses(so_far, self.guesses[k:])
            whole = self.writing.render(self.sentence, spans, self.types)
            if whole.startswith(prefix) and whole != plain:
                self._guessed = whole
                return whole
        return plain


def with_guesses(written: Sequence[Span], guesses: Sequence[Span]) -> list[Span]:
    """`written` spans with the `guesses` that overlap none of them, except that a guess
    starting where a written span of its type starts, and ending after it, replaces it:
    that span is a mention still being written, closed after its current word by the plain
    completion."""
    spans = list(written)
    for guess in guesses:
        same = [
            k
            for k, s in enumerate(spans)
            if s.start == guess.start and s.label == guess.label and s.end < guess.end
        ]
        if same:
            spans[same[0]] = guess
        elif all(guess.end <= s.start or s.end <= guess.start for s in spans):
            spans.append(guess)
    return spans


# Characters of the answer's tail that must be found in the sentence before its text there is
# drafted: shorter tails (a space, a letter of a type name) are found everywhere.
MIN_MATCH = 3
# How far back the tail is looked for: a mention is rarely longer.
LOOKBACK = 64
# Characters of the sentence tokenized per drafted token asked for (then cut to the limit).
CHARS_PER_TOKEN = 8


class MentionDrafter:
    """Drafts the rest of a mention an answer is quoting from its sentence."""

    def __init__(self, tokenizer: Any, text: str, length: int) -> None:
        self.tokenizer = tokenizer
        self.text = text
        self.length = length

    def draft(self, tokens: Sequence[int], limit: int) -> list[int]:
        if limit <= 0 or not tokens:
            return []
        text = written(self.tokenizer, tokens)
        after = None if text is None else follows(text, self.text)
        if after is None or after >= len(self.text):
            return []
        rest = self.text[after : after + CHARS_PER_TOKEN * limit]
        ids: list[int] = self.tokenizer(rest, add_special_tokens=False)["input_ids"]
        return ids[:limit]


def follows(answer: str, text: str) -> int | None:
    """Where in `text` the longest tail of `answer` (MIN_MATCH to LOOKBACK characters, not
    only spaces) first occurs, as the index just after it; None when no such tail does.
    A tail that occurs has every shorter tail occurring too, so the length is bisected."""
    low, high = MIN_MATCH - 1, min(LOOKBACK, len(answer))  # low: found (or the floor)
    best: int | None = None
    while low < high:
        k = (low + high + 1) // 2
        tail = answer[-k:]
        at = text.find(tail) if tail.strip() else -1
        if at >= 0:
            low, best = k, at + k
        else:
            high = k - 1
    return best
