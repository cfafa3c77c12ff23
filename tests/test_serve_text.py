"""Raw text handling for serving: corpus-like tokens, sentences, windows, exact offsets back.

Property tests run on arbitrary Unicode; the format-faithful test pushes gold entities through
the real formats (render -> parse) and the same assembly code the service runs.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biogner.formats import get_format
from biogner.generation import Generation
from biogner.serve.engine import assemble
from biogner.serve.schema import Limits
from biogner.serve.text import Window, make_windows, split_sentences, tokenize_text
from biogner.types import Sentence, Span

TYPES = ["Disease", "Chemical"]


def toks(text: str) -> list[str]:
    return [text[s:e] for s, e in tokenize_text(text)]


def sentences(text: str) -> list[str]:
    return [
        " ".join(text[s:e] for s, e in sent) for sent in split_sentences(text, tokenize_text(text))
    ]


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Parkinson's disease", ["Parkinson", "'", "s", "disease"]),
        ("5-FU", ["5", "-", "FU"]),
        ("(APC)", ["(", "APC", ")"]),
        ("IL-2/IL-4, 10.5%", ["IL", "-", "2", "/", "IL", "-", "4", ",", "10", ".", "5", "%"]),
        ("a_b  ü\tß\n", ["a", "_", "b", "ü", "ß"]),
        ("   ", []),
    ],
)
def test_tokens_are_split_like_the_corpora(text: str, tokens: list[str]) -> None:
    assert toks(text) == tokens


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_tokens_cover_every_visible_character_in_order(text: str) -> None:
    spans = tokenize_text(text)
    covered = set()
    prev_end = 0
    for start, end in spans:
        assert prev_end <= start < end
        tok = text[start:end]
        assert not any(c.isspace() for c in tok)
        assert len(tok) == 1 or (tok.isalnum() and "_" not in tok)
        covered.update(range(start, end))
        prev_end = end
    assert {i for i, c in enumerate(text) if not c.isspace()} == covered
    tokens = [text[s:e] for s, e in spans]
    assert " ".join(tokens).split(" ") == tokens or not tokens


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tumors grew. The mice died.", ["Tumors grew .", "The mice died ."]),
        ("Is it? Yes! 3 died.", ["Is it ?", "Yes !", "3 died ."]),
        ("Drugs, e.g. Aspirin, help.", ["Drugs , e . g . Aspirin , help ."]),
        ("As i.e. Before.", ["As i . e . Before ."]),
        ("Smith et al. Reported it.", ["Smith et al . Reported it ."]),
        ("See Fig. 2 and Figs. 3.", ["See Fig . 2 and Figs . 3 ."]),
        ("Drug A vs. Placebo.", ["Drug A vs . Placebo ."]),
        ("Seen by Dr. House.", ["Seen by Dr . House ."]),
        ("J. Smith wrote.", ["J . Smith wrote ."]),
        ("value was 3.5 mg. next is lower.", ["value was 3 . 5 mg . next is lower ."]),
        ("no split.Here", ["no split . Here"]),
        ("Note: stable\n\nplan: discharge", ["Note : stable", "plan : discharge"]),
        ("BP 120/80.\nHR 72.", ["BP 120 / 80 .", "HR 72 ."]),
    ],
)
def test_sentence_splitter(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


@given(
    st.text(alphabet=st.sampled_from(list("ab .?!\n\u00e9A1-")), max_size=200)
    | st.text(max_size=200),
    st.integers(1, 12),
    st.integers(1, 40),
)
@settings(max_examples=300, deadline=None)
def test_windows_keep_every_token_in_order_within_limits(
    text: str, max_tokens: int, max_chars: int
) -> None:
    windows = make_windows(text, max_tokens, max_chars)
    full = tokenize_text(text)
    offsets = [o for w in windows for o in w.offsets]
    assert offsets == [(s, min(e, s + max_chars)) for s, e in full]
    pos = 0
    for w in windows:
        assert 1 <= len(w.offsets) <= max_tokens
        assert len(w.sentence.text) <= max_chars
        assert w.sentence.text == " ".join(text[s:e] for s, e in w.offsets)
        mine = full[pos : pos + len(w.offsets)]
        assert w.truncated == any(e - s > max_chars for s, e in mine)
        pos += len(w.offsets)


@st.composite
def window_and_span(draw: st.DrawFn) -> tuple[str, Window, int, int]:
    text = draw(st.text(min_size=1, max_size=120).filter(lambda t: bool(t.split())))
    windows = make_windows(text, draw(st.integers(1, 30)), 10_000)
    window = draw(st.sampled_from(windows))
    n = len(window.sentence.text)
    start = draw(st.integers(0, n - 1))
    end = draw(st.integers(start + 1, n))
    return text, window, start, end


@given(window_and_span())
@settings(max_examples=400, deadline=None)
def test_any_joined_span_maps_to_the_same_characters_in_the_raw_text(
    case: tuple[str, Window, int, int],
) -> None:
    text, window, start, end = case
    joined = window.sentence.text[start:end]
    mapped = window.to_original(start, end)
    if not joined.strip(" "):
        assert mapped is None
        return
    assert mapped is not None
    o_start, o_end = mapped
    assert 0 <= o_start < o_end <= len(text)
    raw = text[o_start:o_end]
    assert re.sub(r"\s", "", raw) == joined.replace(" ", "")
    assert not raw[0].isspace() and not raw[-1].isspace()
    back = window.to_joined(o_start, o_end)
    assert back is not None
    assert window.sentence.text[back[0] : back[1]] == joined.strip(" ")


@given(window_and_span())
@settings(max_examples=200, deadline=None)
def test_token_aligned_spans_map_exactly(case: tuple[str, Window, int, int]) -> None:
    _, window, start, end = case
    joined = window.sentence.token_offsets()
    # snap the drawn span outward to token boundaries
    i = max(k for k, (s, _) in enumerate(joined) if s <= start or k == 0)
    j = min(k for k, (_, e) in enumerate(joined) if e >= end or k == len(joined) - 1)
    j = max(i, j)
    assert window.to_original(joined[i][0], joined[j][1]) == (
        window.offsets[i][0],
        window.offsets[j][1],
    )


# --- format-faithful end to end: gold entities -> format answers -> parse -> raw offsets

WORDS = st.sampled_from(
    [
        "Parkinson",
        "'",
        "s",
        "disease",
        "5",
        "-",
        "FU",
        "(",
        "APC",
        ")",
        "cancer",
        "of",
        "the",
        "colon",
        "Naïve",
        "T",
        "cells",
        ",",
        ".",
        "The",
        "2",
        "mg",
        "/",
        "kg",
        "β",
        "blocker",
        "ü",
    ]
)
SEPARATORS = st.sampled_from(["", " ", "  ", "\n", "\t", " \n\n "])


@st.composite
def annotated_text(draw: st.DrawFn) -> tuple[str, list[Window], list[tuple[int, int, str]]]:
    words = draw(st.lists(WORDS, min_size=1, max_size=40))
    text = ""
    for word in words:
        text += draw(SEPARATORS) + word
    windows = make_windows(text, draw(st.integers(3, 25)), 10_000)
    gold: list[tuple[int, int, str]] = []
    for window in windows:  # non-overlapping entities, each inside one window
        k = 0
        while k < len(window.offsets):
            if draw(st.booleans()):
                length = draw(st.integers(1, min(3, len(window.offsets) - k)))
                label = draw(st.sampled_from(TYPES))
                gold.append((window.offsets[k][0], window.offsets[k + length - 1][1], label))
                k += length
            k += 1
    return text, windows, gold


def generations_for(fmt_name: str, windows: list[Window], gold: list[tuple[int, int, str]]):
    fmt = get_format(fmt_name)
    out = []
    for window in windows:
        spans = []
        for start, end, label in gold:
            mapped = window.to_joined(start, end)
            if mapped is not None and window.offsets[0][0] <= start < window.offsets[-1][1]:
                spans.append(Span(mapped[0], mapped[1], label))
        sentence = Sentence(window.sentence.id, window.sentence.text, window.sentence.tokens)
        answers = fmt.answers(
            Sentence(sentence.id, sentence.text, sentence.tokens, tuple(spans)), TYPES
        )
        out.append(Generation(sentence, answers, fmt.parse(answers, sentence, TYPES), 0))
    return out


@pytest.mark.parametrize("fmt_name", ["multi_triple", "conv_inline", "multi_json", "conv_term"])
@given(case=annotated_text())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_gold_entities_survive_format_and_offset_mapping(fmt_name: str, case) -> None:
    text, windows, gold = case
    result = assemble([text], [windows], generations_for(fmt_name, windows, gold))[0]
    got = [(e.start, e.end, e.label) for e in result.entities]
    for e in result.entities:
        assert text[e.start : e.end] == e.text
    if get_format(fmt_name).exact:
        assert got == sorted(gold)
    else:  # term/json place a repeated string at its first unused occurrence: same mentions
        # (as token sequences), possibly at other occurrences of the same tokens
        def mentions(spans: list[tuple[int, int, str]]) -> list[tuple[tuple[str, ...], str]]:
            return sorted((tuple(toks(text[s:e])), lab) for s, e, lab in spans)

        assert mentions(got) == mentions(gold)


def test_limits_defaults_fit_the_window_logic() -> None:
    limits = Limits()
    windows = make_windows("word " * 1000, limits.window_tokens, limits.window_chars)
    assert all(len(w.offsets) <= limits.window_tokens for w in windows)
    assert sum(len(w.offsets) for w in windows) == 1000
