"""Constrained decoding: a writing's grammar for one sentence -> a token mask at every step.

The engine is llguidance (bench/constrain_engines.py compares it with xgrammar and
outlines-core on this project's grammars: it compiles a sentence's grammar in milliseconds
and needs no other package). Per answer, a `RowConstraint` holds a matcher that consumes each
generated token and yields the next mask; `ConstrainedLogits` applies the masks of a batch
inside HF `generate`, so greedy decoding is unchanged wherever the model's own choice was
allowed (disallowed tokens get -inf, nothing else moves).

What a grammar cannot count is handled here: a writing may say which items of an answer
are spent (`Writing.spent`: a term line or a json object whose mention is listed as often as
it occurs). When an item is spent, the row's matcher is rebuilt for the rest of the answer
with it excluded (`Writing.grammar(..., spent=...)`, continuation form).

Where the grammar overrules the model (its own greedy choice is a token the grammar forbids,
so the mask picks another), what follows is the grammar's steering, not the model's reading:
a model about to invent `taurothrombocytic leukaemia` is steered into the longest span that
starts like it, one repeating a spent mention into `FAP )`; but also a misspelt one into the
right spelling. Every row records where this happens, and the items (lines, objects) that
hold such a token are counted (`overruled_rate`). A case the grammar sets right (`ataxia` ->
`Ataxia`) is not an overrule. What `generation.overruled` does with them: `keep`; `drop`
every steered item; or, the default, `drop_unended`: drop the items the model tried to end
where the grammar would not let it (a spent mention, a mention cut mid-word: what follows is
stretched by the grammar, rarely a gold mention). Chosen on the whole dev split
(bench/results/archive/quality.md, "What the constraint does where it overrules the model").

An answer cut by its token budget is completed by its writing (`Writing.complete`: the
rest of a restated sentence) or cut back to its longest prefix the grammar accepts
(`RowConstraint.finish`), so a constrained answer always parses.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor

from biogner.formats.base import Writing
from biogner.types import Sentence


class Vocabulary:
    """The model's vocabulary as llguidance sees it: built once per model (about a second)."""

    def __init__(self, tokenizer: Any, vocab_size: int, end_ids: Sequence[int]) -> None:
        import llguidance.hf

        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.end_ids = set(end_ids)
        self.ll = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=vocab_size, eos_token=sorted(end_ids)
        )

    def matcher(self, grammar: str) -> Any:
        import llguidance

        m = llguidance.LLMatcher(self.ll, llguidance.LLMatcher.grammar_from_lark(grammar))
        if m.is_error():
            raise ValueError(f"constraint grammar rejected: {m.get_error()}\n{grammar[:2000]}")
        return m


def spells_alike(wanted: str, chosen: str) -> bool:
    """Whether two token texts spell the same letters, up to case and surrounding spaces, as
    far as the shorter goes (`ata` / `At`, `P` / `p`): the grammar set a case right, it did
    not change the word."""
    a, b = wanted.strip().casefold(), chosen.strip().casefold()
    return bool(a and b) and (a.startswith(b) or b.startswith(a))


