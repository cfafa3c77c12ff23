"""Constrained decoding: whatever a model's logits say, a constrained answer parses without a
problem and mentions only spans of its sentence; where the model's own greedy choice was
already valid, the constraint changes nothing.

The model is tiny-llama with its weights redrawn large (noise logits: with the default small
init it repeats one token whatever it reads); sentences come from every corpus."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import write_noise_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biogner.corpora import CORPORA, load_split
from biogner.formats import FORMATS, get_format
from biogner.generation import Generator
from biogner.generation.constraints import (
    ConstrainedLogits,
    RowConstraint,
    Vocabulary,
    char_starts,
    spells_alike,
)
from biogner.models.config import GenerationConfig
from biogner.types import Sentence, Span

CONSTRAINED = [name for name, fmt in FORMATS.items() if fmt.writing.constrainable]
# The formats whose answers restate the sentence once per type (a tag per token, the text
# with its mentions marked): a noise model's batches of them take tens of seconds on 2 cores,
# so their property runs are `slow` (`make test`); the other formats stay in `make test-fast`.
LONG_ANSWERS = {"conv_bio", "conv_inline"}
CONSTRAINED_FAST = [
    pytest.param(name, marks=pytest.mark.slow) if name in LONG_ANSWERS else name
    for name in CONSTRAINED
]


@pytest.fixture(scope="module")
def pool(data_dir: Path) -> list[tuple[Sentence, list[str]]]:
    """A few sentences of every corpus, with its entity types."""
    out = []
    for corpus in CORPORA.values():
        try:
            sentences = load_split(corpus, "dev", data_dir, limit=6)
        except FileNotFoundError:
            continue
        out += [(s, list(corpus.entity_types)) for s in sentences if s.tokens]
    assert len({types[0] for _, types in out}) > 3  # several corpora really loaded
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_noise_model(tmp_path_factory.mktemp("noise-tiny"), seed=1)


@pytest.fixture(scope="module")
def generators(model_dir: Path) -> dict[str, Generator]:
    """Free, constrained keeping every item, constrained as by default (dropping the items
    the grammar would not let the model end)."""
    settings = {
        "free": {"constrained": False},
        "keep": {"overruled": "keep"},
        "default": {},
    }
    return {
        name: Generator(
            model_dir, GenerationConfig(device="cpu", dtype="float32", batch_size=8, **kw)
        )
        for name, kw in settings.items()
    }


def test_the_constrained_formats() -> None:
    assert set(CONSTRAINED) == set(FORMATS)


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
@pytest.mark.parametrize("fmt", CONSTRAINED_FAST)
def test_constrained_answers_parse_and_mention_only_the_text(
    pool, generators, fmt: str, data: st.DataObject
) -> None:
    picks = data.draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=6))
    sentences = [pool[i] for i in picks]
    types = sentences[0][1]  # one corpus per batch, as evaluation and serving run
    batch = [s for s, t in sentences if t == types]
    kept = generators["keep"].extract(batch, fmt, types)
    dropped = generators["default"].extract(batch, fmt, types)
    free = generators["free"].extract(batch, fmt, types)
    for k, d, f in zip(kept, dropped, free, strict=True):
        for c in (k, d):
            assert c.parse.problems == [], (c.answers, c.parse.problems)
            assert c.parse.hallucinated == 0
            for span in c.parse.spans:
                assert span.label in types
                assert 0 <= span.start < span.end <= len(c.sentence.text)
        # the same tokens either way: dropping only removes whole items from the text
        assert k.answer_tokens == d.answer_tokens
        # the same items steered either way; dropping removes some of them, nothing else
        assert d.parse.overruled == k.parse.overruled
        assert 0 <= d.parse.dropped <= d.parse.overruled and k.parse.dropped == 0
        assert d.parse.predicted_mentions + d.parse.dropped == k.parse.predicted_mentions
        if not f.parse.problems and not f.truncated:  # the free answer was already valid
            assert k.answers == f.answers == d.answers and d.parse.overruled == 0


def scores_preferring(token: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn((1, vocab), generator=g)
    scores[0, token] = 50.0
    return scores


def teacher_force(
    vocabulary: Vocabulary, row: RowConstraint, tokens: list[int], end: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run the processor along `tokens` + end, each step's scores preferring that token:
    (scores before, scores after) per step."""
    proc = ConstrainedLogits([row], prompt_width=1)
    ids = torch.zeros((1, 1), dtype=torch.long)
    steps = []
    for k, token in enumerate([*tokens, end]):
        before = scores_preferring(token, vocabulary.vocab_size, k)
        after = proc(ids, before.clone())
        steps.append((before, after))
        ids = torch.cat([ids, torch.tensor([[int(after.argmax())]])], 1)
    return steps


