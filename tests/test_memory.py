"""The mention memory: what it guesses from the answers it learned, and that its guesses
change no answer (only how many forward passes a restating answer takes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import COPIER_TYPES
from hypothesis import given, settings
from hypothesis import strategies as st
from test_generation_property import assert_same
from test_speculation import CharTokenizer

from biogner.corpora import load_split
from biogner.formats import get_format
from biogner.generation import Generator
from biogner.generation.memory import MentionMemory
from biogner.generation.speculation import CopyDrafter, with_guesses
from biogner.models.config import GenerationConfig
from biogner.types import Sentence, Span


def sentence(text: str) -> Sentence:
    return Sentence.from_tokens("s", text.split())


def span_of(s: Sentence, words: str, label: str = "Disease") -> Span:
    start = s.text.index(words)
    return Span(start, start + len(words), label)


def texts(s: Sentence, spans: list[Span]) -> list[tuple[str, str]]:
    return [(s.text[x.start : x.end], x.label) for x in spans]


def test_a_marked_mention_is_guessed_where_it_occurs_again() -> None:
    memory = MentionMemory()
    first = sentence("Germline BRCA1 mutations cause breast cancer in women .")
    memory.learn(first, [span_of(first, "breast cancer")], ["Disease"])
    later = sentence("Breast cancer and breast cancer risk ; cancer of the breast")
    # exact text only (`Breast cancer` was never marked), token-aligned, every occurrence
    assert texts(later, memory.guesses(later, ["Disease"])) == [("breast cancer", "Disease")]
    assert memory.guesses(later, ["Chemical"]) == []  # only the types asked


def test_a_text_passed_by_more_often_than_marked_is_not_guessed() -> None:
    memory = MentionMemory()
    marked = sentence("a tumor was found")
    memory.learn(marked, [span_of(marked, "tumor")], ["Disease"])
    plain = sentence("tumor cells and tumor suppressors")
    assert len(memory.guesses(plain, ["Disease"])) == 2
    memory.learn(plain, [], ["Disease"])  # passed by twice: 1 marked against 2
    assert memory.guesses(plain, ["Disease"]) == []
    # a sentence asked for other types says nothing about Disease mentions
    memory.learn(plain, [], ["Chemical"])
    memory.learn(marked, [span_of(marked, "tumor")], ["Disease"])
    memory.learn(marked, [span_of(marked, "tumor")], ["Disease"])
    assert len(memory.guesses(plain, ["Disease"])) == 2  # 3 marked against 2


def test_overlapping_texts_guess_the_longest() -> None:
    memory = MentionMemory()
    s = sentence("colorectal cancer and hereditary nonpolyposis colorectal cancer")
    memory.learn(s, [span_of(s, "colorectal cancer")], ["Disease"])
    long = sentence("patients with hereditary nonpolyposis colorectal cancer")
    memory.learn(long, [span_of(long, "hereditary nonpolyposis colorectal cancer")], ["Disease"])
    guessed = texts(s, memory.guesses(s, ["Disease"]))
    assert guessed == [
        ("colorectal cancer", "Disease"),
        ("hereditary nonpolyposis colorectal cancer", "Disease"),
    ]


def test_the_memory_stops_growing_at_its_capacity() -> None:
    memory = MentionMemory(capacity=2)
    s = sentence("alpha beta gamma delta")
    memory.learn(s, [span_of(s, w) for w in ("alpha", "beta", "gamma")], ["Disease"])
    assert len(memory) == 2
    memory.learn(s, [span_of(s, "alpha")], ["Disease"])  # a known text still counts
    assert memory.marked[("alpha", "Disease")] == 2


def test_a_guess_extends_the_mention_being_written() -> None:
    s = sentence("Duchenne muscular dystrophy and cystic fibrosis")
    written = [span_of(s, "Duchenne")]  # the plain completion closes it after its word
    guesses = [span_of(s, "Duchenne muscular dystrophy"), span_of(s, "cystic fibrosis")]
    assert texts(s, with_guesses(written, guesses)) == [
        ("Duchenne muscular dystrophy", "Disease"),
        ("cystic fibrosis", "Disease"),
    ]
    # a guess crossing a span already written is left out
    assert with_guesses([span_of(s, "dystrophy and")], guesses[:1]) == [span_of(s, "dystrophy and")]


def test_the_draft_carries_the_guessed_markup() -> None:
    chars = CharTokenizer()
    writing = get_format("multi_inline").writing
    s = sentence("Duchenne muscular dystrophy and cystic fibrosis were absent")
    guesses = [span_of(s, "Duchenne muscular dystrophy"), span_of(s, "cystic fibrosis")]
    drafter = CopyDrafter(chars, writing, s, ["Disease"], end_id=0, length=8, guesses=guesses)
    full = writing.render(s, guesses, ["Disease"])
    begun = ("", "[Duch", "[Duchenne muscular", "[Duchenne muscular dystrophy | Disease] and")
    for written in begun:
        drafted = chars.decode(drafter.draft([ord(c) for c in written], 200))
        assert written + drafted == full + "\x00"  # the end token: the answer is whole
    # the model did not mark the first guess: the draft still marks the second
    drafted = chars.decode(drafter.draft([ord(c) for c in "Duchenne muscular"], 200))
    assert drafted == " dystrophy and [cystic fibrosis | Disease] were absent\x00"
    # without guesses: the plain restatement
    plain = CopyDrafter(chars, writing, s, ["Disease"], end_id=0, length=8)
    assert chars.decode(plain.draft([ord(c) for c in "[Duch"], 200)).startswith("enne | Disease]")


WORDS = st.one_of(
    st.text(
        alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S")),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from(["[", "]", "|", "\\", "(O)", "B-Disease", "é", "β-2", "Disease]"]),
)


@st.composite
def drafted_answers(draw):
    """A sentence, guessed spans, the spans the model wrote, and a prefix of its answer."""
    tokens = draw(st.lists(WORDS.filter(lambda w: w.strip() == w), min_size=1, max_size=8))
    s = Sentence.from_tokens("h", tokens)
    offsets = s.token_offsets()

    def spans() -> list[Span]:
        starts = sorted(draw(st.sets(st.integers(0, len(offsets) - 1), max_size=3)))
        out: list[Span] = []
        for i in starts:
            j = draw(st.integers(i, min(i + 2, len(offsets) - 1)))
            if not out or out[-1].end < offsets[i][0]:
                out.append(Span(offsets[i][0], offsets[j][1], "Disease"))
        return out

    return s, spans(), spans(), draw(st.floats(0, 1))


@settings(max_examples=200, deadline=None)
@given(case=drafted_answers(), fmt=st.sampled_from(["multi_inline", "multi_bio"]))
def test_guessed_drafts_never_fail_and_follow_the_guesses(case, fmt: str) -> None:
    """Whatever the guesses and whatever the model wrote so far (unicode, markup characters
    in the words), drafting never raises and drafts a continuation of what was written;
    where the model wrote as guessed, the draft is the guessed answer's rest."""
    s, guesses, written, cut = case
    chars = CharTokenizer()
    writing = get_format(fmt).writing
    for spans in (written, guesses):
        # a drafter per answer being written, as in decoding (it keeps its last guessed draft)
        drafter = CopyDrafter(chars, writing, s, ["Disease"], 0, 8, guesses=guesses)
        answer = writing.render(s, spans, ["Disease"])
        prefix = answer[: int(cut * len(answer))]
        drafted = chars.decode(drafter.draft([ord(c) for c in prefix], 10_000))
        if spans is guesses:
            assert prefix + drafted == answer + "\x00"
        elif drafted:
            whole = prefix + drafted.removesuffix("\x00")
            assert whole.startswith(prefix)
            assert whole == writing.complete(whole, s, ["Disease"])  # a whole answer


