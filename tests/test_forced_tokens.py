"""Forced tokens at a budget's end: a writing that counts steered items must still learn
whether the model would have chosen the last token (bench/generation.py found answers that
differed from step-by-step decoding only in that count, and so in the items dropped)."""

from __future__ import annotations

import pytest

from biogner.formats import get_format
from biogner.generation.constraints import RowConstraint, Vocabulary
from biogner.generation.forced import extend_forced
from biogner.generation.row import Row
from biogner.types import Sentence

TEXT = "Whereas mice exhibit brain abnormalities ."
# listed once already and found once: a second listing cannot end there, it must go on
WRITTEN = "brain abnormalities\nbrain abnormalities"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from biogner.models.load import resolve_model_dir

    return AutoTokenizer.from_pretrained(resolve_model_dir("tiny-llama"))


def row_after(tokenizer, room: int) -> tuple[Row, list[int]]:
    """A term answer that wrote WRITTEN, with `room` tokens of budget left."""
    end = tokenizer.eos_token_id
    vocab = Vocabulary(tokenizer, len(tokenizer), [end])
    sentence = Sentence("s", TEXT, TEXT.split(), [])
    constraint = RowConstraint(vocab, get_format("multi_term").writing, sentence, ["Disease"])
    written = tokenizer(WRITTEN, add_special_tokens=False)["input_ids"]
    row = Row([], 10, len(written) + room, frozenset([end]), constraint, None)
    for token in written:
        assert constraint.allows(token)
        row.commit(token)
    row.feed, row.fed_generated = [written[-1]], True
    return row, written


def test_the_stretch_is_forced(tokenizer) -> None:
    row, written = row_after(tokenizer, room=8)
    extend_forced(row, frozenset([tokenizer.eos_token_id]), checked=True)
    assert len(row.feed) > 1 and row.checks, "the grammar forces the rest of the sentence"
    assert tokenizer.decode(row.tokens[len(written) :]).strip() == "."


def test_a_forced_token_that_ends_the_budget_is_left_to_an_ordinary_step(tokenizer) -> None:
    row, written = row_after(tokenizer, room=1)
    extend_forced(row, frozenset([tokenizer.eos_token_id]), checked=True)
    # appended, the row would finish with its check pending: no pass would compute it
    assert row.feed == [written[-1]] and not row.checks and not row.finished
    unchecked, _ = row_after(tokenizer, room=1)
    extend_forced(unchecked, frozenset([tokenizer.eos_token_id]), checked=False)
    assert unchecked.finished  # nothing to check: forced as before
