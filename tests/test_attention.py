"""The grouped-query kernel switch: the same hidden states as transformers' `sdpa` with a
mask of padding and holes, where it applies and only there."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from transformers import LlamaForCausalLM

from biogner.generation.attention import NAME, use_gqa_kernel


def model(kv_heads: int, dtype: torch.dtype, attn: str = "sdpa") -> LlamaForCausalLM:
    return tiny_llama(dtype, num_key_value_heads=kv_heads, attn_implementation=attn)


def hidden(m: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return m.model(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_heads_give_the_same_hidden_states_with_padding_and_holes(
    dtype: torch.dtype,
) -> None:
    m = model(kv_heads=2, dtype=dtype)
    ids = torch.randint(0, 300, (5, 17), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(5, 17, dtype=torch.long)
    mask[:2, :6] = 0  # left padding
    mask[3, 9] = 0  # a refused draft's column
    before = hidden(m, ids, mask)
    assert use_gqa_kernel(m)
    assert m.config._attn_implementation == NAME
    after = hidden(m, ids, mask)
    valid = mask.bool()
    assert torch.equal(before[valid], after[valid])
    # and unlike a model that lost its mask: the padded rows do differ from unpadded ones
    unmasked = hidden(m, ids, torch.ones_like(mask))
    assert not torch.equal(unmasked[valid], after[valid])


def test_left_alone_where_it_does_not_apply() -> None:
    assert not use_gqa_kernel(m := model(kv_heads=4, dtype=torch.float32))
    assert m.config._attn_implementation == "sdpa"
    assert not use_gqa_kernel(m := model(kv_heads=2, dtype=torch.float32, attn="eager"))
    assert m.config._attn_implementation == "eager"
