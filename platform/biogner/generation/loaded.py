"""The loaded model as the decode loops see it: what they compute with and nothing else.

`Generator` loads a model once (`load_lm`: device, threads, the grouped-query kernel,
int8 quantization, packed Linear weights), reads the tokenizer's end and padding ids, and
builds the shared-prefix cache; the loops (`decode`, `continuous`, `reference`) and the
forward pass (`step`) take this `LoadedLM`, not the `Generator`, so they depend on nothing
above them. The settings they read (`DecodeSettings`) travel with it: a `Generator` given a
new config hands its loops a copy with the new settings (`with_settings`), the weights and
the prefix cache shared.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from biogner.chat_tokens import encode
from biogner.generation.attention import use_gqa_kernel
from biogner.generation.packed import pack_linears
from biogner.generation.prefix import PrefixCache
from biogner.generation.quantize import quantize
from biogner.models.config import GenerationConfig, ModelConfig
from biogner.models.load import load_model
from biogner.prompts import render_chat
from biogner.runtime import cpu_threads

END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")
ANSWER_MARKER = "\x00answer\x00"


@dataclass(frozen=True)
class DecodeSettings:
    """The generation settings the decode loops read (the rest of `GenerationConfig` shapes
    the questions, grammars and drafts the `Generator` hands them)."""

    scores: bool = True  # each chosen token's probability (a softmax per pass)
    forced_tokens: bool = True  # tokens the grammar forces are appended without a choice
    rows_leave: bool = True  # a finished answer leaves its batch
    reuse_kv_cache: bool = True  # reference loop: later turns reuse the earlier ones' cache

    @classmethod
    def of(cls, cfg: GenerationConfig) -> DecodeSettings:
        return cls(cfg.scores, cfg.forced_tokens, cfg.rows_leave, cfg.reuse_kv_cache)


@dataclass(frozen=True)
class LoadedLM:
    """A causal LM loaded for inference (quantized, packed, its attention kernel chosen), its
    tokenizer's ids, its shared-prefix cache and the loops' settings."""

    model: Any  # the transformers causal LM: its body, LM head and `generate`
    tokenizer: Any
    device: torch.device
    end_ids: list[int]  # every token that ends an answer
    answer_end_id: int | None  # the end token the chat template writes after an answer
    prefixes: PrefixCache
    settings: DecodeSettings

    @property
    def body(self) -> torch.nn.Module:
        """The model without its LM head: what a forward pass of the decode loop runs."""
        return self.model.base_model  # type: ignore[no-any-return]

    @property
    def head(self) -> Any:
        """The LM head, run only where a row chooses or checks a token (a Linear, packed
        or dynamically quantized as the config asked)."""
        return self.model.get_output_embeddings()

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id  # type: ignore[no-any-return]

    def with_settings(self, settings: DecodeSettings) -> LoadedLM:
        """The same loaded model (weights, prefix cache) under other settings."""
        return replace(self, settings=settings)

    def next_turn_ids(self, chat: list[dict[str, str]], question: str) -> list[int]:
        """Tokens between an assistant answer's content and the next answer: the end of that
        turn, the next user turn and the generation prompt, as the chat template writes them."""
        return next_turn_ids(self.tokenizer, chat, question)


def next_turn_ids(tokenizer: Any, chat: list[dict[str, str]], question: str) -> list[int]:
    """`LoadedLM.next_turn_ids` for a bare tokenizer (read once while loading)."""
    text = render_chat(
        tokenizer,
        [
            *chat,
            {"role": "assistant", "content": ANSWER_MARKER},
            {"role": "user", "content": question},
        ],
        add_generation_prompt=True,
    )
    return encode(tokenizer, text[text.rindex(ANSWER_MARKER) + len(ANSWER_MARKER) :])


def end_ids_of(tokenizer: Any) -> list[int]:
    """The tokens that end an answer: the tokenizer's end token and the chat end tokens of
    `END_TOKENS` it knows."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_TOKENS if t in vocab)
    return sorted(ids)


def answer_end_id_of(tokenizer: Any, end_ids: list[int]) -> int | None:
    """The end token the chat template writes right after an answer (drafted last)."""
    after = next_turn_ids(tokenizer, [{"role": "user", "content": "x"}], "y")
    return after[0] if after and after[0] in end_ids else None


def load_lm(model_dir: str | Path, cfg: GenerationConfig) -> LoadedLM:
    """The model in `model_dir` loaded for generation under `cfg`: on its device (`auto`:
    CUDA where there is one), with the CPU threads, attention kernel, quantization and
    packed weights `cfg` asks for."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or cpu_threads())
    model_cfg = ModelConfig(spec=str(model_dir), lora=False, dtype=cfg.dtype, padding_side="left")
    model, tokenizer = load_model(model_cfg, device, for_training=False)
    if cfg.gqa_kernel and device.type == "cpu":
        use_gqa_kernel(model)
    if cfg.quantize != "none":
        model = quantize(model, cfg.quantize, device)
    if cfg.packed_linear and device.type == "cpu":
        pack_linears(model)  # (what quantization left: the LM head)
    end_ids = end_ids_of(tokenizer)
    return LoadedLM(
        model,
        tokenizer,
        device,
        end_ids,
        answer_end_id_of(tokenizer, end_ids),
        PrefixCache(model, device),
        DecodeSettings.of(cfg),
    )
