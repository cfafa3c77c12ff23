"""Batched greedy generation of format answers: the one piece evaluation and serving share.

Prompts are sorted by length and left-padded; `conv_*` formats generate their turns in
sequence per sentence, batched across sentences. The answer budget (`max_new_tokens`) is
derived from the format's writing and the sentence length, so a model cannot ramble on
for ever, and a writing that restates the sentence (inline, bio) gets room to do it. By
default each answer is decoded under its writing's grammar for its sentence
(`biogner.constrain`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList

from biogner.chat_tokens import encode, prompt_ids
from biogner.constrain import ConstrainedLogits, RowConstraint, Vocabulary
from biogner.formats import Format, get_format
from biogner.formats.base import ParseResult
from biogner.models.config import METADATA_FILE, GenerationConfig, ModelConfig
from biogner.models.load import load_model
from biogner.prompts import render_chat
from biogner.runtime import cpu_threads
from biogner.types import Sentence

END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")


@dataclass
class Generation:
    """What a model wrote for one sentence, and what the format's parser made of it."""

    sentence: Sentence
    answers: list[str]
    parse: ParseResult
    generated_tokens: int
    truncated: bool = False  # an answer hit its token budget
    answer_tokens: list[list[int]] = field(default_factory=list)  # per turn, as generated


@dataclass
class Turn:
    """One generated answer: its text as read, its tokens as generated, whether it hit its
    token budget, how many of its items constrained decoding had to steer, and how many
    items it dropped."""

    text: str
    tokens: list[int]
    hit_budget: bool
    overruled: int = 0
    dropped: int = 0


def read_model_metadata(model_dir: Path) -> dict[str, Any]:
    """The `biogner_model.json` written at training time (format, entity types, base)."""
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: not a biogner model directory (log it with biogner train)"
        )
    return dict(json.loads(path.read_text()))


