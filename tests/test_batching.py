"""A worker's share of the training rows: chosen by id alone (resume-exact), read streaming."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from biogner.train.batching import collate, rank_examples


def rows(n: int) -> list[dict[str, Any]]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        ids = [rng.randrange(5, 50_000) for _ in range(rng.randrange(3, 12))]
        out.append({"id": f"c-train-{i}", "input_ids": ids, "labels": [-100, *ids[1:]]})
    return out


def as_batches(items: list[dict[str, Any]], size: int) -> list[dict[str, list[Any]]]:
    return [
        {k: [r[k] for r in items[i : i + size]] for k in ("id", "input_ids", "labels")}
        for i in range(0, len(items), size)
    ]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_each_rank_keeps_its_strided_share_whatever_the_row_order(world: int) -> None:
    data = rows(50)
    by_id = {r["id"]: r for r in data}
    ordered = sorted(by_id)
    shares = []
    for rank in range(world):
        shuffled = data[:]
        random.Random(rank).shuffle(shuffled)  # another order, other batch boundaries
        mine = rank_examples(lambda s=shuffled, r=rank: as_batches(s, 7 + r), rank, world)
        assert [e.id for e in mine] == ordered[rank::world][: len(data) // world]
        for e in mine:
            assert e.input_ids.dtype == np.int32
            assert e.input_ids.tolist() == by_id[e.id]["input_ids"]
            assert e.labels.tolist() == by_id[e.id]["labels"]
        shares.append({e.id for e in mine})
    assert len({len(s) for s in shares}) == 1  # equal counts: collectives never hang
    assert not set.intersection(*shares) or world == 1


def test_collate_pads_int32_examples_into_long_tensors() -> None:
    mine = rank_examples(lambda: as_batches(rows(4), 4), 0, 1)
    tensors, real, padded = collate(mine, pad_id=0)
    assert tensors["input_ids"].dtype.is_floating_point is False
    assert str(tensors["input_ids"].dtype) == "torch.int64"
    assert real == sum(len(e.input_ids) for e in mine)
    assert padded == tensors["input_ids"].numel()
    assert tensors["labels"][0, 0].item() == -100
