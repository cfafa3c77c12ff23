"""Deterministic per-rank batches, grouped by length so that padding stays small.

Every worker gets the same number of batches (uneven counts hang collectives), and the
order depends only on (seed, epoch): a resumed run sees exactly the batches it would have.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from biogner.chat_tokens import IGNORE_INDEX

Tokens = npt.NDArray[np.int32]


@dataclass(frozen=True)
class Example:
    """One training chat, its tokens as int32 arrays: 4 bytes a token where a Python list of
    ints costs ~36, which a worker holding its share of a seven-corpus set would feel."""

    id: str
    input_ids: Tokens
    labels: Tokens

    @classmethod
    def of(cls, rid: str, input_ids: Sequence[int] | Any, labels: Sequence[int] | Any) -> Example:
        return cls(rid, np.asarray(input_ids, dtype=np.int32), np.asarray(labels, dtype=np.int32))


Batches = Callable[[], Iterable[Mapping[str, Any]]]


def rank_examples(batches: Batches, rank: int, world: int) -> list[Example]:
    """This rank's rows: sorted by id, strided, cut so every rank has the same count.

    `batches()` streams the whole set as column batches (`id`, `input_ids`, `labels`); it is
    read twice, ids first, then only this rank's rows are kept, so a worker never holds the
    other ranks' rows, and the choice and order are a function of the ids alone: a resumed
    run (or one with the rows in another order) trains exactly the same examples."""
    ids = sorted(str(rid) for batch in batches() for rid in batch["id"])
    per_rank = len(ids) // world
    mine = set(ids[rank::world][:per_rank])
    kept = [
        Example.of(str(rid), input_ids, labels)
        for batch in batches()
        for rid, input_ids, labels in zip(
            batch["id"], batch["input_ids"], batch["labels"], strict=True
        )
        if str(rid) in mine
    ]
    return sorted(kept, key=lambda e: e.id)


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
        ids[i, :n] = torch.from_numpy(e.input_ids.astype(np.int64))
        labels[i, :n] = torch.from_numpy(e.labels.astype(np.int64))
        mask[i, :n] = 1
        real += n
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}, real, width * len(batch)
