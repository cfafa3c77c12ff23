"""The shared-prefix cache: the prompt tokens every sentence of a writing starts with.

A prompt is the system turn, the instruction and the sentence; everything before the
sentence (~50 of ~80 tokens for a `multi` prompt) is the same for every sentence asked in
one format for one set of types. It is encoded once per model and its keys and values are
repeated into every batch (`BatchKV.repeated`), in evaluation, serving and extraction alike.

Which tokens are shared is read off the tokenizer, not guessed from text: the prompt is
tokenized for two unlike probe texts and the common token prefix, less its last token (the
one a sentence's first characters could merge into), is the prefix. A row whose prompt does
not start with it (a tokenizer merging across the boundary after all) is encoded whole.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

# Two texts that share no first character, word or script.
PROBES = ("Alpha 1 .", "( zeta )")
ENTRIES = 32  # prefixes kept per model (a format x a set of types each)


def common_prefix(a: list[int], b: list[int]) -> list[int]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


class PrefixCache:
    """Encoded prompt prefixes of one model, keyed by the prompt without its sentence."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.ids: dict[str, list[int]] = {}
        self.encoded: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = (
            OrderedDict()
        )

    def prefix_ids(self, key: str, prompt_for: Callable[[str], list[int]]) -> list[int]:
        """The shared prefix of the prompts `prompt_for(text)` builds (`key` names them:
        format, types)."""
        if key not in self.ids:
            shared = common_prefix(*(prompt_for(text) for text in PROBES))
            self.ids[key] = shared[:-1]
        return self.ids[key]

    @torch.inference_mode()
    def keys_values(self, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The prefix's keys and values per layer, (1, heads, length, dim), encoded once."""
        key = tuple(prefix)
        if key in self.encoded:
            self.encoded.move_to_end(key)
            return self.encoded[key]
        ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
        out = self.model.base_model(input_ids=ids, use_cache=True)  # type: ignore[operator]
        cache = getattr(out, "cache", None) or out.past_key_values
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        self.encoded[key] = layers
        while len(self.encoded) > ENTRIES:
            self.encoded.popitem(last=False)
        return layers
