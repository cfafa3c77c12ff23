"""The `Generator`: a model held in memory that extracts entities from sentences, in one
format, for evaluation, serving and extraction alike.

Prompts are sorted by length and batched; `conv_*` formats generate their turns in sequence
per sentence, batched across sentences. The answer budget is derived from the format's
writing and the sentence length, so a model cannot ramble on for ever, and a writing that
restates the sentence (inline, bio) gets room to do it. By default each answer is decoded
under its writing's grammar for its sentence (`constraints`), by biogner's decode loop
(`decode`; `generation.decoder: hf` runs transformers' `generate` instead, `reference`).

The `Generator` shapes the questions (prompts, budgets, grammars, drafts, the type groups
asked together) and reads the answers; the decoder its config names (`decoders`) decodes
them with the loaded model (`loaded.LoadedLM`), which is all the loops see of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from biogner.chat_tokens import prompt_ids
from biogner.formats import Format, get_format
from biogner.formats.base import Writing
from biogner.generation.answer import Turn
from biogner.generation.constraints import RowConstraint, Vocabulary
from biogner.generation.continuous import Ask
from biogner.generation.decoders import JoiningLoop, decoder_for
from biogner.generation.forced import counts_items
from biogner.generation.generated import Generation, join_generations
from biogner.generation.loaded import DecodeSettings, load_lm
from biogner.generation.memory import MentionMemory
from biogner.generation.routing import ask_plan
from biogner.generation.scores import span_scores
from biogner.generation.speculation import CopyDrafter, Drafter, MentionDrafter
from biogner.models.card import has_card, read_card
from biogner.models.config import GenerationConfig
from biogner.types import Sentence

# (one sentence's asks for the continuous loop: key, sentence, the types of its one question)
Asks = Callable[[int], list[tuple[int, Sentence, list[str]]]]


class Generator:
    """A model held in memory that extracts entities from sentences in one format.

    `cfg` may be replaced (`gen.cfg = ...`): the decoder and the loops' settings follow the
    new config; what loads the model (device, dtype, quantize, packed_linear, gqa_kernel,
    threads) keeps the first one's."""

    def __init__(self, model_dir: str | Path, cfg: GenerationConfig | None = None) -> None:
        cfg = cfg or GenerationConfig()
        self.model_dir = Path(model_dir)
        self.lm = load_lm(self.model_dir, cfg)
        self.cfg = cfg
        self._vocabulary: Vocabulary | None = None
        self.memory = MentionMemory()  # what this model marked so far: drafts mark it too
        # a biogner model's card; a bare HF directory (benches, tests) has none
        self.card = read_card(self.model_dir) if has_card(self.model_dir) else None
        self.type_groups = self.card.type_groups if self.card is not None else []

    @property
    def cfg(self) -> GenerationConfig:
        return self._cfg

    @cfg.setter
    def cfg(self, cfg: GenerationConfig) -> None:
        self._cfg = cfg
        self.decoder = decoder_for(cfg)  # chosen once per config, from the registry
        self.lm = self.lm.with_settings(DecodeSettings.of(cfg))

    @property
    def model(self) -> Any:
        """The loaded transformers model (quantized, packed as the config asked)."""
        return self.lm.model

    @property
    def tokenizer(self) -> Any:
        return self.lm.tokenizer

    @property
    def device(self) -> torch.device:
        return self.lm.device

    def vocabulary(self) -> Vocabulary:
        """The model's vocabulary for constrained decoding, built on first use."""
        if self._vocabulary is None:
            head = self.lm.head
            # (a dynamically quantized head has out_features and a weight() method)
            size = int(getattr(head, "out_features", 0) or head.weight.shape[0])
            self._vocabulary = Vocabulary(self.tokenizer, size, self.lm.end_ids)
        return self._vocabulary

    def answer_budget(self, fmt: Format, sentence: Sentence, n_types: int) -> int:
        """Most tokens one answer may take: the writing's budget for this sentence (and, in a
        multi-turn answer, all the types), within `max_new_tokens_cap`."""
        n_text = len(self.tokenizer(sentence.text, add_special_tokens=False)["input_ids"])
        types_here = n_types if fmt.turn == "multi" else 1
        return min(fmt.writing.answer_budget(n_text, types_here), self.cfg.max_new_tokens_cap)

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
        plan = self._plan(types)
        if plan == [types]:
            return self._ask(sentences, fmt, [types] * len(sentences))
        n = len(sentences)
        asked = self._ask(
            [s for _ in plan for s in sentences], fmt, [group for group in plan for _ in sentences]
        )
        per_group = [asked[k * n : (k + 1) * n] for k in range(len(plan))]
        return [join_generations(list(gens), types) for gens in zip(*per_group, strict=True)]

    def _plan(self, types: list[str]) -> list[list[str]]:
        """The type lists asked for `types` (`routing.ask_plan`; all in one without groups)."""
        return ask_plan(types, self.type_groups) if self.type_groups else [types]

    def _ask(
        self, sentences: Sequence[Sentence], fmt: Format, asked: Sequence[list[str]]
    ) -> list[Generation]:
        """Every turn of `fmt` for each sentence, asked for its types `asked[i]` in one
        question.

        Rows are batched by their number of turns (a `conv` row asks a question per type),
        then by prompt length (less padding); a batch keeps its rows for all the turns of a
        `conv` format, so the cache of one turn serves the next. With continuous batching
        (`decoders`), one-turn rows join a running batch instead."""
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
        checked = constrained and counts_items(writing)
        shared = self.decoder.shares_prefixes
        prefixes = [self._prefix(fmt, t) if shared else None for t in asked]
        loop = self.decoder.batch_continuously
        if loop is not None:  # one-turn rows: a running batch that rows join as others leave
            pending = iter([i for i in order if len(questions[i]) == 1])
            order = [i for i in order if len(questions[i]) > 1]
            self._join_continuously(
                loop,
                fmt,
                lambda room: [(i, sentences[i], asked[i]) for i in itertools.islice(pending, room)],
                generations.__setitem__,
            )
        for chunk in batches(order, [len(q) for q in questions], self.cfg.batch_size):

            def row_constraint(
                row: int, turn: int, chunk: list[int] = chunk
            ) -> RowConstraint | None:
                i = chunk[row]
                return self._constraint(writing, sentences[i], turn_types[i][turn])

            def row_drafter(row: int, turn: int, chunk: list[int] = chunk) -> Drafter | None:
                i = chunk[row]
                return self._drafter(writing, sentences[i], turn_types[i][turn])

            done = self.decoder.conversation(
                self.lm,
                [fmt.opening() for _ in chunk],
                [questions[i] for i in chunk],
                [budgets[i] for i in chunk],
                row_constraint if constrained else None,
                row_drafter,
                [prefixes[i] for i in chunk],
                checked,
            )
            for i, result in zip(chunk, done, strict=True):
                generations[i] = self._generation(sentences[i], result, fmt, asked[i])
        return [generations[i] for i in range(len(sentences))]

    def batch_continuously(
        self,
        fmt: Format | str,
        types: Sequence[str],
        intake: Callable[[int], Sequence[tuple[int, Sentence]]],
        done: Callable[[int, Generation], None],
    ) -> None:
        """Entities for sentences that arrive while others are decoded, for serving:
        `intake(room)` hands over up to `room` (key, sentence) pairs (none: nothing more
        now), `done(key, generation)` gets each as soon as it is done; returns once the
        intake is empty and every answer is done. The answers are those of `extract`.

        Where every question is one turn and the decoder batches continuously
        (`rows_join`), sentences join the running batch as rows leave; otherwise they are
        taken a batch at a time (`extract_in_batches`)."""
        fmt = get_format(fmt) if isinstance(fmt, str) else fmt
        types = list(types)
        plan = self._plan(types)
        loop = self.decoder.batch_continuously
        if loop is None or any(len(fmt.questions("x", group)) > 1 for group in plan):
            extract_in_batches(
                lambda batch: self.extract(batch, fmt, types), intake, done, self.cfg.batch_size
            )
            return
        parts: dict[int, dict[int, Generation]] = {}  # key -> its groups' generations so far

        def asks(room: int) -> list[tuple[int, Sentence, list[str]]]:
            out = []
            for key, sentence in intake(max(1, room // len(plan))):
                parts[key] = {}
                out += [(key * len(plan) + g, sentence, group) for g, group in enumerate(plan)]
            return out

        def answered(ask: int, generation: Generation) -> None:
            key, group = divmod(ask, len(plan))
            parts[key][group] = generation
            if len(parts[key]) == len(plan):
                got = parts.pop(key)
                whole = [got[g] for g in range(len(plan))]
                done(key, whole[0] if plan == [types] else join_generations(whole, types))

        self._join_continuously(loop, fmt, asks, answered)

    def _join_continuously(
        self,
        loop: JoiningLoop,
        fmt: Format,
        intake: Asks,
        done: Callable[[int, Generation], None],
    ) -> None:
        """One-turn questions decoded by continuous batching (`loop`, `generation.rows_join`):
        `intake(room)` hands over up to `room` (key, sentence, the types asked in its one
        question)."""
        writing = fmt.writing
        constrained = self.cfg.constrained and writing.constrainable
        asked: dict[int, tuple[Sentence, list[str]]] = {}

        def asks(room: int) -> list[Ask]:
            out = []
            for key, sentence, types in intake(room):
                asked[key] = (sentence, types)
                out.append(self._one_turn_ask(fmt, key, sentence, types))
            return out

        def answered(key: int, turn: Turn) -> None:
            sentence, types = asked.pop(key)
            done(key, self._generation(sentence, [turn], fmt, types))

        checked = constrained and counts_items(writing)
        loop(self.lm, asks, answered, self.cfg.batch_size, checked)

    def _one_turn_ask(self, fmt: Format, key: int, sentence: Sentence, types: list[str]) -> Ask:
        """A sentence's one-turn question, ready to join a running batch."""
        (turn,) = fmt.turn_types(types)  # the types of its one turn
        return Ask(
            key,
            [*fmt.opening(), {"role": "user", "content": fmt.questions(sentence.text, types)[0]}],
            self._prefix(fmt, types),
            self.answer_budget(fmt, sentence, len(types)),
            self._constraint(fmt.writing, sentence, turn),
            self._drafter(fmt.writing, sentence, turn),
        )

    def _prefix(self, fmt: Format, types: list[str]) -> list[int] | None:
        """The prompt tokens every sentence of `fmt` asked for `types` starts with."""
        if not self.cfg.prefix_cache:
            return None

        def prompt_for(text: str) -> list[int]:
            first = fmt.questions(text, types)[0]
            return prompt_ids(self.tokenizer, [*fmt.opening(), {"role": "user", "content": first}])

        return self.lm.prefixes.prefix_ids(f"{fmt.name}\x00{types}", prompt_for)

    def _constraint(
        self, writing: Writing, sentence: Sentence, types: list[str]
    ) -> RowConstraint | None:
        """One answer's grammar (None: decoded free, `constrained` off or a writing that
        has none)."""
        if not (self.cfg.constrained and writing.constrainable):
            return None
        return RowConstraint(
            self.vocabulary(), writing, sentence, types, overruled=self.cfg.overruled
        )

    def _drafter(self, writing: Writing, sentence: Sentence, types: list[str]) -> Drafter | None:
        """Speculation's drafter for one answer: the restatement for writings that restate
        the sentence (marking what the memory guesses), the sentence's text after a begun
        mention for those that quote mentions; None where drafting is off."""
        if writing.restates_sentence:
            end, length = self.lm.answer_end_id, self.cfg.copy_draft_tokens
            if end is None or not length:
                return None
            guesses = self.memory.guesses(sentence, types) if self.cfg.mention_memory else []
            return CopyDrafter(self.tokenizer, writing, sentence, types, end, length, guesses)
        if not self.cfg.mention_draft_tokens:
            return None
        return MentionDrafter(self.tokenizer, sentence.text, self.cfg.mention_draft_tokens)

    def _generation(
        self, sentence: Sentence, result: list[Turn], fmt: Format, types: list[str]
    ) -> Generation:
        parse = fmt.parse([t.text for t in result], sentence, types)
        if self.cfg.mention_memory and fmt.writing.restates_sentence:
            self.memory.learn(sentence, parse.spans, types)
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


def extract_in_batches(
    extract: Callable[[list[Sentence]], list[Generation]],
    intake: Callable[[int], Sequence[tuple[int, Sentence]]],
    done: Callable[[int, Generation], None],
    size: int,
) -> None:
    """`Generator.batch_continuously` where sentences cannot join a running batch: what
    `intake` has, `size` at a time, each batch through `extract`."""
    while items := list(intake(size)):
        found = extract([sentence for _, sentence in items])
        for (key, _), generation in zip(items, found, strict=True):
            done(key, generation)


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