@pytest.fixture(scope="module")
def vocabulary(generators) -> Vocabulary:
    return generators["default"].vocabulary()


@pytest.mark.parametrize("fmt", CONSTRAINED)
def test_a_valid_answer_passes_the_mask_unchanged(pool, vocabulary, fmt: str) -> None:
    """Teacher-forced gold answers: every gold token stays the argmax, with its score and
    every other allowed token's score untouched; disallowed tokens get -inf."""
    format_ = get_format(fmt)
    tok = vocabulary.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    checked = 0
    for sentence, types in pool[::3]:
        for turn, answer in zip(
            format_.turn_types(types), format_.answers(sentence, types), strict=True
        ):
            row = RowConstraint(vocabulary, format_.writing, sentence, turn)
            tokens = tok.encode(answer, add_special_tokens=False)
            for before, after in teacher_force(vocabulary, row, tokens, end):
                assert int(after.argmax()) == int(before.argmax())
                kept = torch.isfinite(after)
                assert torch.equal(after[kept], before[kept])
                assert 0 < int(kept.sum()) < vocabulary.vocab_size
            assert row.tokens == tokens and row.cut(len(tokens)) == len(tokens)
            checked += 1
    assert checked > 5


ITEMS = {  # (first item, separator, the start of a third listing) per writing
    "conv_term": ("cancer", "\n", "cancer"),
    "conv_json": ('[{"text": "cancer", "type": "Disease"}', ", ", '{"text": "cancer'),
}


@pytest.mark.parametrize("fmt", list(ITEMS))
def test_a_mention_is_never_listed_more_often_than_it_occurs(vocabulary, fmt: str) -> None:
    """`cancer` occurs twice: a third `cancer` item may start only to become the longer span
    `cancer and ...` (a grammar cannot count: the row rebuilds its matcher without the
    spent item)."""
    text = "cancer and breast cancer"
    sentence = Sentence("s", text, tuple(text.split()), (Span(0, 6, "Disease"),))
    writing = get_format(fmt).writing
    tok = vocabulary.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    first, sep, third = ITEMS[fmt]
    second = first.lstrip("[")

    def allowed_after(answer: str) -> torch.Tensor:
        row = RowConstraint(vocabulary, writing, sentence, ["Disease"])
        tokens = tok.encode(answer, add_special_tokens=False)
        steps = teacher_force(vocabulary, row, tokens, end)
        assert all(int(a.argmax()) == int(b.argmax()) for b, a in steps[:-1])  # all allowed
        return torch.isfinite(steps[-1][1][0])

    def first_token(piece: str) -> int:
        return tok.encode(piece, add_special_tokens=False)[0]

    closing = "" if fmt == "conv_term" else '", "type": "Disease"}'
    once = allowed_after(first + sep + third)
    assert once[first_token(closing)] if closing else once[end]  # a second one may end
    twice = allowed_after(first + sep + second + sep + third)
    if closing:
        assert not twice[first_token(closing)]  # a third one cannot be closed
    else:
        assert not twice[end] and not twice[first_token("\n")]
    assert twice[first_token(" and")]  # `cancer and ...` can
    whole = {"conv_term": "cancer\ncancer", "conv_json": f"{first}, {second}]"}[fmt]
    assert writing.parse(whole, sentence, ["Disease"]).problems == []
    over = {"conv_term": "cancer\ncancer\ncancer", "conv_json": f"{first}, {second}, {second}]"}
    assert writing.parse(over[fmt], sentence, ["Disease"]).problems != []


