"""Batched greedy generation of format answers: the one piece evaluation and serving share.

Prompts are sorted by length and left-padded; `conv_*` formats generate their turns in
sequence per sentence, batched across sentences. The answer budget (`max_new_tokens`) is
derived from the format's writing and the sentence length, so a model cannot ramble on
for ever, and a writing that restates the sentence (inline, bio) gets room to do it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from biogner.formats import Format, get_format
from biogner.formats.base import ParseResult
from biogner.types import Sentence

# Answer length per text token, and a floor, for each writing (measured on the corpora's
# gold answers with headroom: a bio answer restates every word with its tag).
ANSWER_BUDGET: dict[str, tuple[float, int]] = {
    "term": (1.0, 16),
    "triple": (1.5, 24),
    "json": (2.0, 24),
    "inline": (2.0, 24),
    "bio": (4.0, 24),
}
END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")


class GenerationConfig(BaseModel):
    batch_size: int = Field(16, ge=1)
    max_new_tokens_cap: int = Field(768, ge=1, description="upper bound on any answer")
    device: str = Field("auto", description="auto, cpu, cuda")
    dtype: str = "auto"


@dataclass
class Generation:
    """What a model wrote for one sentence, and what the format's parser made of it."""

    sentence: Sentence
    answers: list[str]
    parse: ParseResult
    generated_tokens: int
    truncated: bool = False  # an answer hit its token budget
    extra: dict[str, Any] = field(default_factory=dict)


def read_model_metadata(model_dir: Path) -> dict[str, Any]:
    """The `biogner_model.json` written at training time (format, entity types, base)."""
    from biogner.tracking import METADATA_FILE

    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: not a biogner model directory (log it with biogner train)"
        )
    return dict(json.loads(path.read_text()))


class Generator:
    """A model held in memory that extracts entities from sentences in one format."""

    def __init__(self, model_dir: str | Path, cfg: GenerationConfig | None = None) -> None:
        from biogner.modeling import ModelConfig, load_model

        self.cfg = cfg or GenerationConfig()
        self.model_dir = Path(model_dir)
        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        model_cfg = ModelConfig(
            spec=str(self.model_dir), lora=False, dtype=self.cfg.dtype, padding_side="left"
        )
        self.model, self.tokenizer = load_model(model_cfg, self.device, for_training=False)
        self.end_ids = self._end_ids()

    def _end_ids(self) -> list[int]:
        tok = self.tokenizer
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        vocab = tok.get_vocab()
        ids.update(vocab[t] for t in END_TOKENS if t in vocab)
        return sorted(ids)

    def answer_budget(self, fmt: Format, sentence: Sentence, n_types: int) -> int:
        per_token, floor = ANSWER_BUDGET.get(fmt.writing.name, (2.0, 32))
        n_text = len(self.tokenizer(sentence.text, add_special_tokens=False)["input_ids"])
        types_here = n_types if fmt.turn == "multi" else 1
        budget = math.ceil(per_token * n_text * (types_here if fmt.writing.name == "term" else 1))
        return min(max(budget, floor), self.cfg.max_new_tokens_cap)

    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[list[int]], budgets: Sequence[int]
    ) -> list[tuple[str, int, bool]]:
        """Greedy answers for token-id prompts: (text, generated tokens, hit its budget)."""
        results: list[tuple[str, int, bool]] = [("", 0, False)] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        pad = self.tokenizer.pad_token_id
        bs = self.cfg.batch_size
        for start in range(0, len(order), bs):
            chunk = order[start : start + bs]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                n = len(prompts[i])
                ids[row, width - n :] = torch.tensor(prompts[i])
                mask[row, width - n :] = 1
            budget = max(budgets[i] for i in chunk)
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=budget,
                do_sample=False,
                num_beams=1,
                eos_token_id=self.end_ids,
                pad_token_id=pad,
            )
            new = out[:, width:].tolist()
            for row, i in enumerate(chunk):
                toks = new[row][: budgets[i]]
                end = next((k for k, t in enumerate(toks) if t in self.end_ids), None)
                hit = end is None and len(toks) >= budgets[i]
                toks = toks if end is None else toks[:end]
                text = self.tokenizer.decode(toks, skip_special_tokens=True)
                results[i] = (text.strip(), len(toks) + (end is not None), hit)
        return results

    def extract(
        self, sentences: Sequence[Sentence], fmt: Format | str, types: Sequence[str]
    ) -> list[Generation]:
        """Generate every turn of `fmt` for each sentence and parse the answers."""
        from biogner.chat_tokens import prompt_ids

        fmt = get_format(fmt) if isinstance(fmt, str) else fmt
        types = list(types)
        chats: list[list[dict[str, str]]] = [fmt.opening() for _ in sentences]
        answers: list[list[str]] = [[] for _ in sentences]
        counts = [0] * len(sentences)
        hit = [False] * len(sentences)
        budgets = [self.answer_budget(fmt, s, len(types)) for s in sentences]
        questions = [fmt.questions(s.text, types) for s in sentences]
        for turn in range(len(fmt.turn_types(types))):
            prompts = []
            for i in range(len(sentences)):
                chats[i].append({"role": "user", "content": questions[i][turn]})
                prompts.append(prompt_ids(self.tokenizer, chats[i]))
            for i, (text, n, cut) in enumerate(self.generate(prompts, budgets)):
                chats[i].append({"role": "assistant", "content": text})
                answers[i].append(text)
                counts[i] += n
                hit[i] = hit[i] or cut
        return [
            Generation(s, answers[i], fmt.parse(answers[i], s, types), counts[i], hit[i])
            for i, s in enumerate(sentences)
        ]


def timed_extract(
    generator: Generator, sentences: Sequence[Sentence], fmt: str, types: Sequence[str]
) -> tuple[list[Generation], float]:
    start = time.perf_counter()
    out = generator.extract(sentences, fmt, types)
    return out, time.perf_counter() - start
