"""Output formats on hand-made sentences: round trips, declared ambiguity, nesting, nasty
tokens, multi-type turns and tolerant parsing of malformed model output."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import pytest

from biogner.evaluate.format_check import check_format
from biogner.formats import FORMATS, Format, get_format, resolve_formats
from biogner.prompts import SYSTEM_PROMPT
from biogner.types import Sentence, Span

ALL = sorted(FORMATS)
EXACT = [n for n in ALL if FORMATS[n].exact]
LOSSY = [n for n in ALL if not FORMATS[n].exact]
NESTING = [n for n in ALL if FORMATS[n].writing.nesting]
CROSSING = [n for n in ALL if FORMATS[n].writing.name in ("triple", "term", "json")]
NASTY = ["[", "]", "|", "\\", "{", "}", '"', ":", "(", ")", "B-Disease", "O", "None"]


def make(
    tokens: str | Sequence[str], spans: Sequence[tuple[int, int, str]] = (), id: str = "s"
) -> Sentence:
    """Sentence with spans given as token ranges [i, j) (offsets computed, never typed);
    a string is split on spaces."""
    if isinstance(tokens, str):
        tokens = tokens.split(" ")
    offsets = Sentence.from_tokens(id, list(tokens)).token_offsets()
    return Sentence.from_tokens(
        id, list(tokens), [Span(offsets[i][0], offsets[j - 1][1], lab) for i, j, lab in spans]
    )


def texts(sentence: Sentence, spans: Sequence[Span]) -> list[str]:
    return [s.text_in(sentence.text) for s in spans]


def roundtrip(fmt: Format, sentence: Sentence, types: Sequence[str]):
    return fmt.parse(fmt.answers(sentence, types), sentence, types)


def test_ten_formats_with_declared_kinds() -> None:
    assert len(FORMATS) == 10
    assert {FORMATS[n].writing.name for n in EXACT} == {"triple", "inline", "bio"}
    assert {FORMATS[n].writing.name for n in LOSSY} == {"term", "json"}
    assert not FORMATS["multi_bio"].writing.nesting
    assert [f.name for f in resolve_formats("conv_term, multi_triple")] == [
        "conv_term",
        "multi_triple",
    ]
    assert len(resolve_formats("all")) == 10
    with pytest.raises(KeyError, match="multi_triple"):
        get_format("multi_tripple")


# --- repeated surface forms -------------------------------------------------------------------

REPEATED = make("the APC gene and APC gene mutation", [(4, 6, "GENE")])


@pytest.mark.parametrize("name", EXACT)
def test_exact_formats_recover_second_occurrence(name: str) -> None:
    fmt = FORMATS[name]
    res = roundtrip(fmt, REPEATED, ["GENE"])
    assert res.spans == list(REPEATED.spans)
    assert res.spans[0].start == REPEATED.text.index("APC gene", 5)
    assert res.problems == []
    check = check_format(fmt, [REPEATED], ["GENE"])
    assert (check.exact_roundtrips, check.ambiguous, check.failures) == (1, 0, [])
    assert check.ceiling_f1 == 1.0


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_formats_map_to_first_occurrence_and_count_it_ambiguous(name: str) -> None:
    fmt = FORMATS[name]
    res = roundtrip(fmt, REPEATED, ["GENE"])
    assert res.spans == [Span(4, 12, "GENE")]  # the first `APC gene`, not the entity
    assert res.problems == []
    check = check_format(fmt, [REPEATED], ["GENE"])
    assert (check.exact_roundtrips, check.ambiguous, check.failures) == (0, 1, [])
    assert check.ok == 1
    assert check.ceiling_f1 == 0.0


def test_mentions_match_on_token_boundaries_only() -> None:
    # `APC` occurs inside `APC2` first: a lossy format must still find the real token.
    sent = make("APC2 binds APC", [(2, 3, "GENE")])
    for name in LOSSY:
        assert roundtrip(FORMATS[name], sent, ["GENE"]).spans == list(sent.spans), name


def test_check_format_counts_real_failures_for_a_format_that_cannot_nest() -> None:
    sent = make("the APC gene", [(1, 2, "GENE"), (1, 3, "GENE")])
    check = check_format(get_format("multi_bio"), [sent, REPEATED], ["GENE"])
    assert check.sentences == 2
    assert check.exact_roundtrips == 1
    assert [s.id for s, _ in check.failures] == [sent.id]
    assert 0.0 < check.ceiling_f1 < 1.0


# --- nesting and crossing -----------------------------------------------------------------------

NESTED_SAME = make("the APC gene", [(1, 2, "GENE"), (1, 3, "GENE")])
NESTED_DIFFERENT = make("the APC gene is mutated", [(1, 2, "protein"), (1, 3, "DNA")])
SAME_SPAN_TWO_LABELS = make("the APC gene", [(1, 2, "protein"), (1, 2, "DNA")])
NESTED_SHARED_END = make("mutant APC gene", [(0, 3, "DNA"), (1, 3, "DNA"), (2, 3, "DNA")])


@pytest.mark.parametrize("name", NESTING)
@pytest.mark.parametrize(
    ("sentence", "types"),
    [
        (NESTED_SAME, ["GENE"]),
        (NESTED_DIFFERENT, ["protein", "DNA"]),
        (SAME_SPAN_TWO_LABELS, ["protein", "DNA"]),
        (NESTED_SHARED_END, ["DNA"]),
    ],
    ids=["same-label", "different-labels", "same-span-two-labels", "shared-end"],
)
def test_nesting_formats_round_trip_nested_spans(
    name: str, sentence: Sentence, types: list[str]
) -> None:
    res = roundtrip(FORMATS[name], sentence, types)
    assert res.spans == list(sentence.spans)
    assert res.problems == []


def test_inline_writes_nested_brackets() -> None:
    answer = get_format("multi_inline").answers(NESTED_SAME, ["GENE"])
    assert answer == ["the [[APC | GENE] gene | GENE]"]


@pytest.mark.parametrize("name", CROSSING)
def test_crossing_spans_round_trip_in_string_formats(name: str) -> None:
    sent = make("a b c d", [(0, 2, "X"), (1, 3, "X"), (2, 4, "Y")])
    res = roundtrip(FORMATS[name], sent, ["X", "Y"])
    assert res.spans == list(sent.spans)
    assert res.problems == []


# --- punctuation and tokens that look like markup ------------------------------------------------


def nasty_sentences() -> list[Sentence]:
    """Every nasty token as an entity, inside a longer entity and as plain text."""
    out = []
    for k, tok in enumerate(NASTY):
        toks = ["x", tok, "y", tok, "z"]
        out.append(make(toks, [(1, 2, "Disease")], id=f"first-{k}"))
        out.append(make(toks, [(1, 2, "Disease"), (3, 4, "Disease")], id=f"both-{k}"))
        out.append(make(toks, [(3, 4, "Disease")], id=f"second-{k}"))  # lossy: ambiguous
        out.append(make(toks, [(0, 3, "Disease"), (4, 5, "Disease")], id=f"inside-{k}"))
        out.append(make(toks, [(2, 5, "Disease")], id=f"around-{k}"))
        out.append(make(toks, [(4, 5, "Disease")], id=f"plain-{k}"))
    all_nasty = make(["a", *NASTY, "b"], [(1, 4, "Disease"), (6, 12, "Disease")], id="all")
    out.append(all_nasty)
    out.append(make(["a", *NASTY, "b"], [(1, len(NASTY) + 1, "Disease")], id="all-one"))
    out.append(make(["a\\", "\\[x", "|]", '{"text":', "(O)", "\\None"], [(0, 6, "Disease")]))
    return out


@pytest.mark.parametrize("name", ALL)
def test_nasty_tokens_round_trip_exactly(name: str) -> None:
    fmt = FORMATS[name]
    for sent in nasty_sentences():
        res = roundtrip(fmt, sent, ["Disease"])
        assert res.problems == [], (sent.id, res.problems)
        if fmt.exact or not sent.id.startswith("second-"):
            assert res.spans == list(sent.spans), (sent.id, fmt.answers(sent, ["Disease"]))
        else:  # only the 2nd of three equal tokens is an entity: the declared ambiguity
            assert sent.mentions() == [(t, "Disease") for t in texts(sent, res.spans)]


@pytest.mark.parametrize("name", ALL)
def test_nasty_tokens_round_trip_with_two_types(name: str) -> None:
    fmt = FORMATS[name]
    types = ["Chemical", "Disease"]
    for sent in nasty_sentences():
        relabeled = Sentence(
            sent.id,
            sent.text,
            sent.tokens,
            tuple(Span(s.start, s.end, types[i % 2]) for i, s in enumerate(sent.spans)),
        )
        res = roundtrip(fmt, relabeled, types)
        assert res.problems == [], (sent.id, res.problems)
        if fmt.exact:
            assert res.spans == list(relabeled.spans), (sent.id, fmt.answers(relabeled, types))
        else:  # `[` Chemical then `[` Disease: which is which is the declared ambiguity
            assert Counter(relabeled.mentions()) == Counter(
                (t, s.label) for t, s in zip(texts(sent, res.spans), res.spans, strict=True)
            )


@pytest.mark.parametrize("name", ["conv_term", "multi_term"])
def test_none_mention_is_not_the_empty_answer(name: str) -> None:
    fmt = FORMATS[name]
    sent = make(["None", "of", "these"], [(0, 1, "Disease")])
    [answer] = fmt.answers(sent, ["Disease"])
    assert answer != "None"
    assert roundtrip(fmt, sent, ["Disease"]).spans == list(sent.spans)
    # ... while the genuine empty answer still parses to nothing.
    empty = make(["None", "of", "these"])
    assert fmt.answers(empty, ["Disease"]) == ["None"]
    assert fmt.parse(["None"], empty, ["Disease"]).spans == []


@pytest.mark.parametrize("name", ALL)
def test_sentence_without_entities(name: str) -> None:
    fmt = FORMATS[name]
    sent = make("No entities here .")
    for types in (["Disease"], ["Chemical", "Disease"]):
        res = roundtrip(fmt, sent, types)
        assert res.spans == []
        assert res.problems == []
        assert res.predicted_mentions == 0


# --- multi-type corpora (BC5CDR) -----------------------------------------------------------------

BC5_TYPES = ["Chemical", "Disease"]
BC5 = make(
    "Torsade de pointes during dobutamine treatment and dobutamine - induced cardiomyopathy",
    [(0, 3, "Disease"), (4, 5, "Chemical"), (7, 8, "Chemical"), (10, 11, "Disease")],
)


@pytest.mark.parametrize("name", ALL)
def test_multi_type_round_trip(name: str) -> None:
    res = roundtrip(FORMATS[name], BC5, BC5_TYPES)
    assert res.spans == list(BC5.spans)
    assert res.problems == []


@pytest.mark.parametrize("name", [n for n in ALL if n.startswith("conv_")])
def test_conv_has_one_turn_pair_per_type(name: str) -> None:
    fmt = FORMATS[name]
    system, *messages = fmt.render(BC5, BC5_TYPES)
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2
    assert BC5.text in messages[0]["content"]
    assert BC5.text not in messages[2]["content"]
    assert "Chemical" in messages[0]["content"] and "Disease" in messages[2]["content"]
    # Each answer speaks of its own type only.
    chem_only = fmt.parse([messages[1]["content"], "None"], BC5, BC5_TYPES)
    assert {s.label for s in chem_only.spans} == {"Chemical"}
    assert texts(BC5, chem_only.spans) == ["dobutamine", "dobutamine"]


@pytest.mark.parametrize("name", [n for n in ALL if n.startswith("multi_")])
def test_multi_has_one_turn_naming_all_types(name: str) -> None:
    system, *messages = FORMATS[name].render(BC5, BC5_TYPES)
    assert system["role"] == "system"
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert BC5.text in messages[0]["content"]
    assert "Chemical" in messages[0]["content"] and "Disease" in messages[0]["content"]


def test_wrong_number_of_answers_is_a_problem_not_an_error() -> None:
    fmt = get_format("conv_term")
    res = fmt.parse(["dobutamine"], BC5, BC5_TYPES)
    assert texts(BC5, res.spans) == ["dobutamine"]
    assert any("expected 2 answers" in p for p in res.problems)


# --- tolerant parsing ----------------------------------------------------------------------

PD = make(
    "Patients with Parkinson ' s disease and colon cancer were seen",
    [(2, 6, "Disease"), (7, 9, "Disease")],
)


def test_truncated_json_keeps_complete_objects() -> None:
    answer = '[{"text": "colon cancer", "type": "Disease"}, {"text": "Parkin'
    res = get_format("multi_json").parse([answer], PD, ["Disease"])
    assert texts(PD, res.spans) == ["colon cancer"]
    assert res.problems


def test_json_in_chatty_text_and_non_list_json() -> None:
    fmt = get_format("multi_json")
    chatty = 'Sure! {"text": "colon cancer", "type": "Disease"} hope it helps'
    assert texts(PD, fmt.parse([chatty], PD, ["Disease"]).spans) == ["colon cancer"]
    for answer in ("42", '{"a": 1}', "[1, null]", "", "not json at all"):
        res = fmt.parse([answer], PD, ["Disease"])
        assert res.spans == []
        assert answer == "" or res.problems, answer


def test_inline_with_altered_words_keeps_surviving_spans() -> None:
    answer = "Patients wth [Parkinson ' s disease | Disease] and colon [cancer | Disease] were sen"
    res = get_format("multi_inline").parse([answer], PD, ["Disease"])
    assert texts(PD, res.spans) == ["Parkinson ' s disease", "cancer"]
    assert any("differs" in p for p in res.problems)


def test_inline_mention_written_without_token_spaces() -> None:
    answer = "Patients with [Parkinson's disease | Disease] and [colon cancer | Disease] were seen"
    res = get_format("multi_inline").parse([answer], PD, ["Disease"])
    assert res.spans == list(PD.spans)
    assert res.problems  # the text differs from the input


def test_inline_malformed_brackets_never_raise() -> None:
    fmt = get_format("multi_inline")
    for answer in ("[[[", "]]] | |", "Patients [with | ", "[colon cancer | Disease", "\\"):
        res = fmt.parse([answer], PD, ["Disease"])
        assert res.problems, answer
        assert all(0 <= s.start < s.end <= len(PD.text) for s in res.spans)


def test_bio_with_altered_words_keeps_surviving_spans() -> None:
    fmt = get_format("multi_bio")
    [gold] = fmt.answers(PD, ["Disease"])
    altered = gold.replace("with(O)", "wth(O)").replace("seen(O)", "sen(O)")
    res = fmt.parse([altered], PD, ["Disease"])
    assert res.spans == list(PD.spans)
    assert any("differ" in p for p in res.problems)
    dropped = gold.replace("Patients(O) ", "")
    res = fmt.parse([dropped], PD, ["Disease"])
    assert res.spans == list(PD.spans)
    assert res.problems


def test_bio_unknown_tags_and_untagged_words() -> None:
    fmt = get_format("multi_bio")
    [gold] = fmt.answers(PD, ["Disease"])
    res = fmt.parse([gold.replace("Patients(O)", "Patients(B-Gene)")], PD, ["Disease"])
    assert res.spans == list(PD.spans)
    assert any("B-Gene" in p for p in res.problems)
    res = fmt.parse([gold.replace("(I-Disease)", "(I-disease)")], PD, ["Disease"])
    assert res.spans == list(PD.spans)  # type names are read case-insensitively
    res = fmt.parse(["garbage"], PD, ["Disease"])
    assert res.spans == [] and res.problems


@pytest.mark.parametrize("name", ["multi_term", "multi_triple", "multi_json", "multi_inline"])
def test_unknown_type_is_dropped_and_counted(name: str) -> None:
    fmt = FORMATS[name]
    answers = {
        "multi_term": "Gene: colon cancer\nDisease: Parkinson ' s disease",
        "multi_triple": "colon cancer | Gene | 1\nParkinson ' s disease | Disease | 1",
        "multi_json": json.dumps(
            [
                {"text": "colon cancer", "type": "Gene"},
                {"text": "Parkinson ' s disease", "type": "Disease"},
            ]
        ),
        "multi_inline": (
            "Patients with [Parkinson ' s disease | Disease] and [colon cancer | Gene] were seen"
        ),
    }
    res = fmt.parse([answers[name]], PD, ["Chemical", "Disease"])
    assert texts(PD, res.spans) == ["Parkinson ' s disease"]
    assert any("Gene" in p for p in res.problems)


def test_triple_out_of_range_occurrence_falls_back_and_counts() -> None:
    fmt = get_format("multi_triple")
    res = fmt.parse(["colon cancer | Disease | 99"], PD, ["Disease"])
    assert texts(PD, res.spans) == ["colon cancer"]
    assert any("99" in p and "out of range" in p for p in res.problems)
    assert res.hallucinated == 0


def test_triple_malformed_lines() -> None:
    fmt = get_format("multi_triple")
    res = fmt.parse(["colon cancer | Disease | x\njunk\ncolon cancer|Disease"], PD, ["Disease"])
    assert texts(PD, res.spans) == ["colon cancer"]
    assert len(res.problems) == 4  # the 3 bad lines, then `colon cancer` a second time
    assert any("more often" in p for p in res.problems)


@pytest.mark.parametrize("name", ["multi_term", "multi_triple", "multi_json"])
def test_mention_not_in_text_is_hallucinated(name: str) -> None:
    fmt = FORMATS[name]
    answer = {
        "multi_term": "influenza\ncolon cancer",
        "multi_triple": "influenza | Disease | 1\ncolon cancer | Disease | 1",
        "multi_json": '[{"text": "influenza"}, {"text": "colon cancer"}]',
    }[name]
    res = fmt.parse([answer], PD, ["Disease"])
    assert texts(PD, res.spans) == ["colon cancer"]
    assert (res.predicted_mentions, res.hallucinated) == (2, 1)


@pytest.mark.parametrize("name", ["multi_term", "multi_triple", "multi_json", "conv_term"])
def test_mention_matched_ignoring_spaces(name: str) -> None:
    fmt = FORMATS[name]
    answer = {
        "multi_term": "Parkinson's disease",
        "conv_term": "Parkinson's disease",
        "multi_triple": "Parkinson's disease | Disease | 1",
        "multi_json": '[{"text": "Parkinson\'s disease", "type": "Disease"}]',
    }[name]
    res = fmt.parse([answer], PD, ["Disease"])
    assert res.spans == [PD.spans[0]]
    assert res.hallucinated == 0
    assert any("ignoring spaces" in p for p in res.problems)


def test_ignoring_spaces_still_respects_token_boundaries() -> None:
    sent = make(["Parkinson", "'", "sdisease"])
    res = get_format("multi_term").parse(["Parkinson's"], sent, ["Disease"])
    assert res.spans == [] and res.hallucinated == 1


def test_mention_listed_more_often_than_it_occurs() -> None:
    res = get_format("multi_term").parse(["colon cancer\ncolon cancer"], PD, ["Disease"])
    assert texts(PD, res.spans) == ["colon cancer"]
    assert any("more often" in p for p in res.problems)


def test_repeated_mentions_fill_occurrences_in_order() -> None:
    sent = make("APC and APC and APC", [(0, 1, "GENE"), (2, 3, "GENE"), (4, 5, "GENE")])
    for name in LOSSY:
        res = roundtrip(FORMATS[name], sent, ["GENE"])
        assert res.spans == list(sent.spans), name
        assert Counter(texts(sent, res.spans)) == Counter({"APC": 3})


UNKNOWN_TYPE_ANSWERS = {
    "multi_inline": "Patients with [Parkinson ' s disease | Gene] and colon cancer were seen",
    "multi_triple": "Parkinson ' s disease | Gene | 1",
    "multi_json": '[{"text": "Parkinson \' s disease", "type": "Gene"}]',
    "multi_bio": "Patients(O) with(O) Parkinson(B-Gene) '(I-Gene) s(I-Gene) disease(I-Gene) "
    "and(O) colon(O) cancer(O) were(O) seen(O)",
}


@pytest.mark.parametrize("name", sorted(UNKNOWN_TYPE_ANSWERS))
def test_a_mention_of_an_unknown_type_is_a_problem_not_a_predicted_mention(name: str) -> None:
    """Every writing counts the same: an unknown type is dropped as a parse problem, and
    predicted mentions (the hallucination rate's denominator) are those with a known type."""
    res = get_format(name).parse([UNKNOWN_TYPE_ANSWERS[name]], PD, ["Disease"])
    assert res.spans == []
    assert res.predicted_mentions == 0
    assert any("Gene" in p for p in res.problems), res.problems


WRITINGS = sorted({FORMATS[n].writing.name for n in ALL})


@pytest.mark.parametrize("writing", WRITINGS)
def test_an_answer_read_for_no_entity_types_is_problems_not_an_error(writing: str) -> None:
    """Parsers never raise on model output, even asked for no type at all (the writing is
    called directly: `Format.parse` would turn an exception into a problem)."""
    w = get_format(f"multi_{writing}").writing
    res = w.parse(w.render(PD, PD.spans, ["Disease"]), PD, [])
    assert res.spans == [] and res.predicted_mentions == 0
    assert res.problems


DEEP_JSON = ["[" * 1000 + "]" * 1000, "{" * 1000 + "}" * 1000, '[{"text": ' * 1000, "[" * 100_000]


@pytest.mark.parametrize("answer", DEEP_JSON, ids=["lists", "objects", "open-objects", "open"])
def test_json_nested_too_deep_is_a_problem_not_an_error(answer: str) -> None:
    res = get_format("multi_json").writing.parse(answer, PD, ["Disease"])
    assert res.spans == []
    assert any("deeper" in p for p in res.problems), res.problems


def test_json_nested_too_deep_keeps_its_flat_objects() -> None:
    inner = '{"text": "colon cancer", "type": "Disease"}'
    answer = "[" * 1000 + inner + ", " + '{"text": ' + "[" * 1000 + "]" * 1000 + "}" + "]" * 1000
    res = get_format("multi_json").parse([answer], PD, ["Disease"])
    assert texts(PD, res.spans) == ["colon cancer"]
    assert not any(p.startswith("parser error") for p in res.problems), res.problems
    assert any("unreadable object" in p and len(p) < 300 for p in res.problems), res.problems


@pytest.mark.parametrize(
    ("name", "answer", "ranges", "expected", "dropped"),
    [
        ("term", "cancer\nbreast cancer\ntumour", [(8, 10)], "cancer\ntumour", 1),
        ("term", "cancer\nbreast cancer", [(6, 7)], "breast cancer", 1),  # its newline
        ("term", "cancer\nbreast cancer", [(0, 21)], "None", 2),
        ("term", "None", [(0, 2)], "None", 0),
        (
            "triple",
            "cancer | Disease | 1\ntumour | Disease | 1",
            [(30, 31)],
            "cancer | Disease | 1",
            1,
        ),
        (
            "json",
            '[{"text": "a", "type": "D"}, {"text": "b", "type": "D"}]',
            [(27, 29)],
            '[{"text": "a", "type": "D"}]',
            1,
        ),
        (
            "json",
            '[{"text": "a", "type": "D"}, {"text": "b", "type": "D"}]',
            [(55, 56)],
            '[{"text": "a", "type": "D"}, {"text": "b", "type": "D"}]',
            0,
        ),
        ("json", '[{"text": "a", "type": "D"}]', [(2, 4)], "[]", 1),
        ("inline", "[Disease cancer] and", [(1, 3)], "[Disease cancer] and", 0),
    ],
)
def test_without_items_drops_the_items_a_range_touches(
    name: str, answer: str, ranges: list[tuple[int, int]], expected: str, dropped: int
) -> None:
    writing = get_format(f"conv_{name}").writing
    assert writing.without_items(answer, ranges) == (expected, dropped)