def overrule_case(vocabulary: Vocabulary) -> tuple[Sentence, Any]:
    text = "cancer and breast cancer"
    sentence = Sentence("s", text, tuple(text.split()), (Span(0, 6, "Disease"),))
    return sentence, get_format("conv_term").writing


def steer(vocabulary: Vocabulary, row: RowConstraint, wanted: list[int]) -> None:
    """Generate greedily under `row`'s mask, the model wanting `wanted` in turn then the end
    token; stop when the end token is picked."""
    end = vocabulary.tokenizer.convert_tokens_to_ids("<|im_end|>")
    proc = ConstrainedLogits([row], prompt_width=1)
    ids = torch.zeros((1, 1), dtype=torch.long)
    for k, token in enumerate([*wanted, *[end] * 40]):
        chosen = int(proc(ids, scores_preferring(token, vocabulary.vocab_size, k)).argmax())
        if chosen == end:
            return
        ids = torch.cat([ids, torch.tensor([[chosen]])], 1)
    raise AssertionError("never ended")


def test_an_overruled_choice_is_recorded_and_its_item_counted_or_dropped(vocabulary) -> None:
    """The model's choice after `cancer\n` is `tum` (no span starts so): the mask takes
    another token, the row records where, and the line it steered is counted; `drop` drops
    it, `keep` keeps it; the line the model wrote of its own accord stays."""
    sentence, writing = overrule_case(vocabulary)
    tok = vocabulary.tokenizer
    own = tok.encode("cancer\n", add_special_tokens=False)
    invented = tok.encode("tumour", add_special_tokens=False)[0]
    row = RowConstraint(vocabulary, writing, sentence, ["Disease"], overruled="keep")
    steer(vocabulary, row, [*own, invented])
    assert row.tokens[: len(own)] == own and row.tokens[len(own)] != invented
    assert row.overruled[0] == len(own) and min(row.overruled) == len(own)
    assert len(own) not in row.unended  # `tum` would not have ended the line
    whole = tok.decode(row.tokens)
    assert whole.startswith("cancer\n") and len(whole.split("\n")) == 2
    assert writing.parse(whole, sentence, ["Disease"]).problems == []
    assert row.finish(row.tokens, ended=True) == (row.tokens, whole, 1, 0)
    row.policy = "drop"
    assert row.finish(row.tokens, ended=True) == (row.tokens, "cancer", 1, 1)


def test_an_item_the_grammar_would_not_let_end_is_dropped_by_default(vocabulary) -> None:
    """`cancer` occurs twice: a third `cancer` cannot end (the parser would read it once too
    often), so the model's newline is refused and the line is stretched into `cancer and`:
    recorded as unended, and dropped by the default policy."""
    sentence, writing = overrule_case(vocabulary)
    tok = vocabulary.tokenizer
    own = tok.encode("cancer\ncancer\ncancer", add_special_tokens=False)
    newline = tok.encode("\n", add_special_tokens=False)
    assert GenerationConfig().overruled == "drop_unended"
    row = RowConstraint(vocabulary, writing, sentence, ["Disease"], overruled="drop_unended")
    steer(vocabulary, row, [*own, *newline])
    assert row.tokens[: len(own)] == own and row.unended == [len(own)] == row.overruled
    stretched = tok.decode(row.tokens)
    assert stretched.startswith("cancer\ncancer\ncancer ")
    assert row.finish(row.tokens, ended=True) == (row.tokens, "cancer\ncancer", 1, 1)


def test_token_starts_in_one_pass_match_decoding_each_prefix(vocabulary) -> None:
    """The steered items are located from each token's start in the text; one pass over the
    bytes gives what decoding every prefix gives (where a prefix does not end mid-character)."""
    tok = vocabulary.tokenizer
    for answer in ["cancer\nbreast cancer", "Behçet's disease\nα-thalassemia\n腫瘍 ( 癌 )", ""]:
        tokens = tok.encode(answer, add_special_tokens=False)
        starts = char_starts(vocabulary, tokens)
        assert len(starts) == len(tokens) + 1 and starts[-1] == len(tok.decode(tokens))
        for k in range(len(tokens) + 1):
            prefix = tok.decode(tokens[:k])
            if not prefix.endswith("\ufffd"):
                assert starts[k] == len(prefix), (answer, k)


