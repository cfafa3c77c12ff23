"""What a model is and how it generates, as config: pydantic and the standard library only.

Why apart from loading: run, serve and sweep configs embed these sections, and reading a
config must not import torch (the HTTP ingress and the CLI's config checks stay light).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TINY_LLAMA = "tiny-llama"
SMOLLM2 = "smollm2-135m"
BUILTINS = (TINY_LLAMA, SMOLLM2)
# Written beside every trained model: base model, format(s), entity types, corpora.
METADATA_FILE = "biogner_model.json"
# dtype names a config may give (besides "auto") -> the torch dtype's name
# (`biogner.models.load.DTYPES` maps them to torch dtypes).
DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


class ModelLoadError(RuntimeError):
    """A model spec could not be resolved or loaded; the message says what to do instead."""


class ModelConfig(BaseModel):
    """Which model to load and how to adapt it (the `model` section of a run config)."""

    model_config = ConfigDict(extra="forbid")

    spec: str = TINY_LLAMA
    lora: bool = True
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    dtype: str = "auto"
    cache_dir: str | None = None
    trust_remote_code: bool = False
    # Left padding is what batched generation needs; training collators pad as they like.
    padding_side: str = "left"

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value != "auto" and value not in DTYPE_NAMES:
            raise ValueError(
                f"model.dtype must be 'auto' or one of {sorted(DTYPE_NAMES)}, got {value!r}"
            )
        return value

    @field_validator("padding_side")
    @classmethod
    def _known_side(cls, value: str) -> str:
        if value not in ("left", "right"):
            raise ValueError(f"model.padding_side must be 'left' or 'right', got {value!r}")
        return value


class GenerationConfig(BaseModel):
    batch_size: int = Field(
        64,
        ge=1,
        description="sentences decoded together (finished ones leave the batch, so a large "
        "batch costs little at its tail: 64 beat 16 and 32 on a 2-core CPU, "
        "bench/RESULTS.md#generation-speed)",
    )
    max_new_tokens_cap: int = Field(768, ge=1, description="upper bound on any answer")
    device: str = Field("auto", description="auto, cpu, cuda")
    dtype: str = "auto"
    threads: int | None = Field(
        None,
        ge=1,
        description="torch threads on a CPU; default: all of this node's cores (an evaluation "
        "with several actors shares them out)",
    )
    constrained: bool = Field(
        True,
        description="decode under each writing's grammar for the sentence "
        "(`biogner.generation.constraints`): answers always parse and mention only spans of the "
        "sentence; false: free decoding",
    )
    overruled: Literal["drop_unended", "keep", "drop"] = Field(
        "drop_unended",
        description="constrained decoding, the items (lines, objects) in which the grammar "
        "overruled the model's own choice: drop_unended drops those the model tried to end "
        "where the grammar would not let it (a spent or cut mention stretched into a longer "
        "span); drop drops every one (a misspelt mention set right too); keep keeps them. "
        "Counted either way (overruled_rate)",
    )
    reuse_kv_cache: bool = Field(
        True,
        description="decoder hf: a conv format's later turns reuse the keys/values of the "
        "earlier ones instead of re-encoding the whole chat (same answers, less compute); "
        "biogner's loop always does",
    )
    # The decode loop and its mechanisms (`biogner.generation`): each is lossless (the same
    # tokens as step-by-step constrained greedy decoding) and switched off by its own key.
    decoder: Literal["biogner", "hf"] = Field(
        "biogner",
        description="biogner: the project's decode loop (the mechanisms below); hf: "
        "transformers' generate with a grammar mask per step, one token per forward pass "
        "(the path before them, kept as the reference they are tested and timed against)",
    )
    prefix_cache: bool = Field(
        True,
        description="encode the prompt prefix every sentence of a writing shares (system turn "
        "and instruction) once per model and reuse its keys/values in every batch",
    )
    forced_tokens: bool = Field(
        True,
        description="where the grammar allows exactly one token, append it without choosing, "
        "several per forward pass",
    )
    copy_draft_tokens: int = Field(
        8,
        ge=0,
        le=64,
        description="writings that restate the sentence (inline, bio): draft this many tokens "
        "of the sentence's restatement and verify them in one forward pass, keeping those "
        "greedy decoding would have chosen; 0: off",
    )
    mention_draft_tokens: int = Field(
        8,
        ge=0,
        le=64,
        description="writings that quote mentions (term, triple, json): once a mention is "
        "begun, draft this many tokens of the sentence after where the answer's last "
        "characters occur in it, verified as copy speculation's drafts are; 0: off",
    )
    mention_memory: bool = Field(
        True,
        description="writings that restate the sentence: remember the mentions the model "
        "marked in its answers and draft their markup where they occur again "
        "(`biogner.generation.memory`), so a known mention costs no refused draft; answers "
        "are the same either way",
    )
    rows_leave: bool = Field(
        True,
        description="a finished answer leaves its batch: it stops costing compute while the "
        "longest one goes on",
    )
    rows_join: bool = Field(
        False,
        description="one-turn answers (every multi format; conv with one type): waiting "
        "sentences join the batch as finished rows leave it (`biogner.generation.continuous`), so "
        "its passes stay full; needs rows_leave. Off by default: a joining row pays attention "
        "and cache copies over the whole batch's columns, and on a 2-core CPU whole-split "
        "evaluation ran 15 % slower with it (bench/RESULTS.md#generation-speed)",
    )
    scores: bool = Field(
        True,
        description="a confidence per entity: each chosen token's probability among the tokens "
        "the grammar allowed, multiplied over the tokens that wrote the entity (a softmax per "
        "pass and a mask per chosen token; the answers are the same either way)",
    )
    gqa_kernel: bool = Field(
        True,
        description="on a CPU, grouped-query attention with a mask hands the shared key/value "
        "heads to torch's kernel instead of repeating them per query head (bitwise the same "
        "hidden states, no copy of the cache per layer and pass); CUDA keeps transformers' rule",
    )
    packed_linear: bool = Field(
        True,
        description="on a CPU, Linear weights are packed once for oneDNN's kernel "
        "(`biogner.generation.packed`): bf16 ones instead of reordered on every call (bitwise "
        "the same outputs), fp32 ones on x86-64 instead of MKL's unpacked path (equal up to "
        "rounding); a small pass (a lone request) costs less",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="int8: dynamic int8 quantization of the body's Linear layers for "
        "generation on a CPU (torch.ao; weights per output channel, the LM head kept in fp32; "
        "fp32 models only); not lossless, measured in bench/RESULTS.md#generation-speed",
    )


# biogner's decode loop with each of its mechanisms switched off: what the bench and the
# property tests time and compare every mechanism against, one switch at a time.
MECHANISMS_OFF: dict[str, bool | int] = {
    "gqa_kernel": False,
    "packed_linear": False,
    "prefix_cache": False,
    "forced_tokens": False,
    "copy_draft_tokens": 0,
    "mention_draft_tokens": 0,
    "mention_memory": False,
    "rows_leave": False,
}
