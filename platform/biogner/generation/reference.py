"""The reference decode loop: transformers' `generate`, one token per forward pass, with the
grammar's mask applied at every step (`ConstrainedLogits`).

This is how biogner decoded before its own loop (`decode`), and what that loop must equal
token for token: the property tests and `bench/generation.py` run both
(`generation.decoder: hf` selects this one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from biogner.chat_tokens import prompt_ids
from biogner.generation.answer import Turn, read_turn
from biogner.generation.constraints import ConstrainedLogits, RowConstraint
from biogner.generation.loaded import LoadedLM


def left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
    return ids, mask


@torch.inference_mode()
def conversation(
    lm: LoadedLM,
    chats: list[list[dict[str, str]]],
    questions: list[list[str]],
    budgets: list[int],
    constraint_for: Callable[[int, int], RowConstraint | None] | None = None,
) -> list[list[Turn]]:
    """Every turn of a batch of conversations, left-padded, through `generate`.

    A later turn continues from the tokens the model generated (not their re-encoded
    text), after the chat template's turn separator and the next question; with
    `reuse_kv_cache` the keys and values of everything before it are reused instead of
    recomputed. Padding, the end token and anything generated after it are masked."""
    tokenizer, pad = lm.tokenizer, lm.pad_id
    turns = len(questions[0])
    for chat, qs in zip(chats, questions, strict=True):
        chat.append({"role": "user", "content": qs[0]})
    ids, mask = left_pad([prompt_ids(tokenizer, c) for c in chats], pad)
    past = None
    results: list[list[Turn]] = [[] for _ in chats]
    for turn in range(turns):
        if turn:
            block, block_mask = left_pad(
                [
                    lm.next_turn_ids(c[:-1], qs[turn])
                    for c, qs in zip(chats, questions, strict=True)
                ],
                pad,
            )
            for c, qs in zip(chats, questions, strict=True):
                c.append({"role": "user", "content": qs[turn]})
            ids, mask = torch.cat([ids, block], 1), torch.cat([mask, block_mask], 1)
        # (`past_key_values` is what transformers 5.17, on the GPU image, still calls it)
        cache: dict[str, Any] = {} if past is None else {"past_key_values": past}
        rows = [constraint_for(r, turn) if constraint_for else None for r in range(len(chats))]
        processor = ConstrainedLogits(rows, ids.shape[1])
        probs = TokenProbs(ids.shape[1])
        processors: list[LogitsProcessor] = [processor] if any(r is not None for r in rows) else []
        processors += [probs] if lm.settings.scores else []  # after the mask: what was chosen from
        if processors:
            cache["logits_processor"] = LogitsProcessorList(processors)
        out = lm.model.generate(
            input_ids=ids.to(lm.device),
            attention_mask=mask.to(lm.device),
            **cache,
            max_new_tokens=max(budgets),
            do_sample=False,
            num_beams=1,
            eos_token_id=lm.end_ids,
            pad_token_id=pad,
            return_dict_in_generate=True,
        )
        sequences = out.sequences.cpu()
        # The processor sees each token when choosing the next one, so the batch's last token
        # is read here: an answer cut by the batch's longest budget keeps it, as others do.
        processor.consume_last(sequences[:, ids.shape[1] :])
        new = sequences[:, ids.shape[1] :]
        probs.read_last(new)
        new_mask = torch.zeros_like(new)
        for row, chat in enumerate(chats):
            result = read_turn(
                new[row].tolist(),
                budgets[row],
                lm.end_ids,
                rows[row],
                tokenizer,
                probs.probs[row] if lm.settings.scores else (),
            )
            new_mask[row, : len(result.tokens)] = 1
            results[row].append(result)
            chat.append({"role": "assistant", "content": result.text})
        ids, mask = sequences, torch.cat([mask, new_mask], 1)
        past = out.past_key_values if lm.settings.reuse_kv_cache else None
    return results


class TokenProbs(LogitsProcessor):
    """Each chosen token's probability in the distribution `generate` chose it from (the
    scores after the grammar's mask): a step's log-softmax is kept until the next step shows
    the token chosen from it."""

    def __init__(self, prompt_width: int) -> None:
        self.prompt_width = prompt_width
        self.probs: list[list[float]] = []
        self._last: torch.Tensor | None = None

    def _read(self, chosen: torch.Tensor) -> None:
        assert self._last is not None
        index = chosen.to(self._last.device).long().unsqueeze(1)
        for row, p in enumerate(self._last.gather(1, index).squeeze(1).exp().tolist()):
            self.probs[row].append(float(p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.probs:
            self.probs = [[] for _ in range(scores.shape[0])]
        if input_ids.shape[1] > self.prompt_width and self._last is not None:
            self._read(input_ids[:, -1])
        self._last = torch.log_softmax(scores.float(), -1)
        return scores

    def read_last(self, generated: torch.Tensor) -> None:
        """After `generate`: the last token, chosen at the last step (no step read it)."""
        if self._last is not None and self.probs and len(self.probs[0]) < generated.shape[1]:
            self._read(generated[:, -1])
