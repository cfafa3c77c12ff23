"""Batched constrained greedy generation: the one piece evaluation, serving and extraction
share. A module per mechanism, each below the ones that use it: `generator` (the model
handle: questions, budgets, grammars, drafts, type groups), `generated` (what it returns),
`decoders` (the registry it picks its decoder from, once per config), `decode` (biogner's
loop), `continuous` (continuous batching: rows joining a running batch, an option),
`reference` (transformers' generate, the oracle), `step` (one forward pass of a batch),
`row` (one answer being decoded), `loaded` (the loaded model the loops take), `prefix`
(shared-prefix cache), `forced` (forced tokens), `speculation` (copy drafts), `memory`
(mentions marked before, drafted again), `kv` (the batch's cache), `constraints` (grammar
masks), `answer` (an answer as read), `scores` (per-entity confidence), `routing` (which
types are asked together), `quantize` (int8 option), `packed` (Linear weights packed once,
CPU), `attention` (grouped-query kernel, CPU)."""

from biogner.generation.answer import Turn
from biogner.generation.forced import counts_items
from biogner.generation.generated import Generation
from biogner.generation.generator import Generator
from biogner.generation.loaded import END_TOKENS

__all__ = ["END_TOKENS", "Generation", "Generator", "Turn", "counts_items"]
