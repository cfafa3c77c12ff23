"""Chat tokenization with an assistant-only loss mask.

The model must learn to write answers, not to repeat prompts: labels are -100 everywhere
except the tokens of every assistant turn's content and the end-of-turn token right after it
(so the model learns to stop). Turn boundaries come from rendering growing prefixes of the
conversation with the chat template (`render_chat`), which works for any template that
renders a conversation as the concatenation of its turns: ChatML (tiny-llama, SmolLM2), the
plain fallback, and most others, with or without `{% generation %}` markers.

Token ids are those of tokenizing the whole rendered text whenever the tokenizer splits at
the turn boundaries (it does for these templates), so the ids of a prompt (`prompt_ids`) are
exactly the first ids of the training example that continues it: training sees what
generation will see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from biogner.prompts import render_chat

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")


class ChatTokens(TypedDict):
    input_ids: list[int]
    labels: list[int]
    attention_mask: list[int]
    truncated: bool


def _check_messages(messages: Sequence[Mapping[str, str]]) -> None:
    if not messages:
        raise ValueError("empty conversation: nothing to tokenize")
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"message {i}: role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"message {i} ({role}): content must be a string, got {content!r}")
    if messages[0]["role"] == "assistant":
        raise ValueError("message 0: a conversation cannot start with an assistant turn")


def _answer_length(rendered_turn: str, content: str) -> int:
    """Characters of an assistant turn to supervise: its content and the end-of-turn marker
    that follows it, without the whitespace the template writes after the marker."""
    if rendered_turn.startswith(content):
        tail = rendered_turn[len(content) :]
        return len(content) + len(tail.rstrip())
    # The template rewrote the content (e.g. trimmed it): supervise the whole turn.
    return len(rendered_turn.rstrip())


def supervised_spans(
    tokenizer: Any, messages: Sequence[Mapping[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans [start, end) of its assistant
    answers (content + end-of-turn marker)."""
    _check_messages(messages)
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_chat(tokenizer, messages[:k], add_generation_prompt=True)
        turn = render_chat(tokenizer, messages[: k + 1], add_generation_prompt=False)
        if not (turn.startswith(prompt) and full.startswith(turn)):
            raise ValueError(
                f"message {k}: the chat template does not render this conversation as a "
                "concatenation of its turns (a prefix renders differently on its own), so "
                "assistant tokens cannot be located"
            )
        start = len(prompt)
        spans.append((start, start + _answer_length(turn[start:], message["content"])))
    return full, spans


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` as it appears inside a rendered chat (no special tokens added)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize_chat(
    tokenizer: Any, messages: Sequence[Mapping[str, str]], max_length: int | None = None
) -> ChatTokens:
    """input_ids / labels / attention_mask of a whole conversation; labels keep only the
    assistant answers (every assistant turn). Longer than `max_length`: cut from the right,
    with `truncated` set so the caller can count or drop it."""
    full, spans = supervised_spans(tokenizer, messages)
    cuts = sorted({0, len(full), *(pos for span in spans for pos in span)})
    supervised = {start for start, end in spans if end > start}
    ids: list[int] = []
    labels: list[int] = []
    for start, end in zip(cuts, cuts[1:], strict=False):
        upto = encode(tokenizer, full[:end])
        # when a token straddles the boundary, tokenize this piece on its own
        aligned = upto[: len(ids)] == ids
        new = upto[len(ids) :] if aligned else encode(tokenizer, full[start:end])
        ids.extend(new)
        labels.extend(new if start in supervised else [IGNORE_INDEX] * len(new))
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, labels = ids[:max_length], labels[:max_length]
    return ChatTokens(
        input_ids=ids, labels=labels, attention_mask=[1] * len(ids), truncated=truncated
    )


def prompt_ids(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids to generate the next assistant answer from (generation prompt appended)."""
    _check_messages(messages)
    if messages[-1]["role"] == "assistant":
        raise ValueError(
            f"message {len(messages) - 1}: the last message is an assistant answer; "
            "pass the conversation without it to get a generation prompt"
        )
    return encode(tokenizer, render_chat(tokenizer, messages, add_generation_prompt=True))
