"""One forward pass of a batch of rows, for the decode loops (`decode`, `continuous`).

A pass feeds each row what it has ready (`Row.feed`: a prompt's tail, its last chosen token,
the tokens its grammar forces, `forced`) and a draft of what follows (`speculation`), at a
width chosen for the batch (`fit_width`); the LM head runs only where a row chooses or
checks a token (`step_logits`); each row then keeps the drafts greedy decoding confirms and
chooses its next token (`settle`), and its next feed is extended (`extend_feed`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence

import numpy as np
import torch

from biogner.generation.forced import extend_forced
from biogner.generation.kv import BatchKV
from biogner.generation.loaded import LoadedLM
from biogner.generation.row import Row


@functools.cache
def cache_keyword(model_class: type[torch.nn.Module]) -> str:
    """`cache` in transformers >= 5.24 (`past_key_values` is deprecated there), the older
    name before (the GPU image's transformers 5.17); read once per model class."""
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


# What one forward pass costs beyond its tokens, in tokens per row: every pass reads every
# weight once whatever its width. An estimate, not a tuned value (bench/generation.py
# measures the passes and tokens it leads to).
PASS_OVERHEAD_TOKENS = 2.0


def fit_width(rows: Sequence[Row]) -> None:
    """Shape the next pass: every row pays its widest row's width, so choose the width that
    advances the batch most per token computed, feed longer rows in parts (`split`), cut
    longer drafts, and fill shorter rows' padding with more draft (free speculation)."""
    lengths = [len(r.feed) + len(r.drafts) for r in rows if r.feed]
    if not lengths:
        return
    n = len(rows)

    def rate(w: int) -> float:
        return sum(min(length, w) for length in lengths) / (n * (w + PASS_OVERHEAD_TOKENS))

    width = max(sorted(set(lengths)), key=rate)
    for row in rows:
        if not row.feed:
            continue
        if len(row.feed) > width:
            row.split = width
        elif len(row.feed) + len(row.drafts) > width:
            row.drafts = row.drafts[: width - len(row.feed)]
        elif row.drafter is not None and not row.finished:
            want = min(width - len(row.feed), row.draft_room)
            if want > len(row.drafts):
                row.drafts = row.drafter.draft(row.tokens, want)


def forward(lm: LoadedLM, kv: BatchKV, rows: Sequence[Row]) -> tuple[torch.Tensor, int]:
    """One forward pass of every row's feed and drafts; (hidden states, first new column)."""
    seqs = [r.feed[: r.split] if r.split else r.feed + r.drafts for r in rows]
    width = max(len(s) for s in seqs)
    n, device = len(rows), lm.device
    ids = torch.full((n, width), lm.pad_id, dtype=torch.long)
    valid = torch.zeros((n, width), dtype=torch.bool)
    positions = torch.arange(width).repeat(n, 1)
    for b, (row, seq) in enumerate(zip(rows, seqs, strict=True)):
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        valid[b, : len(seq)] = True
        positions[b] += row.length
    base = kv.width
    mask = torch.cat([kv.mask, valid.to(device)], 1)
    body = lm.body
    out = body(
        input_ids=ids.to(device),
        attention_mask=mask.long(),
        position_ids=positions.to(device),
        use_cache=True,
        **{cache_keyword(type(body)): kv.cache},  # type: ignore[arg-type]
    )
    kv.mask = mask
    return out.last_hidden_state, base


def settle(
    row: Row,
    b: int,
    kv: BatchKV,
    base: int,
    logits: dict[int, tuple[torch.Tensor, int, np.ndarray | None]],
) -> None:
    """Read one row's logits: check its forced tokens, keep the drafts greedy decoding
    confirms, choose its next token (with its probability where the logits carry the row's
    softmax); mask the drafts it did not confirm."""
    fed = row.split or len(row.feed)
    if row.fed_generated:
        row.cols.extend(base + j for j in range(fed))
        first = len(row.tokens) - len(row.feed)  # answer position of feed[0]
        for j in row.checks:
            if j - 1 < fed and row.constraint is not None:
                wanted = logits[j - 1][1]
                if wanted != row.feed[j]:
                    row.constraint.overrule(wanted, row.feed[j], at=first + j)
    if row.split:  # the rest of the feed (and the drafts) go in the next pass
        row.length += fed
        row.feed = row.feed[fed:]
        row.checks = [j - fed for j in row.checks if j > fed]
        row.split = 0
        return
    j, kept = fed - 1, 0
    while True:
        scores, wanted, probs = logits[j]
        choice, prob = row.choose(scores, wanted, probs)
        row.commit(choice, prob)
        confirmed = kept < len(row.drafts) and choice == row.drafts[kept]
        if confirmed:
            row.cols.append(base + fed + kept)
            kept += 1
            j += 1
        if not confirmed or row.finished:
            break
    if kept < len(row.drafts):
        kv.mask[b, base + fed + kept : base + fed + len(row.drafts)] = False
    if row.drafts:  # a draft refused early is a mention being marked: draft less for a while
        row.reach = kept + 1 if kept < len(row.drafts) else 2 * len(row.drafts)
    row.length += fed + kept
    row.checks, row.drafts = [], []
    row.feed = [] if confirmed else [choice]
    row.fed_generated = True


# Rows below which a pass is bound by reading the weights, not by its tokens: fewer rows
# draft longer (a lone request's restatement in two or three passes, not five).
FEW_ROWS = 8


def draft_limit(length: int, rows: int) -> int:
    """How far a row may draft in a batch of `rows`: its drafter's `length`, up to 4x that
    when the batch has fewer than `FEW_ROWS` rows."""
    return min(length * max(1, FEW_ROWS // max(rows, 1)), 4 * length)


def extend_feed(row: Row, lm: LoadedLM, checked: bool, rows: int) -> None:
    """After a row's choice: append the tokens its grammar forces, then a draft."""
    if lm.settings.forced_tokens and row.fed_generated and row.feed:
        extend_forced(row, lm.end_ids, checked)
    if row.drafter is not None and not row.finished:
        limit = draft_limit(row.drafter.length, rows)
        reach = min(row.reach or limit, limit)
        if rows < FEW_ROWS:  # a pass reads every weight anyway: a refused draft costs little
            reach = max(reach, row.drafter.length)
        row.drafts = row.drafter.draft(row.tokens, min(reach, row.draft_room))


Logits = dict[int, tuple[torch.Tensor, int, np.ndarray | None]]


def step_logits(lm: LoadedLM, hidden: torch.Tensor, rows: Sequence[Row]) -> list[Logits]:
    """The LM head only where a row chooses or checks a token: per row, index -> (float
    scores, the model's top token, their softmax as numpy when entities are scored: one
    batched softmax per pass, not one per token)."""
    where = [(b, j) for b, row in enumerate(rows) for j in row.needs()]
    per_row: list[Logits] = [{} for _ in rows]
    if not where:
        return per_row
    bs = torch.tensor([b for b, _ in where], device=hidden.device)
    js = torch.tensor([j for _, j in where], device=hidden.device)
    head = lm.head
    scores = head(hidden[bs, js]).float()
    tops = scores.argmax(-1).tolist()
    probs = torch.softmax(scores, -1).cpu().numpy() if lm.settings.scores else None
    for k, (b, j) in enumerate(where):
        per_row[b][j] = (scores[k], int(tops[k]), None if probs is None else probs[k])
    return per_row


def advance(lm: LoadedLM, kv: BatchKV, rows: Sequence[Row], checked: bool) -> None:
    """One forward pass of the batch's `rows` (`kv` is their cache): shape it, compute it,
    settle each row's choices and prepare its next feed."""
    fit_width(rows)
    hidden, base = forward(lm, kv, rows)
    logits = step_logits(lm, hidden, rows)
    for b, row in enumerate(rows):
        if row.feed:
            settle(row, b, kv, base, logits[b])
            if not row.finished:
                extend_feed(row, lm, checked, len(rows))
