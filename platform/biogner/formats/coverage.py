"""What a format can write of a corpus: a sentence's round trip (render its gold answer, parse
it back), and the gate training and conversion pass before they take a corpus.

Why here, above the corpus readers: a corpus's nested or crossing mentions lose annotations
only in the writings that cannot hold them, so whether they block depends on the formats a
run writes. The readers know nothing of formats; this module knows both. `formats check`
(evaluate.format_check) and `corpora check` judge a sentence by the same `roundtrip`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from biogner.corpora.card import CorpusCard
from biogner.corpora.load import CorpusRead, read_corpus
from biogner.corpora.problems import FORMAT_DEPENDENT, CorpusProblemError, Problem
from biogner.formats import get_format
from biogner.formats.base import ParseResult
from biogner.formats.turns import Format
from biogner.types import Sentence


@dataclass(frozen=True)
class RoundTrip:
    """A sentence's gold answer parsed back: `failure` says why the spans did not come back
    (None when they did); `ambiguous` marks a lossy writing that got the same mentions back
    at other occurrences, the ambiguity it declares."""

    parsed: ParseResult
    failure: str | None = None
    ambiguous: bool = False


def roundtrip(fmt: Format, sent: Sentence, types: Sequence[str]) -> RoundTrip:
    """Render `sent`'s gold answer in `fmt`, parse it back and compare with the gold spans."""
    parsed = fmt.parse(fmt.answers(sent, types), sent, types)
    if parsed.spans == list(sent.spans) and not parsed.problems:
        return RoundTrip(parsed)
    found = Counter((s.text_in(sent.text), s.label) for s in parsed.spans)
    if not fmt.exact and found == Counter(sent.mentions()) and not parsed.problems:
        return RoundTrip(parsed, ambiguous=True)
    reason = "; ".join(parsed.problems) or f"got {parsed.spans}, expected {list(sent.spans)}"
    return RoundTrip(parsed, failure=reason)


def writing_losses(read: CorpusRead, formats: Sequence[str]) -> list[str]:
    """What each format loses of the corpus's nested and crossing mentions: the round trip
    of the sentences that hold them, one line per losing format."""
    crowded = [
        s
        for split in read.splits.values()
        for s in split.sentences
        if any(a.end > b.start for a, b in zip(s.spans, s.spans[1:], strict=False))
    ]
    losses = []
    for name in formats:
        fmt = get_format(name)
        failures = [
            (sent, trip.failure)
            for sent in crowded
            if (trip := roundtrip(fmt, sent, list(read.types))).failure is not None
        ]
        if failures:
            sent, reason = failures[0]
            losses.append(
                f"format {name} cannot write {len(failures)} sentence(s) of nested or "
                f"crossing mentions, e.g. {sent.id}: {reason}"
            )
    return losses


def blocking_for(
    read: CorpusRead, accept: Sequence[str] = (), formats: Sequence[str] = ()
) -> tuple[list[Problem], list[str]]:
    """The problems that block, and the formats' losses: nested or crossing mentions block
    only where a format named cannot write them (and their kind is not accepted)."""
    accepted = {*read.card.accept, *accept}
    blocking = read.blocking(accept)
    crowded = [
        p for p in read.problems.items if p.kind in FORMAT_DEPENDENT and p.kind not in accepted
    ]
    losses = writing_losses(read, formats) if crowded and formats else []
    return (blocking + crowded if losses else blocking), losses


def require_clean(
    card: CorpusCard,
    data_dir: str | os.PathLike | None = None,
    accept: Sequence[str] = (),
    formats: Sequence[str] = (),
) -> CorpusRead:
    """The check training and conversion run first: CorpusProblemError when a problem
    would lose or change annotations (in one of `formats`, for nested or crossing mentions)
    and neither the card nor `accept` accepts its kind."""
    read = read_corpus(card, data_dir)
    blocking, losses = blocking_for(read, accept, formats)
    if blocking:
        raise CorpusProblemError(card.name, blocking, losses=losses)
    return read
