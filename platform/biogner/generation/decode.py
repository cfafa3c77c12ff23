"""biogner's decode loop: batched greedy decoding, constrained or free, that computes only
what changes an answer.

Every forward pass feeds each row of the batch what it has ready: at the start of a turn its
prompt (after the shared prefix, `prefix`), then its last chosen token, the tokens its
grammar forces after it (`forced`) and a draft of what follows (`speculation`). The LM head
runs only where a token is chosen or checked (one pass: `step`). From the logits, each row
chooses as step-by-step constrained greedy decoding would: the model's own top token when
the grammar allows it (checked in microseconds, `RowConstraint.allows`), else the top
allowed one (a whole mask, counted as an overrule). Drafted tokens are kept while they
equal that choice.
A row whose answer is done leaves the batch (`rows_leave`); between the turns of a `conv`
format its cache is put aside and gathered again with the others.

What a row computes does not depend on its batch: padding, drafts the model did not confirm
and an answer's cut tail stay in the cache but are masked, and position ids count only the
real tokens (`kv`). The tokens equal those of transformers' `generate` with the grammar's
mask at every step (`reference`), up to floating-point near-ties that another kernel shape
can break the other way (tests/test_generation_property.py, bench/generation.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from biogner.chat_tokens import prompt_ids
from biogner.generation.answer import Turn, read_turn
from biogner.generation.constraints import RowConstraint
from biogner.generation.kv import BatchKV, RowKV
from biogner.generation.loaded import LoadedLM
from biogner.generation.row import Row
from biogner.generation.speculation import Drafter
from biogner.generation.step import advance, extend_feed


def read_row(lm: LoadedLM, row: Row) -> Turn:
    """A finished row's answer as read (`answer.read_turn`)."""
    return read_turn(row.tokens, row.budget, lm.end_ids, row.constraint, lm.tokenizer, row.probs)


def prefix_cache(
    lm: LoadedLM, prompts: Sequence[list[int]], prefixes: Sequence[list[int] | None]
) -> tuple[BatchKV, list[int]]:
    """The batch's cache at the start: each row's encoded prefix (rows asked the same
    question share one; several questions are left-padded to the longest), and how many of
    its prompt tokens each row has cached. A row whose prompt does not start with its prefix
    (a tokenizer merging across the boundary) is encoded whole."""
    used = [p if p and q[: len(p)] == p else None for q, p in zip(prompts, prefixes, strict=True)]
    lengths = [len(p) if p else 0 for p in used]
    if not any(used):
        return BatchKV.empty(len(prompts), lm.device), lengths
    first = used[0]
    if first and all(p == first for p in used):
        return BatchKV.repeated(lm.prefixes.keys_values(first), len(prompts)), lengths
    encoded = {tuple(p): lm.prefixes.keys_values(p) for p in used if p}
    layers = next(iter(encoded.values()))
    none = [(k[:, :, :0], v[:, :, :0]) for k, v in layers]
    rows = []
    for p in used:
        kv = encoded[tuple(p)] if p else none
        mask = torch.ones(kv[0][0].shape[2], dtype=torch.bool, device=lm.device)
        rows.append(RowKV([k for k, _ in kv], [v for _, v in kv], mask))
    return BatchKV.merge(rows), lengths


@torch.inference_mode()
def conversation(
    lm: LoadedLM,
    chats: list[list[dict[str, str]]],
    questions: list[list[str]],
    budgets: list[int],
    constraint_for: Callable[[int, int], RowConstraint | None] | None = None,
    drafter_for: Callable[[int, int], Drafter | None] | None = None,
    prefixes: Sequence[list[int] | None] | None = None,
    checked: bool = False,
) -> list[list[Turn]]:
    """Every turn of a batch of conversations (see the module docstring). `prefixes`: per
    row, the prompt tokens it shares with the other sentences asked the same question,
    encoded once (`PrefixCache`); `checked`: the writing counts steered items, so forced
    tokens are checked against the model's choice."""
    n, turns = len(chats), len(questions[0])
    end_ids = frozenset(lm.end_ids)
    for chat, qs in zip(chats, questions, strict=True):
        chat.append({"role": "user", "content": qs[0]})
    prompts = [prompt_ids(lm.tokenizer, c) for c in chats]
    kv, lengths = prefix_cache(lm, prompts, prefixes or [None] * n)
    feeds = [p[length:] for p, length in zip(prompts, lengths, strict=True)]
    results: list[list[Turn]] = [[] for _ in chats]
    for turn in range(turns):
        rows = [
            Row(
                feeds[i],
                lengths[i],
                budgets[i],
                end_ids,
                constraint_for(i, turn) if constraint_for else None,
                drafter_for(i, turn) if drafter_for else None,
            )
            for i in range(n)
        ]
        for row in rows:  # a draft of the answer's first tokens, read with the prompt
            extend_feed(row, lm, checked, n)
        more = turn + 1 < turns
        aside = decode_turn(lm, kv, rows, checked, more)
        for i, row in enumerate(rows):
            result = read_row(lm, row)
            results[i].append(result)
            chats[i].append({"role": "assistant", "content": result.text})
        if not more:
            break
        for i, row in enumerate(rows):
            answer = results[i][-1].tokens
            cached = min(len(row.cols), len(answer))
            for col in row.cols[cached:]:  # the end token, a tail cut back
                aside[i].mask[col] = False
            next_ids = lm.next_turn_ids(chats[i][:-1], questions[i][turn + 1])
            chats[i].append({"role": "user", "content": questions[i][turn + 1]})
            feeds[i] = answer[cached:] + next_ids
            lengths[i] = row.start + cached
        kv = BatchKV.merge([aside.pop(i) for i in range(n)])
    return results


def decode_turn(
    lm: LoadedLM, kv: BatchKV, rows: list[Row], checked: bool, more: bool
) -> dict[int, RowKV]:
    """One turn of every row of the batch (`kv` is their cache), pass after pass until each
    answer is done; a finished row leaves the batch (`rows_leave`). `more`: another turn
    follows, so each row's cache is put aside as it leaves (row index -> its cache); the
    batch's cache is freed at the end, before the next turn's is built."""
    slots = list(range(len(rows)))  # kv row -> conversation
    aside: dict[int, RowKV] = {}
    while slots:
        advance(lm, kv, [rows[i] for i in slots], checked)
        done = [b for b, i in enumerate(slots) if rows[i].finished]
        if len(done) == len(slots):
            if more:
                aside.update({slots[b]: kv.take(b) for b in range(len(slots))})
            kv.select([])  # freed before the next turn's cache is built
            break
        if done and lm.settings.rows_leave:
            if more:
                aside.update({slots[b]: kv.take(b) for b in done})
            keep = [b for b in range(len(slots)) if b not in done]
            kv.select(keep)
            slots = [slots[b] for b in keep]
        for i in slots:  # finished rows staying in the batch feed nothing
            if rows[i].finished:
                rows[i].feed, rows[i].drafts, rows[i].checks = [], [], []
    return aside