@pytest.mark.parametrize(
    ("wanted", "chosen", "alike"),
    [
        ("ata", "At", True),
        ("P", "p", True),
        (" cancer", "Cancer", True),
        ("itis", "ic", False),
        ("\n", " )", False),
        ("t", "\n", False),
        ("", "a", False),
    ],
)
def test_a_case_set_right_is_not_an_overrule(wanted: str, chosen: str, alike: bool) -> None:
    assert spells_alike(wanted, chosen) is alike


def test_an_answer_cut_by_its_budget_still_parses(pool, model_dir: Path) -> None:
    tight = Generator(
        model_dir,
        GenerationConfig(device="cpu", dtype="float32", max_new_tokens_cap=3, batch_size=8),
    )
    sentences = [s for s, t in pool if t == pool[0][1]]
    out = tight.extract(sentences, "conv_term", pool[0][1])
    assert any(g.truncated for g in out)
    assert all(g.parse.problems == [] and g.parse.hallucinated == 0 for g in out)


@pytest.mark.parametrize("fmt", ["conv_inline", "conv_bio", "multi_json"])
def test_an_answer_cut_anywhere_is_completed_into_a_whole_one(pool, vocabulary, fmt: str) -> None:
    """An inline/bio answer cut by its budget mid-word, mid-markup or mid-tag is finished
    by its writing (the result extends the prefix); a json list is closed after its last
    whole object. The grammar accepts the result and it parses."""
    format_ = get_format(fmt)
    tok = vocabulary.tokenizer
    for sentence, types in pool[::4]:
        turn = format_.turn_types(types)[0]
        gold = format_.answers(sentence, types)[0]
        assert format_.writing.complete(gold, sentence, turn) == gold
        for k in range(0, len(gold), 3):
            whole = format_.writing.complete(gold[:k], sentence, turn)
            assert whole is not None
            if fmt != "multi_json":
                assert whole.startswith(gold[:k])
            parse = format_.writing.parse(whole, sentence, turn)
            assert parse.problems == [], (gold[:k], whole)
            matcher = vocabulary.matcher(format_.writing.grammar(sentence, turn) or "")
            assert matcher.consume_tokens(tok.encode(whole, add_special_tokens=False))
            assert matcher.is_accepting()


@pytest.mark.parametrize("fmt", CONSTRAINED)
def test_the_quick_check_of_a_token_agrees_with_the_mask(pool, vocabulary, fmt: str) -> None:
    """`RowConstraint.allows` (what decoding asks before computing a whole mask) says what
    the mask says, for the gold token, random tokens and allowed ones, at every step of gold
    answers: also where the grammar forces bytes and llguidance's mask keeps only their
    canonical tokenization (`n` + `ot`) while `validate_tokens` alone accepts `n` + `o`."""
    format_ = get_format(fmt)
    tok = vocabulary.tokenizer
    rng = random.Random(fmt)
    checked = 0
    for sentence, types in pool[::3]:
        for turn, answer in zip(
            format_.turn_types(types), format_.answers(sentence, types), strict=True
        ):
            row = RowConstraint(vocabulary, format_.writing, sentence, turn)
            letters = [tok.convert_tokens_to_ids(c) for c in set(answer) if c.isascii()]
            letters = [t for t in letters if isinstance(t, int) and t != tok.unk_token_id]
            for token in tok.encode(answer, add_special_tokens=False):
                allowed = row.allowed()
                shown = allowed.nonzero().flatten()[:8].tolist()
                guesses = [rng.randrange(vocabulary.vocab_size) for _ in range(8)]
                for candidate in [token, *shown, *guesses, *letters, *vocabulary.end_ids]:
                    assert row.allows(candidate) == bool(allowed[candidate]), (answer, candidate)
                    checked += 1
                only = row.only_allowed()
                assert (only is not None) == (int(allowed.sum()) == 1)
                assert only is None or bool(allowed[only])
                row.consume(token)
    assert checked > 500