@pytest.fixture(scope="module")
def fitted(data_dir: Path) -> list[Sentence]:
    return load_split("BC5CDR", "dev", data_dir, limit=24)


def passes_and_answers(gen: Generator, sentences: list[Sentence], fmt: str):
    calls = {"n": 0}
    handle = gen.model.base_model.register_forward_hook(
        lambda *_: calls.__setitem__("n", calls["n"] + 1)
    )
    try:
        out = gen.extract(sentences, fmt, COPIER_TYPES)
    finally:
        handle.remove()
    return calls["n"], out


@pytest.mark.parametrize(
    "fmt", ["multi_inline", pytest.param("conv_inline", marks=pytest.mark.slow), "multi_bio"]
)
def test_guesses_save_passes_and_change_no_answer(copier_model: Path, fitted, fmt: str) -> None:
    """The fitted tiny model marks the mentions of the sentences it was fitted on: once it
    has answered them, answering them again takes fewer passes, token for token the same
    answers as without the memory (one sentence at a time, as lone requests come)."""
    sentences = fitted[:8]
    per_mode = {}
    for memory in (False, True):
        cfg = GenerationConfig(device="cpu", dtype="float32", mention_memory=memory)
        gen = Generator(copier_model, cfg)
        gen.extract(sentences, fmt, COPIER_TYPES)  # learns (with the memory on)
        runs = [passes_and_answers(gen, [s], fmt) for s in sentences]
        per_mode[memory] = (sum(n for n, _ in runs), [out[0] for _, out in runs])
    assert_same(per_mode[False][1], per_mode[True][1])
    assert per_mode[True][0] < per_mode[False][0], per_mode


def test_wrong_guesses_change_no_answer(copier_model: Path, fitted) -> None:
    """A memory full of wrong guesses (every word and word pair marked, as either type)
    costs refused drafts, never an answer."""
    sentences = fitted[8:16]
    cfg = GenerationConfig(device="cpu", dtype="float32", batch_size=3)
    reference = Generator(copier_model, cfg.model_copy(update={"mention_memory": False}))
    expected = reference.extract(sentences, "multi_inline", COPIER_TYPES)
    gen = Generator(copier_model, cfg)
    for s in sentences:
        offsets = s.token_offsets()
        for label in COPIER_TYPES:
            wrong = [Span(a, b, label) for a, b in offsets]
            pairs = zip(offsets, offsets[1:], strict=False)
            wrong += [Span(a, d, label) for (a, _), (_, d) in pairs]
            for _ in range(3):
                gen.memory.learn(s, wrong, COPIER_TYPES)
    assert gen.memory.guesses(sentences[0], COPIER_TYPES)
    assert_same(expected, gen.extract(sentences, "multi_inline", COPIER_TYPES))
