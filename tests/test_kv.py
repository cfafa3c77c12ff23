"""The batch cache's row operations: a row put aside owns its memory, and gathering rows
again pads them on the left, masks the padding and frees the rows as it goes."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from biogner.generation.kv import BatchKV, RowKV

LAYERS, HEADS, DIM = 3, 2, 4


def batch(rows: int, width: int) -> BatchKV:
    data = [
        (torch.randn(rows, HEADS, width, DIM), torch.randn(rows, HEADS, width, DIM))
        for _ in range(LAYERS)
    ]
    mask = torch.ones((rows, width), dtype=torch.bool)
    mask[0, 1] = False  # a hole (a refused draft)
    return BatchKV(DynamicCache(ddp_cache_data=data), mask)


def test_take_copies_the_row_instead_of_holding_the_whole_batch() -> None:
    kv = batch(rows=8, width=5)
    keys_before = kv.layers()[1][0][3].clone()
    row = kv.take(3)
    for tensor in (*row.keys, *row.values):
        # a slice would report the storage of all 8 rows
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    kv.layers()[1][0].zero_()
    assert torch.equal(row.keys[1][0], keys_before)
    assert row.mask.untyped_storage().nbytes() == row.mask.numel()


def test_merge_left_pads_masks_and_consumes_the_rows() -> None:
    short, long = batch(rows=2, width=3), batch(rows=2, width=6)
    rows = [short.take(0), long.take(1), short.take(1)]
    expected_keys = [[r.keys[layer].clone() for r in rows] for layer in range(LAYERS)]
    expected_masks = [r.mask.clone() for r in rows]
    merged = BatchKV.merge(rows)
    assert merged.width == 6
    assert merged.mask.tolist()[0] == [False, False, False, True, False, True]
    assert merged.mask[1].tolist() == expected_masks[1].tolist()
    for layer, (keys, _values) in enumerate(merged.layers()):
        assert keys.shape == (3, HEADS, 6, DIM)
        assert torch.equal(keys[0, :, 3:], expected_keys[layer][0][0])
        assert torch.equal(keys[1], expected_keys[layer][1][0])
        assert torch.equal(keys[2, :, :3], torch.zeros(HEADS, 3, DIM))  # masked padding
        assert torch.equal(keys[2, :, 3:], expected_keys[layer][2][0])
    assert all(t.numel() == 0 for r in rows for t in (*r.keys, *r.values))


def test_merge_of_rows_with_an_empty_cache() -> None:
    empty = RowKV([], [], torch.zeros(0, dtype=torch.bool))
    merged = BatchKV.merge([empty, empty])
    assert merged.width == 0 and merged.mask.shape == (2, 0)
