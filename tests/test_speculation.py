"""Mention drafts: where an answer's tail is found in the sentence, the text after it."""

from __future__ import annotations

import pytest

from biogner.generation.speculation import MIN_MATCH, MentionDrafter, follows

TEXT = "Cisplatin induced nephrotoxicity in rats; cisplatin-treated rats lost magnesium."


@pytest.mark.parametrize(
    ("written", "after"),
    [
        ("Chemical: Cispl", "Cispl"),  # a mention begun after a type name
        ("nephrotoxicity\nDisease: nephro", "nephro"),  # a later line, the tail only
        ("Disease: nephrotoxicity in r", "nephrotoxicity in r"),  # longest tail wins
        ("cisplatin-tre", "cisplatin-tre"),  # case kept: the second occurrence
        ("rats", "rats"),  # the first of two occurrences
    ],
)
def test_the_longest_tail_found_decides_where_the_draft_starts(written: str, after: str) -> None:
    assert follows(written, TEXT) == TEXT.index(after) + len(after)


@pytest.mark.parametrize("written", ["", "Ci", "xyz", "Disease: ", "Chemical:   ", "None"])
def test_no_draft_without_a_tail_of_the_sentence(written: str) -> None:
    assert follows(written, TEXT) is None


def test_a_short_tail_is_not_enough() -> None:
    assert MIN_MATCH >= 3
    assert follows("\nin", TEXT) is None  # two letters: found everywhere
    assert follows("\nin ", TEXT) == TEXT.index("in ") + 3


class CharTokenizer:
    """One token per character (ids are code points): what a draft holds is visible."""

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


def test_the_draft_is_the_sentence_after_the_mention_begun() -> None:
    drafter = MentionDrafter(CharTokenizer(), TEXT, length=8)
    written = [ord(c) for c in "Disease: nephrotox"]
    assert CharTokenizer().decode(drafter.draft(written, 6)) == "icity "
    assert drafter.draft(written, 0) == []
    assert drafter.draft([ord(c) for c in "magnesium."], 4) == []  # the sentence's end
    assert drafter.draft([ord(c) for c in "Disease: "], 4) == []


def test_a_cut_character_drafts_nothing() -> None:
    class Cut(CharTokenizer):
        def decode(self, ids: list[int]) -> str:
            return super().decode(ids) + "\ufffd"

    assert MentionDrafter(Cut(), TEXT, length=8).draft([ord("C")] * 5, 4) == []
