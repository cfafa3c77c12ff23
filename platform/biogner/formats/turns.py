"""Turn styles: `multi` (one answer for all types) and `conv` (one turn per type).

A format is a turn style x a writing; both turn styles work with every writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from biogner import prompts
from biogner.formats.base import ParseResult, Writing
from biogner.types import Sentence, Span

Message = dict[str, str]
TURN_STYLES = ("multi", "conv")


@dataclass(frozen=True)
class Format:
    turn: str
    writing: Writing

    @property
    def name(self) -> str:
        return f"{self.turn}_{self.writing.name}"

    @property
    def exact(self) -> bool:
        return self.writing.exact

    def turn_types(self, types: Sequence[str]) -> list[list[str]]:
        """Entity types each assistant turn answers for."""
        return [list(types)] if self.turn == "multi" else [[t] for t in types]

    def questions(self, text: str, types: Sequence[str]) -> list[str]:
        """The user turns, in order; one answer is generated after each."""
        if self.turn == "multi":
            return [prompts.multi_prompt(text, types, self.writing.instruction)]
        return prompts.conv_prompts(text, types, self.writing.instruction)

    def opening(self) -> list[Message]:
        """The turns before the first question (the system turn), in training and generation."""
        return [{"role": "system", "content": prompts.SYSTEM_PROMPT}]

    def answers(self, sentence: Sentence, types: Sequence[str]) -> list[str]:
        """Target answers, one per turn."""
        return [
            self.writing.render(sentence, [s for s in sentence.spans if s.label in turn], turn)
            for turn in self.turn_types(types)
        ]

    def render(self, sentence: Sentence, types: Sequence[str]) -> list[Message]:
        """The whole training chat: user/assistant turns."""
        messages: list[Message] = self.opening()
        for question, answer in zip(
            self.questions(sentence.text, types), self.answers(sentence, types), strict=True
        ):
            messages.append({"role": "user", "content": question})
            messages.append({"role": "assistant", "content": answer})
        return messages

    def parse(
        self, answers: Sequence[str] | str, sentence: Sentence, types: Sequence[str]
    ) -> ParseResult:
        """Spans from generated answers (one per turn); never raises."""
        if isinstance(answers, str):
            answers = [answers]
        turns = self.turn_types(types)
        result = ParseResult()
        if len(answers) != len(turns):
            result.problems.append(f"expected {len(turns)} answers, got {len(answers)}")
        for index, (answer, turn) in enumerate(zip(answers, turns, strict=False)):
            try:
                result.extend(self.writing.parse(answer, sentence, turn), answer=index)
            except Exception as exc:  # a parser bug must not lose a whole evaluation
                result.problems.append(f"parser error: {type(exc).__name__}: {exc}")
        return result.finish()

    def roundtrip(self, sentence: Sentence, types: Sequence[str]) -> list[Span]:
        return self.parse(self.answers(sentence, types), sentence, types).spans