class Generator:
    """A model held in memory that extracts entities from sentences in one format."""

    def __init__(self, model_dir: str | Path, cfg: GenerationConfig | None = None) -> None:
        self.cfg = cfg or GenerationConfig()
        self.model_dir = Path(model_dir)
        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(self.cfg.threads or cpu_threads())
        model_cfg = ModelConfig(
            spec=str(self.model_dir), lora=False, dtype=self.cfg.dtype, padding_side="left"
        )
        self.model, self.tokenizer = load_model(model_cfg, self.device, for_training=False)
        self.end_ids = self._end_ids()
        self._vocabulary: Vocabulary | None = None

    def _end_ids(self) -> list[int]:
        tok = self.tokenizer
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        vocab = tok.get_vocab()
        ids.update(vocab[t] for t in END_TOKENS if t in vocab)
        return sorted(ids)

    def vocabulary(self) -> Vocabulary:
        """The model's vocabulary for constrained decoding, built on first use."""
        if self._vocabulary is None:
            size = self.model.get_output_embeddings().weight.shape[0]
            self._vocabulary = Vocabulary(self.tokenizer, size, self.end_ids)
        return self._vocabulary

    def answer_budget(self, fmt: Format, sentence: Sentence, n_types: int) -> int:
        """Most tokens one answer may take: the writing's budget for this sentence (and, in a
        multi-turn answer, all the types), within `max_new_tokens_cap`."""
        n_text = len(self.tokenizer(sentence.text, add_special_tokens=False)["input_ids"])
        types_here = n_types if fmt.turn == "multi" else 1
        return min(fmt.writing.answer_budget(n_text, types_here), self.cfg.max_new_tokens_cap)

    def _left_pad(self, rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r)
                mask[i, width - len(r) :] = 1
        return ids, mask

    def _next_turn_ids(self, chat: list[dict[str, str]], question: str) -> list[int]:
        """Tokens between an assistant answer's content and the next answer: the end of that
        turn, the next user turn and the generation prompt, as the chat template writes them."""
        marker = "\x00answer\x00"
        text = render_chat(
            self.tokenizer,
            [
                *chat,
                {"role": "assistant", "content": marker},
                {"role": "user", "content": question},
            ],
            add_generation_prompt=True,
        )
        return encode(self.tokenizer, text[text.rindex(marker) + len(marker) :])

    @torch.inference_mode()
    def _conversation(
        self,
        chats: list[list[dict[str, str]]],
        questions: list[list[str]],
        budgets: list[int],
        constraint_for: Callable[[int, int], RowConstraint | None] | None = None,
    ) -> list[list[Turn]]:
        """Every turn of a batch of conversations.

        A later turn continues from the tokens the model generated (not their re-encoded
        text), after the chat template's turn separator and the next question; with
        `reuse_kv_cache` the keys and values of everything before it are reused instead of
        recomputed. Padding, the end token and anything generated after it are masked, so
        the positions of the real tokens are those of the conversation alone.
        `constraint_for(row, turn)` gives the constraint of each answer (None: free); an
        answer cut by its budget is cut back to what its grammar accepts, and the items the
        grammar had to steer are counted, or dropped (`RowConstraint.finish`)."""
        turns = len(questions[0])
        for chat, qs in zip(chats, questions, strict=True):
            chat.append({"role": "user", "content": qs[0]})
        ids, mask = self._left_pad([prompt_ids(self.tokenizer, c) for c in chats])
        past = None
        results: list[list[Turn]] = [[] for _ in chats]
        for turn in range(turns):
            if turn:
                block, block_mask = self._left_pad(
                    [
                        self._next_turn_ids(c[:-1], qs[turn])
                        for c, qs in zip(chats, questions, strict=True)
                    ]
                )
                for c, qs in zip(chats, questions, strict=True):
                    c.append({"role": "user", "content": qs[turn]})
                ids, mask = torch.cat([ids, block], 1), torch.cat([mask, block_mask], 1)
            # (`past_key_values` is what transformers 5.17, on the GPU image, still calls it)
            cache: dict[str, Any] = {} if past is None else {"past_key_values": past}
            rows = [constraint_for(r, turn) if constraint_for else None for r in range(len(chats))]
            if any(r is not None for r in rows):
                cache["logits_processor"] = LogitsProcessorList(
                    [ConstrainedLogits(rows, ids.shape[1])]
                )
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                **cache,
                max_new_tokens=max(budgets),
                do_sample=False,
                num_beams=1,
                eos_token_id=self.end_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                return_dict_in_generate=True,
            )
            sequences = out.sequences.cpu()
            new = sequences[:, ids.shape[1] :]
            new_mask = torch.zeros_like(new)
            for row, chat in enumerate(chats):
                toks = new[row, : budgets[row]].tolist()
                end = next((k for k, t in enumerate(toks) if t in self.end_ids), None)
                answer = toks if end is None else toks[:end]
                constraint, overruled, dropped = rows[row], 0, 0
                if constraint is not None:
                    answer, text, overruled, dropped = constraint.finish(
                        answer, ended=end is not None
                    )
                else:
                    text = self.tokenizer.decode(answer, skip_special_tokens=True)
                new_mask[row, : len(answer)] = 1
                text = text.strip()
                hit = end is None and len(toks) >= budgets[row]
                results[row].append(Turn(text, answer, hit, overruled, dropped))
                chat.append({"role": "assistant", "content": text})
            ids, mask = sequences, torch.cat([mask, new_mask], 1)
            past = out.past_key_values if self.cfg.reuse_kv_cache else None
        return results

    def extract(
        self, sentences: Sequence[Sentence], fmt: Format | str, types: Sequence[str]
    ) -> list[Generation]:
        """Generate every turn of `fmt` for each sentence and parse the answers.

        Sentences are batched by prompt length (less padding); a batch keeps its rows for
        all the turns of a `conv` format, so the cache of one turn serves the next."""
        fmt = get_format(fmt) if isinstance(fmt, str) else fmt
        types = list(types)
        budgets = [self.answer_budget(fmt, s, len(types)) for s in sentences]
        questions = [fmt.questions(s.text, types) for s in sentences]
        order = sorted(range(len(sentences)), key=lambda i: len(questions[i][0]))
        turns: list[list[Turn]] = [[] for _ in sentences]
        bs = self.cfg.batch_size
        turn_types = fmt.turn_types(types)
        constrained = self.cfg.constrained and fmt.writing.constrainable
        for start in range(0, len(order), bs):
            chunk = order[start : start + bs]

            def constraint_for(row: int, turn: int, chunk: list[int] = chunk) -> RowConstraint:
                return RowConstraint(
                    self.vocabulary(),
                    fmt.writing,
                    sentences[chunk[row]],
                    turn_types[turn],
                    overruled=self.cfg.overruled,
                )

            done = self._conversation(
                [fmt.opening() for _ in chunk],
                [questions[i] for i in chunk],
                [budgets[i] for i in chunk],
                constraint_for if constrained else None,
            )
            for i, result in zip(chunk, done, strict=True):
                turns[i] = result
        out = []
        for s, result in zip(sentences, turns, strict=True):
            parse = fmt.parse([t.text for t in result], s, types)
            parse.overruled = sum(t.overruled for t in result)
            parse.dropped = sum(t.dropped for t in result)
            out.append(
                Generation(
                    s,
                    [t.text for t in result],
                    parse,
                    # the end token of each finished answer was generated too
                    sum(len(t.tokens) + (not t.hit_budget) for t in result),
                    any(t.hit_budget for t in result),
                    [t.tokens for t in result],
                )
            )
        return out
