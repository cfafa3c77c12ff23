"""Raw text handling for serving: corpus-like tokens, sentences, windows, exact offsets back.

Property tests run on arbitrary Unicode; the format-faithful test pushes gold entities through
the real formats (render -> parse) and the same assembly code the service runs.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biogner.annotate.assemble import assemble
from biogner.annotate.text import (
    Window,
    iter_windows,
    split_sentences,
    splits_character,
    tokenize_text,
    widen_to_characters,
)
from biogner.formats import get_format
from biogner.generation import Generation
from biogner.serve.requests import check_texts, request_windows
from biogner.serve.schema import Limits
from biogner.types import Sentence, Span

TYPES = ["Disease", "Chemical"]


def is_mark(char: str) -> bool:
    return unicodedata.category(char)[0] == "M"


def readable(text: str) -> str:
    """`text` without whitespace and invisible (control, format) characters."""
    return "".join(
        c for c in text if not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf")
    )


def toks(text: str) -> list[str]:
    return [text[s:e] for s, e in tokenize_text(text)]


def sentences(text: str) -> list[str]:
    return [
        " ".join(text[s:e] for s, e in sent) for sent in split_sentences(text, tokenize_text(text))
    ]


def to_joined(window: Window, start: int, end: int) -> tuple[int, int] | None:
    """Map raw-text [start, end) to `window.sentence.text`: the inverse of `to_original` on
    token characters (None if no token of the window lies inside it), to test it against."""
    joined = window.sentence.token_offsets()
    offsets = window.offsets
    first = next((k for k, (_, e) in enumerate(offsets) if start < e), None)
    last = next((k for k in range(len(offsets) - 1, -1, -1) if end > offsets[k][0]), None)
    if first is None or last is None or first > last:
        return None
    j_start = joined[first][0] + max(start - offsets[first][0], 0)
    j_end = joined[last][0] + (min(end, offsets[last][1]) - offsets[last][0])
    return (j_start, j_end) if j_start < j_end else None


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Parkinson's disease", ["Parkinson", "'", "s", "disease"]),
        ("5-FU", ["5", "-", "FU"]),
        ("(APC)", ["(", "APC", ")"]),
        ("IL-2/IL-4, 10.5%", ["IL", "-", "2", "/", "IL", "-", "4", ",", "10", ".", "5", "%"]),
        ("a_b  ü\tß\n", ["a", "_", "b", "ü", "ß"]),
        ("   ", []),
        ("\u200b\u200b", []),
        ("\x00\x07", []),
        ("a\u200bb\ufeff\x00c", ["a", "b", "c"]),
        ("Me\u0301nie\u0300re's", ["Me\u0301nie\u0300re", "'", "s"]),
        ("cafe\u0301 -\u0301 \u0301x", ["cafe\u0301", "-\u0301", "\u0301", "x"]),
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
        assert not splits_character(text, start) and not splits_character(text, end)
        tok = text[start:end]
        assert readable(tok) == tok
        base = "".join(c for c in tok if not is_mark(c))
        assert len(base) <= 1 or (base.isalnum() and "_" not in base)
        covered.update(range(start, end))
        prev_end = end
    assert {i for i, c in enumerate(text) if readable(c)} == covered
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
    st.text(alphabet=st.sampled_from(list("ab .?!\n\u00e9A1-\u0301\u200b")), max_size=200)
    | st.text(max_size=200),
    st.integers(1, 12),
    st.integers(1, 40),
)
@settings(max_examples=300, deadline=None)
def test_windows_keep_every_token_in_order_within_limits(
    text: str, max_tokens: int, max_chars: int
) -> None:
    windows = list(iter_windows(text, max_tokens, max_chars))
    full = tokenize_text(text)
    offsets = [o for w in windows for o in w.offsets]
    assert [s for s, _ in offsets] == [s for s, _ in full]
    for (s, e), (_, kept) in zip(full, offsets, strict=True):
        # a cut inside a character (between it and its marks) leaves that whole character
        # out, unless it is the token's first
        cut = min(e, s + max_chars)
        assert s < kept <= cut and (kept == cut or splits_character(text, cut))
        assert sum(not is_mark(c) for c in text[kept:cut]) <= 1
        assert kept == s + 1 or not splits_character(text, kept)
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
    text = draw(
        st.text(min_size=1, max_size=120)
        | st.text(alphabet=st.sampled_from(list("ae \u0301\u0308\u200b.")), max_size=60)
    )
    if not tokenize_text(text):
        text += " x"
    windows = list(iter_windows(text, draw(st.integers(1, 30)), 10_000))
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
    # a span edge inside a character (between it and its marks) takes the whole character
    w_start, w_end = widen_to_characters(window.sentence.text, start, end)
    joined = window.sentence.text[w_start:w_end]
    mapped = window.to_original(start, end)
    if not joined.strip(" "):
        assert mapped is None
        return
    assert mapped is not None
    o_start, o_end = mapped
    assert 0 <= o_start < o_end <= len(text)
    assert not splits_character(text, o_start) and not splits_character(text, o_end)
    raw = text[o_start:o_end]
    assert readable(raw) == joined.replace(" ", "")
    assert readable(raw[0]) and readable(raw[-1])
    back = to_joined(window, o_start, o_end)
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


def test_decomposed_accents_stay_with_their_base_character() -> None:
    text = "Me\u0301nie\u0300re disease and cafe\u0301 au lait spots."
    (window,) = list(iter_windows(text, 128, 1000))
    assert window.sentence.tokens[:2] == ("Me\u0301nie\u0300re", "disease")
    # a span of the joined text that ends between `e` and U+0300 keeps the mark
    nie = window.sentence.text.index("nie")
    assert window.to_original(0, nie + 3) == (0, nie + 4)
    # an answer naming the letters without their mark is not cut out of the word
    fmt = get_format("multi_term")
    answers = ["Disease: Me\u0301nie\u0300re disease\nChemical: cafe"]
    parse = fmt.parse(answers, window.sentence, TYPES)
    (result,) = assemble([text], [[window]], [Generation(window.sentence, answers, parse, 0)])
    mention = "Me\u0301nie\u0300re disease"
    assert [(e.start, e.end, e.text) for e in result.entities] == [(0, len(mention), mention)]


def test_a_cut_token_keeps_whole_characters() -> None:
    text = "e\u0301" * 6  # one 12-character token; a 5-character cut would split the third é
    (window,) = list(iter_windows(text, 128, 5))
    assert window.offsets == ((0, 4),) and window.truncated


BLANK = ["", "   ", "\u200b\u200b", "\x00\x07", " \ufeff\n\t\u2060 "]


@pytest.mark.parametrize("blank", BLANK)
def test_a_text_with_nothing_to_read_has_no_window(blank: str) -> None:
    assert tokenize_text(blank) == []
    assert list(iter_windows(blank, 128, 1000)) == []


def test_blank_texts_get_no_entities_without_failing_their_batch() -> None:
    limits = Limits()
    texts = [f"Case {i} had cancer." for i in range(limits.max_texts)]
    blanks = {3: BLANK[1], 17: BLANK[2], 40: BLANK[3], 63: BLANK[4]}
    for i, blank in blanks.items():
        texts[i] = blank
    check_texts(texts, limits)  # no 422 for the whole batch
    windows = request_windows(texts, limits)
    assert all(windows[i] == [] for i in blanks)
    # what the replica sends to the model: no input comes from a blank text
    model_inputs = [w.sentence for ws in windows for w in ws]
    assert len(model_inputs) == limits.max_texts - len(blanks)
    assert all(s.text.startswith("Case ") for s in model_inputs)
    fmt = get_format("multi_term")
    generations = [
        Generation(s, ["Disease: cancer"], fmt.parse(["Disease: cancer"], s, TYPES), 0)
        for s in model_inputs
    ]
    results = assemble(texts, windows, generations)
    for i, (text, result) in enumerate(zip(texts, results, strict=True)):
        expected = [] if i in blanks else [(text.index("cancer"), "cancer")]
        assert [(e.start, e.text) for e in result.entities] == expected


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
    windows = list(iter_windows(text, draw(st.integers(3, 25)), 10_000))
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
            mapped = to_joined(window, start, end)
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
    windows = list(iter_windows("word " * 1000, limits.window_tokens, limits.window_chars))
    assert all(len(w.offsets) <= limits.window_tokens for w in windows)
    assert sum(len(w.offsets) for w in windows) == 1000
