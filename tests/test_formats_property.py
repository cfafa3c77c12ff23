"""Property tests: every format round-trips random flat sentences (exactly, or up to the declared
ambiguity for lossy ones), and no parser is ever thrown off by arbitrary model output."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biogner.corpora.iob import tags_to_spans
from biogner.evaluate.format_check import check_format
from biogner.formats import FORMATS
from biogner.types import Sentence

NASTY = ["[", "]", "|", "\\", "{", "}", '"', ":", "(", ")", "B-Disease", "O", "None", "I-X"]
WORDS = ["APC", "gene", "a", "of", "Parkinson", "'", "s", "-", ",", "(O)", "\\None", "x|y"]
LABELS = ["Disease", "Chemical", "cell_type"]
MARKUP = [
    "[", "]", " | ", "|", "\\", "(", ")", "(O)", "(B-Disease)", "(I-Chemical)", "(B-", "{", "}",
    '{"text": ', '"type": ', '"Disease"', '"', ":", ": ", "\n", " ", "None", "1", "99", "0", "-1",
    ",", "[]", "Disease", "Chemical", "disease", "Gene",
]  # fmt: skip

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A token is any non-empty string without whitespace (what the IOB2 reader accepts).
odd_token = st.text(
    st.characters(exclude_categories=["Cs"]).filter(lambda c: not c.isspace()),
    min_size=1,
    max_size=5,
)
token = st.one_of(st.sampled_from(NASTY + WORDS), odd_token)


@st.composite
def sentences(draw: st.DrawFn) -> tuple[Sentence, list[str]]:
    """A random sentence with flat, token-aligned spans (drawn as IOB2 tags, so adjacent
    entities of one type occur) and the types list a corpus would declare."""
    vocab = draw(st.lists(token, min_size=1, max_size=6))
    tokens = draw(st.lists(st.sampled_from(vocab), min_size=1, max_size=14))  # repeats
    types = draw(st.sampled_from([["Disease"], LABELS]))
    tags = draw(
        st.lists(
            st.sampled_from(["O", *(f"{p}-{t}" for p in "BI" for t in types)]),
            min_size=len(tokens),
            max_size=len(tokens),
        )
    )
    spans, _ = tags_to_spans(tokens, tags)
    return Sentence.from_tokens("h", tokens, spans), types


@SETTINGS
@given(sentences())
def test_every_format_round_trips_flat_sentences(case: tuple[Sentence, list[str]]) -> None:
    sent, types = case
    for name, fmt in FORMATS.items():
        res = fmt.parse(fmt.answers(sent, types), sent, types)
        assert res.problems == [], (name, fmt.answers(sent, types), res.problems)
        if fmt.exact:
            assert res.spans == list(sent.spans), (name, fmt.answers(sent, types))
        else:
            got = Counter((s.text_in(sent.text), s.label) for s in res.spans)
            assert got == Counter(sent.mentions()), (name, fmt.answers(sent, types))
        assert res.hallucinated == 0
        check = check_format(fmt, [sent], types)
        assert check.failures == [], name
        assert check.ok == 1


@st.composite
def model_output(draw: st.DrawFn, sent: Sentence, n_answers: int) -> list[str]:
    """What a confused model might write: gold answers with bits cut out or inserted, or
    fragments of the sentence and of every format's markup."""
    answers = []
    for _ in range(n_answers):
        pieces = draw(
            st.lists(
                st.one_of(
                    st.sampled_from(list(sent.tokens)),
                    st.sampled_from(MARKUP),
                    st.text(max_size=4),
                ),
                max_size=20,
            )
        )
        answers.append("".join(pieces))
    return answers


@st.composite
def garbled(draw: st.DrawFn) -> tuple[Sentence, list[str], dict[str, list[str]]]:
    sent, types = draw(sentences())
    outputs = {}
    for name, fmt in FORMATS.items():
        gold = fmt.answers(sent, types)
        if draw(st.booleans()):
            # Mutate the gold answers: delete a slice, insert junk.
            mutated = []
            for ans in gold:
                i = draw(st.integers(0, len(ans)))
                j = draw(st.integers(i, len(ans)))
                junk = draw(st.one_of(st.sampled_from(MARKUP), st.text(max_size=3)))
                mutated.append(ans[:i] + junk + ans[j:])
            outputs[name] = mutated
        else:
            outputs[name] = draw(model_output(sent, draw(st.integers(0, len(gold) + 1))))
    return sent, types, outputs


@SETTINGS
@given(garbled())
def test_parsers_never_fail_on_arbitrary_output(
    case: tuple[Sentence, list[str], dict[str, list[str]]],
) -> None:
    sent, types, outputs = case
    for name, fmt in FORMATS.items():
        answers = outputs[name]
        # The writing itself must not raise (Format.parse would hide it as a problem).
        for answer, turn in zip(answers, fmt.turn_types(types), strict=False):
            fmt.writing.parse(answer, sent, turn)
        res = fmt.parse(answers, sent, types)
        assert not any(p.startswith("parser error") for p in res.problems), (name, answers)
        for span in res.spans:
            assert 0 <= span.start < span.end <= len(sent.text), (name, answers, span)
            assert span.label in types
            text = span.text_in(sent.text)
            assert text == text.strip(), (name, answers, span)
        assert res.spans == sorted(set(res.spans))
        assert 0 <= res.hallucinated <= res.predicted_mentions
