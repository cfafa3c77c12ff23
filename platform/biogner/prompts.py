"""Instruction templates: the words the model reads before it writes its entities.

Kept in one place so that training, evaluation and serving ask exactly the same question.
They are short on purpose: every model here is fine-tuned, after which a long instruction is
mostly cost (each prompt token is paid at every training step and every generation). The
system turn replaces the chat template's default one (SmolLM2's names the assistant in ~20
tokens); a writing's one-line syntax reminder keeps formats apart in a multi-format mix.
"""

from __future__ import annotations

from collections.abc import Sequence

SYSTEM_PROMPT = "Biomedical NER."
MULTI_TEMPLATE = "Types: {types}. {instruction}\nText: {text}"
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
