"""Copy speculation: an inline or bio answer restates its sentence, so most of its next
tokens are known before the model computes them.

The draft is the writing's own completion of the answer so far (`Writing.complete`: the
rest of the sentence with no more markup, or every remaining word tagged `(O)`), tokenized,
followed by the end token when the completion is whole. The model reads the draft in the
same forward pass as the row's next token (prompt-lookup decoding); each drafted token is
kept only while it equals what constrained greedy decoding chooses at its place from those
logits, and the first that differs is replaced by that choice (`decode.settle`). Lossless by
construction: a draft only saves forward passes, it never decides a token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from biogner.formats.base import Writing
from biogner.types import Sentence


class CopyDrafter:
    """Drafts the next tokens of one answer that restates its sentence."""

    def __init__(
        self,
        tokenizer: Any,
        writing: Writing,
        sentence: Sentence,
        types: Sequence[str],
        end_id: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.writing = writing
        self.sentence = sentence
        self.types = list(types)
        self.end_id = end_id

    def draft(self, tokens: Sequence[int], limit: int) -> list[int]:
        """Up to `limit` tokens that likely follow `tokens` (none when the answer so far is
        not one the writing can complete: a character cut between tokens, free decoding
        gone off the sentence)."""
        if limit <= 0:
            return []
        prefix = self.tokenizer.decode(list(tokens))
        if prefix.endswith("\ufffd"):
            return []
        try:
            whole = self.writing.complete(prefix, self.sentence, self.types)
        except (StopIteration, ValueError, IndexError):
            return []
        if whole is None or not whole.startswith(prefix):
            return []
        rest = whole[len(prefix) :]
        ids = self.tokenizer(rest, add_special_tokens=False)["input_ids"] if rest else []
        return [*ids, self.end_id][:limit]
