"""The `Generator`: a model held in memory that extracts entities from sentences, in one
format, for evaluation, serving and extraction alike.

Prompts are sorted by length and batched; `conv_*` formats generate their turns in sequence
per sentence, batched across sentences. The answer budget is derived from the format's
writing and the sentence length, so a model cannot ramble on for ever, and a writing that
restates the sentence (inline, bio) gets room to do it. By default each answer is decoded
under its writing's grammar for its sentence (`constraints`), by biogner's decode loop
(`decode`; `generation.decoder: hf` runs transformers' `generate` instead, `reference`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from biogner.chat_tokens import encode, prompt_ids
from biogner.formats import Format, get_format
from biogner.formats.base import ParseResult, Writing
from biogner.generation import decode, reference
from biogner.generation.answer import Turn
from biogner.generation.attention import use_gqa_kernel
from biogner.generation.constraints import RowConstraint, Vocabulary
from biogner.generation.memory import MentionMemory
from biogner.generation.prefix import PrefixCache
from biogner.generation.quantize import quantize
from biogner.generation.routing import ask_plan
from biogner.generation.scores import span_scores
from biogner.generation.speculation import CopyDrafter, Drafter, MentionDrafter
from biogner.models.card import has_card, read_card
from biogner.models.config import GenerationConfig, ModelConfig
from biogner.models.load import load_model
from biogner.prompts import render_chat
from biogner.runtime import cpu_threads
from biogner.types import Sentence

END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")
ANSWER_MARKER = "\x00answer\x00"


@dataclass
class Generation:
    """What a model wrote for one sentence, and what the format's parser made of it."""

    sentence: Sentence
    answers: list[str]
    parse: ParseResult
    generated_tokens: int
    truncated: bool = False  # an answer hit its token budget
    answer_tokens: list[list[int]] = field(default_factory=list)  # per turn, as generated


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
        if self.cfg.gqa_kernel and self.device.type == "cpu":
            use_gqa_kernel(self.model)
        if self.cfg.quantize != "none":
            self.model = quantize(self.model, self.cfg.quantize, self.device)
        self.end_ids = self._end_ids()
        self.answer_end_id = self._answer_end_id()
        self._vocabulary: Vocabulary | None = None
        self.prefixes = PrefixCache(self.model, self.device)
        self.memory = MentionMemory()  # what this model marked so far: drafts mark it too
        # a biogner model's card; a bare HF directory (benches, tests) has none
        self.card = read_card(self.model_dir) if has_card(self.model_dir) else None
        self.type_groups = self.card.type_groups if self.card is not None else []

    def _end_ids(self) -> list[int]:
        tok = self.tokenizer
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        vocab = tok.get_vocab()
        ids.update(vocab[t] for t in END_TOKENS if t in vocab)
        return sorted(ids)

    def vocabulary(self) -> Vocabulary:
        """The model's vocabulary for constrained decoding, built on first use."""
        if self._vocabulary is None:
            head = self.model.get_output_embeddings()
            # (a dynamically quantized head has out_features and a weight() method)
            size = int(getattr(head, "out_features", 0) or head.weight.shape[0])
            self._vocabulary = Vocabulary(self.tokenizer, size, self.end_ids)
        return self._vocabulary

    def answer_budget(self, fmt: Format, sentence: Sentence, n_types: int) -> int:
        """Most tokens one answer may take: the writing's budget for this sentence (and, in a
        multi-turn answer, all the types), within `max_new_tokens_cap`."""
        n_text = len(self.tokenizer(sentence.text, add_special_tokens=False)["input_ids"])
        types_here = n_types if fmt.turn == "multi" else 1
        return min(fmt.writing.answer_budget(n_text, types_here), self.cfg.max_new_tokens_cap)

    def next_turn_ids(self, chat: list[dict[str, str]], question: str) -> list[int]:
        """Tokens between an assistant answer's content and the next answer: the end of that
        turn, the next user turn and the generation prompt, as the chat template writes them."""
        text = render_chat(
            self.tokenizer,
            [
                *chat,
                {"role": "assistant", "content": ANSWER_MARKER},
                {"role": "user", "content": question},
            ],
            add_generation_prompt=True,
        )
        return encode(self.tokenizer, text[text.rindex(ANSWER_MARKER) + len(ANSWER_MARKER) :])

    def _answer_end_id(self) -> int | None:
        """The end token the chat template writes right after an answer (drafted last)."""
        after = self.next_turn_ids([{"role": "user", "content": "x"}], "y")
        return after[0] if after and after[0] in self.end_ids else None

    def _prefix(self, fmt: Format, types: list[str]) -> list[int] | None:
        """The prompt tokens every sentence of `fmt` asked for `types` starts with."""
        if not self.cfg.prefix_cache:
            return None

        def prompt_for(text: str) -> list[int]:
            first = fmt.questions(text, types)[0]
            return prompt_ids(self.tokenizer, [*fmt.opening(), {"role": "user", "content": first}])

        return self.prefixes.prefix_ids(f"{fmt.name}\x00{types}", prompt_for)

    def extract(
        self, sentences: Sequence[Sentence], fmt: Format | str, types: Sequence[str]
    ) -> list[Generation]:
        """Generate every turn of `fmt` for each sentence and parse the answers, for the
        entity types `types`: asked in the groups the model was trained on (`routing`), one
        question per group, the answers of all groups joined in one Generation per sentence.
        The groups of all sentences are rows of the same batches: a lone request to a
        multi-corpus model asks its six groups in one batch's passes, not in six batches."""
        fmt = get_format(fmt) if isinstance(fmt, str) else fmt
        types = list(types)
        plan = ask_plan(types, self.type_groups) if self.type_groups else [types]
        if plan == [types]:
            return self._extract(sentences, fmt, [types] * len(sentences))
        n = len(sentences)
        asked = self._extract(
            [s for _ in plan for s in sentences], fmt, [group for group in plan for _ in sentences]
        )
        per_group = [asked[k * n : (k + 1) * n] for k in range(len(plan))]
        return [join_generations(list(gens), types) for gens in zip(*per_group, strict=True)]

    def _extract(
        self, sentences: Sequence[Sentence], fmt: Format, asked: Sequence[list[str]]
    ) -> list[Generation]:
        """Every turn of `fmt` for each sentence, asked for its types `asked[i]` in one
        question.

        Rows are batched by their number of turns (a `conv` row asks a question per type),
        then by prompt length (less padding); a batch keeps its rows for all the turns of a
        `conv` format, so the cache of one turn serves the next."""
        pairs = list(zip(sentences, asked, strict=True))
        budgets = [self.answer_budget(fmt, s, len(t)) for s, t in pairs]
        questions = [fmt.questions(s.text, t) for s, t in pairs]
        order = sorted(
            range(len(sentences)), key=lambda i: (len(questions[i]), len(questions[i][0]))
        )
        generations: dict[int, Generation] = {}  # sentence index -> its generation
        turn_types = [fmt.turn_types(t) for t in asked]
        writing = fmt.writing
        constrained = self.cfg.constrained and writing.constrainable
        prefixes = [self._prefix(fmt, t) if self.cfg.decoder == "biogner" else None for t in asked]
        for chunk in batches(order, [len(q) for q in questions], self.cfg.batch_size):

            def constraint_for(row: int, turn: int, chunk: list[int] = chunk) -> RowConstraint:
                return RowConstraint(
                    self.vocabulary(),
                    writing,
                    sentences[chunk[row]],
                    turn_types[chunk[row]][turn],
                    overruled=self.cfg.overruled,
                )

            chats = [fmt.opening() for _ in chunk]
            chunk_questions = [questions[i] for i in chunk]
            allowed = [budgets[i] for i in chunk]
            if self.cfg.decoder == "hf":
                done = reference.conversation(
                    self, chats, chunk_questions, allowed, constraint_for if constrained else None
                )
            else:
                done = decode.conversation(
                    self,
                    chats,
                    chunk_questions,
                    allowed,
                    constraint_for if constrained else None,
                    self._drafter_for(
                        writing, [sentences[i] for i in chunk], [turn_types[i] for i in chunk]
                    ),
                    [prefixes[i] for i in chunk],
                    checked=constrained and counts_items(writing),
                )
            for i, result in zip(chunk, done, strict=True):
                generation = self._generation(sentences[i], result, fmt, asked[i])
                generations[i] = generation
                if self.cfg.mention_memory and writing.restates_sentence:
                    self.memory.learn(sentences[i], generation.parse.spans, asked[i])
        return [generations[i] for i in range(len(sentences))]

    def _drafter_for(
        self, writing: Writing, sentences: list[Sentence], turn_types: list[list[list[str]]]
    ) -> Callable[[int, int], Drafter] | None:
        """Speculation's drafters: the restatement for writings that restate the sentence,
        the sentence's text after a begun mention for those that quote mentions."""
        if writing.restates_sentence:
            end, length = self.answer_end_id, self.cfg.copy_draft_tokens
            if end is None or not length:
                return None

            def copy_for(row: int, turn: int) -> Drafter:
                types, sentence = turn_types[row][turn], sentences[row]
                guesses = self.memory.guesses(sentence, types) if self.cfg.mention_memory else []
                return CopyDrafter(self.tokenizer, writing, sentence, types, end, length, guesses)

            return copy_for
        if not self.cfg.mention_draft_tokens:
            return None

        def mention_for(row: int, turn: int) -> Drafter:
            return MentionDrafter(
                self.tokenizer, sentences[row].text, self.cfg.mention_draft_tokens
            )

        return mention_for

    def _generation(
        self, sentence: Sentence, result: list[Turn], fmt: Format, types: list[str]
    ) -> Generation:
        parse = fmt.parse([t.text for t in result], sentence, types)
        parse.overruled = sum(t.overruled for t in result)
        parse.dropped = sum(t.dropped for t in result)
        if self.cfg.scores:
            parse.scores = span_scores(parse, result, self.vocabulary())
        return Generation(
            sentence,
            [t.text for t in result],
            parse,
            # the end token of each finished answer was generated too
            sum(len(t.tokens) + (not t.hit_budget) for t in result),
            any(t.hit_budget for t in result),
            [t.tokens for t in result],
        )


