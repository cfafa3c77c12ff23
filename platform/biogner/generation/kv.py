"""A batch's key/value cache with a validity mask per cached position.

Rows of one batch feed different numbers of tokens per forward pass (a prompt's tail, forced
tokens, drafts), so a row's cache has holes: padding, drafts the model did not confirm, an
answer's tail cut back. They stay in place and are masked (`mask[row, col] = 0`); a token's
position id counts only the valid ones before it, so what a row computes is what it would
compute alone. Rows leave (`select`), are put aside between the turns of a conversation
(`take`) and gathered again (`merge`, left-padded with masked columns).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache


def cache_of(layers: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    """A cache holding these keys and values, one (key, value) pair per layer, through
    DynamicCache's public `update`: each layer is copied once, as the constructor's
    `ddp_cache_data` (meant for DDP replicas) does."""
    cache = DynamicCache()
    for layer, (keys, values) in enumerate(layers):
        cache.update(keys, values, layer)
    return cache


@dataclass
class RowKV:
    """One row's cached keys and values (per layer) and its validity mask."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor  # (columns,) bool


class BatchKV:
    """The cache of the rows decoding together, and which of its columns are real tokens."""

    def __init__(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        self.cache = cache
        self.mask = mask  # (rows, columns) bool

    @classmethod
    def empty(cls, rows: int, device: torch.device) -> BatchKV:
        return cls(DynamicCache(), torch.zeros((rows, 0), dtype=torch.bool, device=device))

    @classmethod
    def repeated(cls, prefix: Sequence[tuple[torch.Tensor, torch.Tensor]], rows: int) -> BatchKV:
        """`rows` rows that all start with one encoded prefix (a (1, heads, length, dim) key
        and value per layer), shared until a row appends to it."""
        data = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in prefix]
        length = prefix[0][0].shape[2]
        mask = torch.ones((rows, length), dtype=torch.bool, device=prefix[0][0].device)
        return cls(cache_of(data), mask)

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.keys, layer.values) for layer in self.cache.layers]  # type: ignore[union-attr,misc]

    def select(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (in that order)."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.mask.device)
        if self.width:
            self.cache.batch_select_indices(index)
        self.mask = self.mask[index]

    def take(self, row: int) -> RowKV:
        """One row's cache, copied: a slice would keep the whole batch's tensors alive, and
        rows leave at different passes, each from a cache grown since (64 rows of a
        five-turn answer once held 10 GB)."""
        keys, values = zip(*self.layers(), strict=True) if self.width else ((), ())
        return RowKV(
            [k[row : row + 1].clone() for k in keys],
            [v[row : row + 1].clone() for v in values],
            self.mask[row].clone(),
        )

    @classmethod
    def merge(cls, rows: Sequence[RowKV]) -> BatchKV:
        """One batch of rows cached apart, each left-padded to the longest with masked
        columns. The rows are consumed: each layer is copied into the batch's tensor and
        freed from the rows at once, so a merge holds about one copy of the cache, not
        three (the rows, their padded copies and the joined batch)."""
        width = max(int(r.mask.shape[0]) for r in rows)
        mask = torch.zeros((len(rows), width), dtype=torch.bool, device=rows[0].mask.device)
        for i, r in enumerate(rows):
            mask[i, width - r.mask.shape[0] :] = r.mask
        data = []
        for layer in range(len(rows[0].keys)):
            joined = []
            for tensors in ([r.keys for r in rows], [r.values for r in rows]):
                first = tensors[0][layer]
                heads, dim = first.shape[1], first.shape[3]
                batch = first.new_zeros((len(rows), heads, width, dim))
                for i, row_tensors in enumerate(tensors):
                    t = row_tensors[layer]
                    batch[i, :, width - t.shape[2] :] = t[0]
                    row_tensors[layer] = t.new_empty(0)  # consumed: free it now
                joined.append(batch)
            data.append((joined[0], joined[1]))
        return cls(cache_of(data), mask)

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    def join(self, other: BatchKV) -> BatchKV:
        """This batch's rows, then `other`'s, in one cache (rows joining a running batch).
        Columns none of this batch's rows uses any more (a departed row's tokens, padding
        all share) are dropped first, so a batch that rows keep joining stays as wide as its
        oldest row needs; both parts are then right-aligned to one width, the left padding
        masked."""
        if not self.rows:
            return other
        used = self.mask.any(0).nonzero().squeeze(1)
        mine = [(k.index_select(2, used), v.index_select(2, used)) for k, v in self.layers()]
        theirs = other.layers() if other.width else []
        masks = (self.mask[:, used], other.mask)
        width = max(int(m.shape[1]) for m in masks)
        mask = torch.cat([_left_pad(m, width, 1) for m in masks], 0)
        if not mine and not theirs:
            return BatchKV(DynamicCache(), mask)
        like = (mine or theirs)[0][0]
        data = []
        for layer in range(len(mine or theirs)):
            pair = []
            for pick in (0, 1):
                parts = [
                    part[layer][pick]
                    if part
                    else like.new_zeros((rows, like.shape[1], 0, like.shape[3]))
                    for part, rows in ((mine, self.rows), (theirs, other.rows))
                ]
                pair.append(torch.cat([_left_pad(t, width, 2) for t in parts], 0))
            data.append((pair[0], pair[1]))
        return BatchKV(cache_of(data), mask)


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`t` widened to `width` along `dim` with zeros (False) on the left."""
    missing = width - int(t.shape[dim])
    if not missing:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim)
