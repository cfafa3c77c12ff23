"""Continuous batching: one-turn answers whose rows join the running batch as others leave.

A batch cut from a list runs until its longest answer ends. Rows leave as they finish
(`rows_leave`), and the batch's last passes compute a few rows while reading every weight,
as a full pass does. Here the loop takes waiting sentences in as rows leave (`intake`): in
evaluation the next sentences of the list, in serving the requests that arrived meanwhile,
so passes stay full until the sentences run out. A joining row's cache is its prompt prefix
(`prefix`), right-aligned to the batch's columns; its prompt's tail goes in with the next
passes as any feed does (`step.fit_width` splits it). Columns no live row uses are dropped
at each join (`BatchKV.join`), so the cache stays as wide as its oldest row needs.

Rows join in groups (a quarter of the batch's room at least, or whenever it is empty): a
join copies the batch's cache, one row at a time would copy it every pass. One turn only:
a `conv` row of several turns puts its cache aside between turns (`decode.conversation`).
What a row computes does not depend on its batch, so its answer is the one it gets in a
batch cut from a list (tests/test_stream.py).

Off by default (`generation.rows_join`): a joining row takes the batch's whole width of
columns, so attention and the per-pass cache copies work over the oldest row's span, and on
a 2-core CPU whole-split evaluation ran ~15 % slower with it than with sorted batches cut
from the list (bench/results/archive/generation.md, "Packed Linear weights, and rows that
join a running batch"). A cache per row (paged attention) would remove that cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from biogner.chat_tokens import prompt_ids
from biogner.generation.answer import Turn
from biogner.generation.constraints import RowConstraint
from biogner.generation.decode import prefix_cache, read_row
from biogner.generation.kv import BatchKV
from biogner.generation.loaded import LoadedLM
from biogner.generation.row import Row
from biogner.generation.speculation import Drafter
from biogner.generation.step import advance, extend_feed


@dataclass
class Ask:
    """One sentence's one-turn question, ready to join the batch."""

    key: int  # the caller's name for it: handed back with its answer
    chat: list[dict[str, str]]  # the opening and the question
    prefix: list[int] | None  # the prompt tokens it shares with others (`PrefixCache`)
    budget: int
    constraint: RowConstraint | None
    drafter: Drafter | None


# Rows join when at least this share of the batch is free (or when it is empty).
JOIN_SHARE = 4


@torch.inference_mode()
def batch_continuously(
    lm: LoadedLM,
    intake: Callable[[int], list[Ask]],
    done: Callable[[int, Turn], None],
    size: int,
    checked: bool = False,
) -> None:
    """Decode the questions `intake(room)` hands over (at most `room` at a time; none: no
    more for now) in batches of at most `size` rows, and call `done(key, answer)` as each
    answer ends; returns when the batch is empty and `intake` has nothing more."""
    end_ids = frozenset(lm.end_ids)
    rows: list[Row] = []
    keys: list[int] = []
    kv = BatchKV.empty(0, lm.device)
    while True:
        room = size - len(rows)
        if not rows or room >= max(1, size // JOIN_SHARE):
            asks = intake(room)
            if asks:
                kv = join(lm, kv, rows, asks, end_ids, checked)
                keys += [a.key for a in asks]
        if not rows:
            return
        advance(lm, kv, rows, checked)
        if not any(row.finished for row in rows):
            continue
        for row, key in zip(rows, keys, strict=True):
            if row.finished:
                done(key, read_row(lm, row))
        keep = [b for b, row in enumerate(rows) if not row.finished]
        kv.select(keep)
        rows = [rows[b] for b in keep]
        keys = [keys[b] for b in keep]


def join(
    lm: LoadedLM,
    kv: BatchKV,
    rows: list[Row],
    asks: list[Ask],
    end_ids: frozenset[int],
    checked: bool,
) -> BatchKV:
    """The batch's cache with `asks` joined as rows (appended to `rows`), each with its
    prompt's prefix cached and the rest of its prompt (and a draft) to feed."""
    prompts = [prompt_ids(lm.tokenizer, a.chat) for a in asks]
    new, lengths = prefix_cache(lm, prompts, [a.prefix for a in asks])
    joined = [
        Row(prompt[length:], length, a.budget, end_ids, a.constraint, a.drafter)
        for prompt, length, a in zip(prompts, lengths, asks, strict=True)
    ]
    rows += joined
    for row in joined:  # a draft of the answer's first tokens, read with the prompt
        extend_feed(row, lm, checked, len(rows))
    return kv.join(new)
