"""Deterministic per-rank batches, grouped by length so that padding stays small.

Every worker gets the same number of batches (uneven counts hang collectives), and the
order depends only on (seed, epoch): a resumed run sees exactly the batches it would have.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from biogner.chat_tokens import IGNORE_INDEX


@dataclass(frozen=True)
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]


def rank_examples(rows: Sequence[dict[str, Any]], rank: int, world: int) -> list[Example]:
    """This rank's rows: sorted by id, strided, cut so every rank has the same count."""
    ordered = sorted(rows, key=lambda r: str(r["id"]))
    per_rank = len(ordered) // world
    mine = ordered[rank::world][:per_rank]
    return [Example(str(r["id"]), list(r["input_ids"]), list(r["labels"])) for r in mine]


def epoch_batches(
    examples: Sequence[Example],
    batch_size: int,
    seed: int,
    epoch: int,
    group_by_length: bool,
    group_batches: int,
) -> list[list[Example]]:
    """Shuffled batches of one epoch (last partial batch dropped): shuffle, then sort runs of
    `group_batches` batches by length and shuffle the batch order again."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(examples)
    rng.shuffle(order)
    n = len(order) // batch_size * batch_size
    order = order[:n]
    if group_by_length:
        chunk = batch_size * max(group_batches, 1)
        grouped: list[Example] = []
        for i in range(0, n, chunk):
            grouped.extend(sorted(order[i : i + chunk], key=lambda e: len(e.input_ids)))
        order = grouped
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng.shuffle(batches)
    return batches


def collate(batch: Sequence[Example], pad_id: int) -> tuple[dict[str, torch.Tensor], int, int]:
    """Right-padded tensors; returns (tensors, real tokens, padded tokens)."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    real = 0
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
        real += n
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}, real, width * len(batch)
