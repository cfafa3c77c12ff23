"""Packed Linear weights (`generation.packed_linear`): a bf16 model computes bitwise what it
computed unpacked, its answers are the same token for token, an fp32 one (x86-64 only) the
same up to rounding, and the switch touches only what it may (weights on a CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import COPIER_TYPES, tiny_llama, write_noise_model
from transformers import LlamaForCausalLM

from biogner.corpora import load_split
from biogner.generation import Generator
from biogner.generation.packed import (
    PackedLinear,
    available,
    pack_linears,
    packed_dtypes,
    weights_in,
)
from biogner.models.config import GenerationConfig

pytestmark = pytest.mark.skipif(not available(), reason="this torch has no oneDNN")


def model(dtype: torch.dtype) -> LlamaForCausalLM:
    return tiny_llama(
        dtype,
        num_key_value_heads=2,
        mlp_bias=True,  # a bias is packed along
        tie_word_embeddings=True,  # as SmolLM2's: the head is the embedding matrix
    )


def logits(m: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return m(input_ids=ids, attention_mask=mask).logits


def test_a_bf16_model_computes_bitwise_the_same_packed() -> None:
    m = model(torch.bfloat16)
    ids = torch.randint(0, 300, (3, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[0, :4] = 0  # left padding
    before = logits(m, ids, mask)
    weights = weights_in(m)
    # 2 layers x 7 Linear layers, and the (tied) LM head
    assert pack_linears(m) == 15
    assert not any(type(x) is torch.nn.Linear for x in m.modules())
    assert isinstance(m.get_output_embeddings(), PackedLinear)
    assert weights_in(m) == weights + 300 * 64  # the head's packed copy of the embedding
    assert torch.equal(logits(m, ids, mask), before)
    # not vacuous: other inputs give other logits
    assert not torch.equal(logits(m, ids.flip(1), mask), before)


def test_fp32_weights_are_packed_on_x86_only_and_compute_the_same_up_to_rounding() -> None:
    assert packed_dtypes("x86_64") == packed_dtypes("AMD64") == (torch.bfloat16, torch.float32)
    assert packed_dtypes("arm64") == packed_dtypes("aarch64") == (torch.bfloat16,)
    m = model(torch.float32)
    ids = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    before = logits(m, ids, mask)
    assert pack_linears(m, (torch.bfloat16,)) == 0  # an ARM machine's choice: left as it is
    assert sum(type(x) is torch.nn.Linear for x in m.modules()) == 15
    assert pack_linears(m, (torch.float32,)) == 15  # another summation order (MKL's, oneDNN's)
    assert isinstance(m.get_output_embeddings(), PackedLinear)
    torch.testing.assert_close(logits(m, ids, mask), before, rtol=1e-4, atol=1e-5)


def test_a_packed_layer_refuses_input_of_another_dtype() -> None:
    layer = PackedLinear(torch.nn.Linear(8, 4).to(torch.bfloat16))
    assert layer(torch.ones(2, 8, dtype=torch.bfloat16)).shape == (2, 4)
    with pytest.raises(TypeError, match="bfloat16 weights, got torch.float32"):
        layer(torch.ones(2, 8))


@pytest.mark.parametrize("fmt", ["multi_inline", "conv_term", "multi_bio"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_a_generator_answers_the_same_packed(
    tmp_path: Path, copier_model: Path, data_dir: Path, fmt: str, dtype: str
) -> None:
    sentences = load_split("BC5CDR", "dev", data_dir, limit=36)[24:36]
    noise = write_noise_model(tmp_path / "noise", seed=3)
    packs = getattr(torch, dtype) in packed_dtypes()
    for path in (copier_model, noise):
        out = {}
        for packed in (False, True):
            cfg = GenerationConfig(
                device="cpu",
                dtype=dtype,
                max_new_tokens_cap=48,
                batch_size=5,
                packed_linear=packed,
            )
            gen = Generator(path, cfg)
            head = gen.model.get_output_embeddings()
            assert isinstance(head, PackedLinear) is (packed and packs)
            out[packed] = gen.extract(sentences, fmt, COPIER_TYPES)
        for a, b in zip(out[False], out[True], strict=True):
            # bf16: bitwise the same logits; fp32: equal up to rounding, which breaks no
            # choice of these models (their top two logits are never that close)
            assert b.answer_tokens == a.answer_tokens, a.sentence.text
            if dtype == "bfloat16":
                assert b.parse.scores == a.parse.scores
            else:
                assert b.parse.scores == pytest.approx(a.parse.scores, abs=1e-5)