def char_starts(vocab: Vocabulary, tokens: list[int]) -> list[int]:
    """Where each token starts in the decoded text (and, last, its length), in one pass
    over the tokens' bytes: a weak model is overruled at most steps, and decoding a prefix
    per overrule would cost the square of the answer's length. A tokenizer whose text is
    not its tokens' bytes (a SentencePiece `▁`) takes the slow, exact way."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    starts, parts = [0], []
    for token in tokens:  # a character split across tokens counts from the one ending it
        parts.append(decoder.decode(vocab.ll.decode_bytes([token])))
        starts.append(starts[-1] + len(parts[-1]))
    parts.append(decoder.decode(b"", final=True))
    starts[-1] += len(parts[-1])
    decode = vocab.tokenizer.decode
    if "".join(parts) != decode(tokens):
        return [len(decode(tokens[:k])) for k in range(len(tokens) + 1)]
    return starts


class RowConstraint:
    """One answer being generated under its writing's grammar for its sentence."""

    def __init__(
        self,
        vocab: Vocabulary,
        writing: Writing,
        sentence: Sentence,
        types: Sequence[str],
        overruled: str = "keep",
    ) -> None:
        self.vocab = vocab
        self.writing = writing
        self.sentence = sentence
        self.types = list(types)
        self.tokens: list[int] = []
        self.matcher = vocab.matcher(writing.grammar(sentence, types) or "")
        self.accepting = [0] if self.matcher.is_accepting() else []
        self.spent: list[str] = []
        self.valid = 0  # tokens the grammar allowed, from the start
        self.done = False  # an end token was generated, or nothing but one is allowed
        self.failed = False  # the matcher refused a token: the answer is cut at `accepting`
        self.policy = overruled  # GenerationConfig.overruled: keep, drop_unended or drop
        self.overruled: list[int] = []  # positions where the mask overruled the model's choice
        self.unended: list[int] = []  # those where the model's choice would end its item

    def overrule(self, wanted: int, chosen: int, at: int | None = None) -> None:
        """The mask replaced the model's choice `wanted` by `chosen` (the greedy pick among
        the allowed tokens) at the next position. Only the letter case set right (the model
        lowercasing `Ataxia` at a sentence's start) does not count: that mention is still the
        model's own. Where `wanted` would have ended the item (an end token, or the writing's
        `mention_ends`), the grammar would not let the model stop: what follows is stretched.
        `at`: the position of `chosen` in the answer when it was consumed already (a forced
        token checked after the forward pass that computed its logits)."""
        decode = self.vocab.tokenizer.decode
        text = decode([wanted])
        if spells_alike(text, decode([chosen])):
            return
        position = len(self.tokens) if at is None else at
        self.overruled.append(position)
        if wanted in self.vocab.end_ids or any(end in text for end in self.writing.mention_ends):
            self.unended.append(position)

    def allows(self, token: int) -> bool:
        """Whether the mask allows `token` next: the model's own greedy choice is checked
        this way (microseconds) before a whole mask is computed (up to milliseconds).
        Where the grammar forces the next bytes, llguidance's mask keeps only their
        canonical tokenization (`n` + `ot`, not `n` + `o` + `t`) while the token alone
        would be accepted: there the mask itself decides (tests/test_constrain.py)."""
        if self.failed:
            return token in self.vocab.end_ids
        if token in self.vocab.end_ids:
            return bool(self.allowed()[token])
        if self.matcher.validate_tokens([token]) != 1:
            return False
        if not self.matcher.compute_ff_tokens():
            return True
        return bool(self.allowed()[token])

    def _bitmask(self) -> torch.Tensor:
        """The next token's mask, 32 tokens a word (llguidance's layout)."""
        bitmask = torch.zeros((1, (self.vocab.vocab_size + 31) // 32), dtype=torch.int32)
        self.fill(bitmask, 0)
        return bitmask[0]

    def allowed(self) -> torch.Tensor:
        """The next token's mask as booleans over the vocabulary."""
        bits = (self._bitmask().unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
        return bits.reshape(-1)[: self.vocab.vocab_size].bool()

    def allowed_bits(self) -> np.ndarray:
        """The next token's mask as 0/1 bytes over the vocabulary (numpy: a dot product with
        a probability row costs microseconds, where a boolean tensor costs tens)."""
        bits = np.unpackbits(self._bitmask().numpy().view(np.uint8), bitorder="little")
        return bits[: self.vocab.vocab_size]

    def only_allowed(self) -> int | None:
        """The one token the grammar allows next, if it allows exactly one: greedy decoding
        picks it whatever the model computes (`forced tokens`)."""
        bitmask = self._bitmask()
        words = bitmask.nonzero()
        if len(words) != 1:
            return None
        word = int(words[0])
        bits = int(bitmask[word]) & 0xFFFFFFFF
        if bits & (bits - 1):
            return None
        token = word * 32 + bits.bit_length() - 1
        return token if token < self.vocab.vocab_size else None

    def consume(self, token: int) -> None:
        if token in self.vocab.end_ids:
            self.done = True
            return
        self.tokens.append(token)
        if self.failed:
            return
        if not self.matcher.consume_token(token):
            self.failed = True
            return
        self.valid = len(self.tokens)
        end = self.writing.item_end
        if end is not None and end in self.vocab.tokenizer.decode([token]):
            self._respend()
        if not self.failed and self.matcher.is_accepting():
            self.accepting.append(len(self.tokens))

    def _respend(self) -> None:
        """Rebuild the matcher without the items now spent, and replay what follows them."""
        written = self.vocab.tokenizer.decode(self.tokens)
        spent, resume = self.writing.spent(written, self.sentence, self.types)
        new = [item for item in spent if item not in self.spent]
        if not new:
            return
        self.spent += new
        grammar = self.writing.grammar(self.sentence, self.types, spent=self.spent)
        assert grammar is not None
        self.matcher = self.vocab.matcher(grammar)
        rest = written[resume:].encode()
        if not self.matcher.consume_tokens(self.vocab.ll.tokenize_bytes(rest)):
            self.failed = True

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        import llguidance.torch

        if self.failed:  # only an end token: the answer is cut back when it is read
            bitmask[row] = 0
            for end in self.vocab.end_ids:
                bitmask[row, end // 32] |= 1 << (end % 32)
            return
        llguidance.torch.fill_next_token_bitmask(self.matcher, bitmask, row)

    def cut(self, n_tokens: int) -> int:
        """Tokens of the longest accepted prefix within the first `n_tokens` generated."""
        if not self.failed and n_tokens == len(self.tokens) and self.done:
            return n_tokens
        return max((n for n in self.accepting if n <= n_tokens), default=0)

    def finish(self, answer: list[int], ended: bool) -> tuple[list[int], str, int, int]:
        """The answer as read: its tokens, its text, how many of its items hold a token the
        grammar chose against the model's choice (`Writing.without_items`), and how many
        items the policy dropped from the text (`drop`: those; `drop_unended`: those the
        model tried to end). An answer that ended under the grammar is whole; one cut by
        its budget is completed by its writing (`Writing.complete`) or cut back to the
        longest prefix the grammar accepts."""
        tokens, completed = self._whole(answer, ended)
        text = completed if completed is not None else self.vocab.tokenizer.decode(tokens)
        if not any(p < len(tokens) for p in self.overruled):
            return tokens, text, 0, 0
        starts = char_starts(self.vocab, tokens)

        def ranges(marks: list[int]) -> list[tuple[int, int]]:
            return [
                (starts[p], max(starts[p + 1], starts[p] + 1)) for p in marks if p < len(tokens)
            ]

        steered_ranges = ranges(self.overruled)
        without_steered, steered = self.writing.without_items(text, steered_ranges)
        if self.policy == "drop":
            return tokens, without_steered, steered, steered
        if self.policy == "drop_unended":
            kept, dropped = self.writing.without_items(text, ranges(self.unended))
            return tokens, kept, steered, dropped
        return tokens, text, steered, 0

    def _whole(self, answer: list[int], ended: bool) -> tuple[list[int], str | None]:
        """(tokens, the text when the writing had to complete it; None: decode the tokens)."""
        if ended and not self.failed:
            return answer, None
        valid = min(len(answer), self.valid)
        tokenizer = self.vocab.tokenizer
        prefix = tokenizer.decode(answer[:valid])
        while valid and prefix.endswith("\ufffd"):  # a character cut between its bytes
            valid -= 1
            prefix = tokenizer.decode(answer[:valid])
        completed = self.writing.complete(prefix, self.sentence, self.types)
        if completed is not None:
            return answer[:valid], completed
        return answer[: self.cut(len(answer))], None


class ConstrainedLogits(LogitsProcessor):
    """Masks the scores of every constrained row of a `generate` batch at every step."""

    def __init__(self, rows: Sequence[RowConstraint | None], prompt_width: int) -> None:
        self.rows = list(rows)
        self.prompt_width = prompt_width
        self.bitmask: torch.Tensor | None = None
        self._shifts: torch.Tensor | None = None

    def consume_last(self, generated: torch.Tensor) -> None:
        """After `generate`: each row still decoding reads the last token generated, which
        no step consumed (it was chosen at the last step)."""
        if generated.shape[1] == 0:
            return
        for row, state in enumerate(self.rows):
            if state is not None and not state.done and len(state.tokens) < generated.shape[1]:
                state.consume(int(generated[row, -1]))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] > self.prompt_width:
            last = input_ids[:, -1].tolist()
            for row, state in enumerate(self.rows):
                if state is not None and not state.done:
                    state.consume(int(last[row]))
        active = [r for r, s in enumerate(self.rows) if s is not None and not s.done]
        if not active:
            return scores
        words = (scores.shape[1] + 31) // 32
        if self.bitmask is None or self.bitmask.shape[1] != words:
            self.bitmask = torch.zeros((len(self.rows), words), dtype=torch.int32)
            self._shifts = torch.arange(32, dtype=torch.int32)
        for row in active:
            state = self.rows[row]
            assert state is not None
            state.fill(self.bitmask, row)
        assert self._shifts is not None
        idx = torch.tensor(active)
        bits = (self.bitmask[idx].unsqueeze(-1) >> self._shifts) & 1
        allowed = bits.reshape(len(active), -1)[:, : scores.shape[1]].bool()
        wanted = scores.argmax(-1).cpu()[idx]  # the model's own greedy choices
        wanted_ok = allowed.gather(1, wanted.unsqueeze(1)).squeeze(1).tolist()
        scores[idx] = scores[idx].masked_fill(~allowed.to(scores.device), float("-inf"))
        if not all(wanted_ok):
            chosen = scores.argmax(-1).cpu()[idx].tolist()
            for k, row in enumerate(active):
                state = self.rows[row]
                if not wanted_ok[k] and state is not None:
                    state.overrule(int(wanted[k]), chosen[k])
        return scores