def join_generations(parts: list[Generation], types: list[str]) -> Generation:
    """One sentence's generations for several type groups as one, keeping the spans of the
    requested `types` (a group asked whole may answer types nobody requested)."""
    wanted = set(types)
    parse = ParseResult()
    answers = 0
    for part in parts:
        parse.extend(part.parse, answer=answers)
        answers += len(part.answers)
    unrequested = [s for s in parse.spans if s.label not in wanted]
    parse.spans = [s for s in parse.spans if s.label in wanted]
    parse.scores = {s: v for s, v in parse.scores.items() if s.label in wanted}
    parse.predicted_mentions = max(0, parse.predicted_mentions - len(unrequested))
    return Generation(
        parts[0].sentence,
        [a for part in parts for a in part.answers],
        parse.finish(),
        sum(part.generated_tokens for part in parts),
        any(part.truncated for part in parts),
        [t for part in parts for t in part.answer_tokens],
    )


def batches(order: Sequence[int], turns: Sequence[int], size: int) -> list[list[int]]:
    """`order` cut into batches of at most `size` rows, each of rows with one number of
    turns (`turns[i]`): both decode loops run every row of a batch through the same turns."""
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < size and turns[out[-1][0]] == turns[i]:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def counts_items(writing: Writing) -> bool:
    """The writing counts the items constrained decoding steered (term, triple, json), so
    a forced token's logits are still computed to know whether the model chose it."""
    return type(writing).without_items is not Writing.without_items
