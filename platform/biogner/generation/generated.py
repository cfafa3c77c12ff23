"""What a model wrote for one sentence (`Generation`), and one sentence's generations for
several type groups joined as one (`join_generations`, for `routing`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from biogner.formats.base import ParseResult
from biogner.types import Sentence


@dataclass
class Generation:
    """What a model wrote for one sentence, and what the format's parser made of it."""

    sentence: Sentence
    answers: list[str]
    parse: ParseResult
    generated_tokens: int
    truncated: bool = False  # an answer hit its token budget
    answer_tokens: list[list[int]] = field(default_factory=list)  # per turn, as generated


def join_generations(parts: list[Generation], types: list[str]) -> Generation:
    """One sentence's generations for several type groups as one, keeping the spans of the
    requested `types` (a group asked whole may answer types nobody requested)."""
    wanted = set(types)
    parse = ParseResult()
    answers = 0
    for part in parts:
        parse.extend(part.parse, answer=answers)
        answers += len(part.answers)
    unrequested = [s for s in parse.spans if s.label not in wanted]
    parse.spans = [s for s in parse.spans if s.label in wanted]
    parse.scores = {s: v for s, v in parse.scores.items() if s.label in wanted}
    parse.predicted_mentions = max(0, parse.predicted_mentions - len(unrequested))
    return Generation(
        parts[0].sentence,
        [a for part in parts for a in part.answers],
        parse.finish(),
        sum(part.generated_tokens for part in parts),
        any(part.truncated for part in parts),
        [t for part in parts for t in part.answer_tokens],
    )
