"""The training loss computed only where it is defined: the answer tokens.

Why: a causal LM's head projects every position onto the vocabulary (49k x 576 for
SmolLM2), but the loss only reads the positions that predict an assistant token, a
minority of a chat (the system prompt, instruction and sentence are context). Passing a
boolean `logits_to_keep` makes the model project just those rows (transformers >= 5
`slice_logits_to_keep`): the same mean cross-entropy as `labels=`, ~20 % less time per
CPU step (bench/results/archive/training.md, "The champion on a bf16 CPU"). The model is
still called through its own (or DeepSpeed's,
PEFT's) forward, so ZeRO hooks and adapters behave as with `labels=`.
"""

from __future__ import annotations

from typing import Any

import torch

from biogner.train.batching import IGNORE_INDEX


def supervised_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, targets): `keep[b, i]` is True where position i predicts a labelled token
    i + 1; `targets` are those tokens in the row-major order of `keep`'s True cells."""
    nxt = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = nxt != IGNORE_INDEX
    return keep, nxt[keep[:, :-1]]


def causal_lm_loss(model: Any, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens of a right-padded batch.

    `tensors` holds input_ids, attention_mask and labels (IGNORE_INDEX outside answers),
    as `batching.collate` builds them; the value equals `model(**tensors).loss`."""
    keep, targets = supervised_positions(tensors["labels"])
    if targets.numel() == 0:
        raise ValueError("a training batch has no labelled (assistant) token")
    out = model(
        input_ids=tensors["input_ids"],
        attention_mask=tensors["attention_mask"],
        logits_to_keep=keep,
        use_cache=False,
    )
    logits = out.logits
    if logits.dim() != 2 or logits.shape[0] != targets.numel():
        raise TypeError(
            f"{type(model).__name__} ignored a boolean logits_to_keep (logits "
            f"{tuple(logits.shape)} for {targets.numel()} labelled tokens): it needs a "
            "transformers model whose head uses slice_logits_to_keep"
        )
    return torch.nn.functional.cross_entropy(logits.float(), targets)
