"""Grouped-query attention on a CPU without copying the cache per query head.

SmolLM2, Llama-3.2 and Qwen2.5 share each key/value head among several query heads
(SmolLM2-135M: 9 query heads, 3 key/value heads). Every pass of the decode loop carries an
attention mask (padding, refused drafts), and with a mask transformers' `sdpa` attention
repeats the keys and values per query head before calling the kernel: the whole cache copied
three times, each layer, each pass (15 % of a five-turn conv scoring's time on this CPU).
torch's CPU kernel takes the shared heads itself (`enable_gqa`), with the same arithmetic:
the model's hidden states are bitwise equal (fp32 and bf16, tests/test_attention.py).

On CUDA transformers' own rule stands (its fast kernels with a mask take no `enable_gqa`),
so `generation.gqa_kernel` switches CPU models only.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "biogner_sdpa_gqa"


def gqa_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' `sdpa` attention, except that a masked grouped-query call hands the
    shared key/value heads to the kernel instead of repeating them."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    grouped = key.shape[1] != query.shape[1]
    if attention_mask is None or not grouped or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def use_gqa_kernel(model: torch.nn.Module) -> bool:
    """Switch a model on a CPU from `sdpa` attention to `gqa_sdpa`; False (unchanged) where
    it does not apply: another attention implementation, or as many key/value heads as
    query heads."""
    config: Any = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    heads = int(config.num_attention_heads)
    if int(getattr(config, "num_key_value_heads", None) or heads) == heads:
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    # the same masks as `sdpa` (an unknown name would get none at all)
    AttentionInterface.register(NAME, gqa_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)  # type: ignore[operator]
    return True
