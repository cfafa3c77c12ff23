"""Mention memory: the mentions this model marked in the sentences it answered, so that a
restating draft can mark them too.

Copy speculation drafts the rest of the sentence without markup, so every mention costs
passes where the draft is refused: one where the model opens it, one per word after its
first (the draft closes it after each word). Models mark the same mentions again and again
(`breast cancer`, `APC`): the memory remembers each (text, type) the model marked, and how
often a remembered text went unmarked, and guesses the spans of a new sentence from it
(longest remembered text first, marked in more answers than not). The draft then carries
their markup (`speculation.CopyDrafter`); a wrong guess is refused like any draft.

Lossless: a guess only shapes drafts, never an answer (step.settle keeps a drafted token
only where greedy decoding chose it). It learns from the answers themselves, so it needs no
training data and follows whatever the served model does; answers do not depend on what it
holds, only the number of passes does.
"""

from __future__ import annotations

from collections.abc import Sequence

from biogner.types import Sentence, Span

# Longest mention remembered, in sentence tokens (NCBI-disease's longest are ~10).
LONGEST = 12
# Texts remembered at most: a server answering for weeks must not grow without bound.
CAPACITY = 200_000


class MentionMemory:
    """(mention text, type) -> how often the model marked it, and how often it passed a
    remembered text by; shared by every batch of one `Generator`."""

    def __init__(self, capacity: int = CAPACITY, longest: int = LONGEST) -> None:
        self.capacity = capacity
        self.longest = longest
        self.marked: dict[tuple[str, str], int] = {}
        self.passed: dict[tuple[str, str], int] = {}
        self.labels: dict[str, frozenset[str]] = {}  # text -> the types it was marked as

    def __len__(self) -> int:
        return len(self.marked)

    def _found(self, sentence: Sentence, types: Sequence[str]) -> list[tuple[Span, bool]]:
        """Every token-aligned occurrence of a remembered text of one of `types`, with
        whether it is a guess (marked more often than passed by)."""
        if not self.labels:
            return []
        offsets = sentence.token_offsets()
        text = sentence.text
        wanted = set(types)
        found = []
        for i, (start, _) in enumerate(offsets):
            for j in range(i, min(i + self.longest, len(offsets))):
                end = offsets[j][1]
                for label in sorted(self.labels.get(text[start:end], frozenset()) & wanted):
                    key = (text[start:end], label)
                    guess = self.marked.get(key, 0) > self.passed.get(key, 0)
                    found.append((Span(start, end, label), guess))
        return found

    def guesses(self, sentence: Sentence, types: Sequence[str]) -> list[Span]:
        """The spans of `sentence` the model likely marks, in order, none overlapping:
        longest first where remembered texts overlap."""
        candidates = [span for span, guess in self._found(sentence, types) if guess]
        candidates.sort(key=lambda s: (s.start - s.end, s.start))  # longest first
        chosen: list[Span] = []
        for span in candidates:
            if all(span.end <= c.start or c.end <= span.start for c in chosen):
                chosen.append(span)
        return sorted(chosen, key=lambda s: (s.start, s.end))

    def learn(self, sentence: Sentence, spans: Sequence[Span], types: Sequence[str]) -> None:
        """Remember what the model marked in `sentence` when asked for `types`, and every
        remembered text of those types it left unmarked there."""
        for span, _ in self._found(sentence, types):
            # a text marked, or inside a longer mention of its type, was not passed by
            # (`colorectal cancer` in `hereditary nonpolyposis colorectal cancer`)
            inside = any(
                s.label == span.label and s.start <= span.start and span.end <= s.end for s in spans
            )
            if not inside:
                key = (sentence.text[span.start : span.end], span.label)
                self.passed[key] = self.passed.get(key, 0) + 1
        for span in spans:
            key = (sentence.text[span.start : span.end], span.label)
            if key not in self.marked and len(self.marked) >= self.capacity:
                continue
            if not key[0].strip() or span.label not in types:
                continue
            self.marked[key] = self.marked.get(key, 0) + 1
            # a new set, not an update: another thread's `_found` may be reading the old one
            self.labels[key[0]] = self.labels.get(key[0], frozenset()) | {span.label}
