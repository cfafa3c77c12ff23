"""Instruction templates: the words the model reads before it writes its entities.

Kept in one place so that training, evaluation and serving ask exactly the same question,
and render it the same way (`render_chat`).
They are short on purpose: every model here is fine-tuned, after which a long instruction is
mostly cost (each prompt token is paid at every training step and every generation). The
system turn replaces the chat template's default one (SmolLM2's names the assistant in ~20
tokens); a writing's one-line syntax reminder keeps formats apart in a multi-format mix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SYSTEM_PROMPT = "Biomedical NER."
MULTI_TEMPLATE = "Types: {types}. {instruction}\nText: {text}"
CONV_FIRST_TEMPLATE = "Text: {text}\n{instruction}\n{question}"
CONV_QUESTION = "What describes {type} in the text?"
PLAIN_ROLE_HEADER = "### {role}:\n"


def type_list(types: Sequence[str]) -> str:
    return ", ".join(types)


def multi_prompt(text: str, types: Sequence[str], instruction: str) -> str:
    return MULTI_TEMPLATE.format(types=type_list(types), instruction=instruction, text=text)


def conv_prompts(text: str, types: Sequence[str], instruction: str) -> list[str]:
    """One question per entity type; the first carries the text and the answer syntax."""
    questions = [CONV_QUESTION.format(type=t) for t in types]
    first = CONV_FIRST_TEMPLATE.format(text=text, instruction=instruction, question=questions[0])
    return [first, *questions[1:]]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(
    tokenizer: Any, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool
) -> str:
    """The conversation as the model reads it: the tokenizer's chat template when it has one,
    else a plain `### User:` / `### Assistant:` layout that ends assistant turns with eos."""
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return str(text)
    eos = tokenizer.eos_token or ""
    parts = []
    for message in messages:
        end = eos if message["role"] == "assistant" else ""
        header = PLAIN_ROLE_HEADER.format(role=message["role"].capitalize())
        parts.append(f"{header}{message['content']}{end}\n")
    if add_generation_prompt:
        parts.append(PLAIN_ROLE_HEADER.format(role="Assistant"))
    return "".join(parts)
