"""The answer-only training loss equals the model's own `labels=` loss, value and gradients."""

from __future__ import annotations

import pytest
import torch

from biogner.train.batching import IGNORE_INDEX, Example, collate
from biogner.train.loss import causal_lm_loss, supervised_positions


def test_supervised_positions_marks_the_positions_that_predict_labelled_tokens():
    labels = torch.tensor([[-100, -100, 7, 8, -100], [-100, 5, -100, -100, -100]])
    keep, targets = supervised_positions(labels)
    assert keep.tolist() == [
        [False, True, True, False, False],
        [True, False, False, False, False],
    ]
    assert targets.tolist() == [7, 8, 5]


def tiny(model_type: str) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        model_type,
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def batch() -> dict[str, torch.Tensor]:
    """Right-padded rows of different lengths, answers at different offsets (as collate
    builds them from tokenize_chat's rows)."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for n, start in ((19, 11), (12, 4), (16, 9)):
        ids = torch.randint(3, 97, (n,), generator=g).tolist()
        labels = [IGNORE_INDEX] * start + ids[start:]
        rows.append(Example.of(str(n), ids, labels))
    tensors, _, _ = collate(rows, pad_id=0)
    return tensors


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_answer_only_loss_equals_the_full_head_loss_and_its_gradients(model_type):
    model = tiny(model_type)
    tensors = batch()
    reference = model(**tensors).loss
    reference.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    loss = causal_lm_loss(model, tensors)
    loss.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    for name, param in model.named_parameters():
        assert torch.allclose(param.grad, ref_grads[name], atol=1e-6), name


def test_a_batch_without_answer_tokens_is_refused():
    tensors = batch()
    tensors["labels"].fill_(IGNORE_INDEX)
    with pytest.raises(ValueError, match="no labelled"):
        causal_lm_loss(tiny("llama"), tensors)
