"""Instruction templates: the words the model reads before it writes its entities.

Kept in one place so that training, evaluation and serving ask exactly the same question.
"""

from __future__ import annotations

from collections.abc import Sequence

MULTI_TEMPLATE = (
    "Extract the biomedical named entities of type {types} from the text.\n"
    "{instruction}\n"
    "Text: {text}"
)
CONV_FIRST_TEMPLATE = "Text: {text}\n{instruction}\n{question}"
CONV_QUESTION = "What describes {type} in the text?"


def type_list(types: Sequence[str]) -> str:
    return ", ".join(types)


def multi_prompt(text: str, types: Sequence[str], instruction: str) -> str:
    return MULTI_TEMPLATE.format(types=type_list(types), instruction=instruction, text=text)


def conv_prompts(text: str, types: Sequence[str], instruction: str) -> list[str]:
    """One question per entity type; the first carries the text and the answer syntax."""
    questions = [CONV_QUESTION.format(type=t) for t in types]
    first = CONV_FIRST_TEMPLATE.format(text=text, instruction=instruction, question=questions[0])
    return [first, *questions[1:]]
