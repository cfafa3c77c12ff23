"""Batched constrained greedy generation: the one piece evaluation, serving and extraction
share. A module per mechanism: `decode` (the loop), `prefix` (shared-prefix cache),
`forced` (forced tokens), `speculation` (copy drafts), `kv` (the batch's cache),
`constraints` (grammar masks), `reference` (transformers' generate, the oracle),
`quantize` (int8 option), `packed` (Linear weights packed once, CPU), `stream` (rows
joining a running batch, an option), `memory` (mentions marked before, drafted again),
`attention` (grouped-query kernel, CPU), `routing` (which types are asked together),
`generator` (the model handle that drives them)."""

from biogner.generation.answer import Turn
from biogner.generation.generator import (
    END_TOKENS,
    Generation,
    Generator,
    counts_items,
)

__all__ = ["END_TOKENS", "Generation", "Generator", "Turn", "counts_items"]
