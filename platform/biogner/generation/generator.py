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

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from biogner.chat_tokens import encode, prompt_ids
from biogner.formats import Format, get_format
from biogner.formats.base import ParseResult, Writing
from biogner.generation import decode, reference, stream
from biogner.generation.answer import Turn
from biogner.generation.attention import use_gqa_kernel
from biogner.generation.constraints import RowConstraint, Vocabulary
from biogner.generation.memory import MentionMemory
from biogner.generation.packed import pack_linears
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
        if self.cfg.packed_linear and self.device.type == "cpu":
            pack_linears(self.model)  # (what quantization left: the LM head)
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
        checked = constrained and counts_items(writing)
        prefixes = [self._prefix(fmt, t) if self.cfg.decoder == "biogner" else None for t in asked]

        def constraint(i: int, turn: int) -> RowConstraint | None:
            return self._constraint(writing, sentences[i], turn_types[i][turn])

        def drafter(i: int, turn: int) -> Drafter | None:
            return self._drafter(writing, sentences[i], turn_types[i][turn])

        def record(i: int, result: list[Turn]) -> None:
            generations[i] = self._generation(sentences[i], result, fmt, asked[i])

        if self._streams():  # one-turn rows: a stream that rows join as others leave
            pending = iter([i for i in order if len(questions[i]) == 1])
            order = [i for i in order if len(questions[i]) > 1]
            self._stream(
                fmt,
                lambda room: [(i, sentences[i], asked[i]) for i in itertools.islice(pending, room)],
                generations.__setitem__,
            )
        for chunk in batches(order, [len(q) for q in questions], self.cfg.batch_size):
            chats = [fmt.opening() for _ in chunk]
            chunk_questions = [questions[i] for i in chunk]
            allowed = [budgets[i] for i in chunk]

            def row_constraint(
                row: int, turn: int, chunk: list[int] = chunk
            ) -> RowConstraint | None:
                return constraint(chunk[row], turn)

            def row_drafter(row: int, turn: int, chunk: list[int] = chunk) -> Drafter | None:
                return drafter(chunk[row], turn)

            if self.cfg.decoder == "hf":
                done = reference.conversation(
                    self, chats, chunk_questions, allowed, row_constraint if constrained else None
                )
            else:
                done = decode.conversation(
                    self,
                    chats,
                    chunk_questions,
                    allowed,
                    row_constraint if constrained else None,
                    row_drafter,
                    [prefixes[i] for i in chunk],
                    checked=checked,
                )
            for i, result in zip(chunk, done, strict=True):
                record(i, result)
        return [generations[i] for i in range(len(sentences))]

    def stream(
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

        Where every question is one turn (`rows_join`), sentences join the running batch as
        rows leave; otherwise they are taken a batch at a time."""
        fmt = get_format(fmt) if isinstance(fmt, str) else fmt
        types = list(types)
        plan = ask_plan(types, self.type_groups) if self.type_groups else [types]
        if not self._streams() or any(len(fmt.questions("x", group)) > 1 for group in plan):
            stream_in_batches(
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

        self._stream(fmt, asks, answered)

    def _stream(
        self,
        fmt: Format,
        intake: Callable[[int], list[tuple[int, Sentence, list[str]]]],
        done: Callable[[int, Generation], None],
    ) -> None:
        """One-turn questions decoded as a stream (`generation.stream`): `intake(room)` hands
        over up to `room` (key, sentence, the types asked in its one question)."""
        writing = fmt.writing
        constrained = self.cfg.constrained and writing.constrainable
        asked: dict[int, tuple[Sentence, list[str]]] = {}

        def asks(room: int) -> list[stream.Ask]:
            out = []
            for key, sentence, types in intake(room):
                asked[key] = (sentence, types)
                (turn,) = fmt.turn_types(types)  # the types of its one turn
                out.append(
                    stream.Ask(
                        key,
                        [
                            *fmt.opening(),
                            {"role": "user", "content": fmt.questions(sentence.text, types)[0]},
                        ],
                        self._prefix(fmt, types),
                        self.answer_budget(fmt, sentence, len(types)),
                        self._constraint(writing, sentence, turn),
                        self._drafter(writing, sentence, turn),
                    )
                )
            return out

        def answered(key: int, turn: Turn) -> None:
            sentence, types = asked.pop(key)
            done(key, self._generation(sentence, [turn], fmt, types))

        checked = constrained and counts_items(writing)
        stream.stream(self, asks, answered, self.cfg.batch_size, checked)

    def _streams(self) -> bool:
        """Whether one-turn rows are decoded as a stream (`stream`): biogner's loop with rows
        leaving and joining."""
        return self.cfg.decoder == "biogner" and self.cfg.rows_leave and self.cfg.rows_join

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
            end, length = self.answer_end_id, self.cfg.copy_draft_tokens
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


def stream_in_batches(
    extract: Callable[[list[Sentence]], list[Generation]],
    intake: Callable[[int], Sequence[tuple[int, Sentence]]],
    done: Callable[[int, Generation], None],
    size: int,
) -> None:
    """`Generator.stream` where sentences cannot join a running batch: what `intake` has,
    `size` at a time, each batch through `extract`."""
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


def counts_items(writing: Writing) -> bool:
    """The writing counts the items constrained decoding steered (term, triple, json), so
    a forced token's logits are still computed to know whether the model chose it."""
    return type(writing).without_items is not Writing.without_items
