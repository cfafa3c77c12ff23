"""What can be wrong in a corpus, where, and whether it loses or changes annotations.

Why one list: the readers, the splitter and `biogner corpora check` all report problems, and
training refuses a corpus on the same rule the check's exit code follows: a problem that
would lose or change an annotation blocks unless the card (or `--accept`) accepts its kind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# A type name every writing can hold: word characters and `_ . + / -`, single inner spaces.
TYPE_NAME = re.compile(r"^[^\W_][\w.+/-]*(?: [\w.+/-]+)*$")

# kind -> (blocks by default: it loses or changes annotations, what it means)
KINDS: dict[str, tuple[bool, str]] = {
    "unreadable": (True, "a line or file that is not the declared format; what it held is lost"),
    "offset_out_of_range": (True, "a mention's offsets lie outside its text; the mention is lost"),
    "text_mismatch": (
        True,
        "the text a mention says it covers differs from the text at its offsets; kept at its "
        "offsets",
    ),
    "empty_mention": (True, "a mention with no characters (or only spaces); it is lost"),
    "undeclared_type": (True, "a type the card's entity_types does not list; the mention is lost"),
    "missing_type": (True, "a mention without a type; it is lost"),
    "unusable_type": (
        True,
        "a type name the writings cannot hold (brackets, pipes, quotes, colons, line breaks); "
        "the mention is lost: rename the type",
    ),
    "nested": (
        False,
        "a mention inside another: kept; a writing that cannot hold it (bio) keeps one of "
        "them, so training in such a writing refuses it (`formats check` shows which)",
    ),
    "overlap": (
        False,
        "two mentions that cross: kept; writings that rewrite the sentence (inline, bio) drop "
        "one, so training in such a writing refuses it (`formats check` shows which)",
    ),
    "discontinuous": (True, "a mention in several pieces: none of the writings hold it; lost"),
    "duplicate_document": (True, "a document id twice in one split: the second is lost"),
    "document_in_two_splits": (True, "a document in two splits: evaluation would see training"),
    "duplicate_mention": (False, "the same mention twice: kept once"),
    "crosses_sentence": (False, "a mention over a sentence break: the sentences are joined"),
    "inside_word": (False, "a mention edge inside a word: the word is split there"),
    "whitespace_edge": (False, "a mention that starts or ends on a space: trimmed"),
    "empty_document": (False, "a document with no text: skipped"),
    "repaired_tag": (False, "an I- tag after O or another type: read as B- (CoNLL's rule)"),
    "type_absent": (
        False,
        "a type with no mention in a split: that split cannot score it (train: never learned)",
    ),
    "rejected_record": (False, "an example answered reject or ignore (Prodigy): not read"),
    "not_entity": (
        False,
        "a relation, event, attribute, normalization or note: not an entity, counted",
    ),
}


@dataclass(frozen=True)
class Problem:
    """One problem with the file and line (1-based; 0 when no line applies) it was found at."""

    file: str
    line: int
    kind: str
    message: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}")

    def blocks(self, accepted: frozenset[str] | set[str] = frozenset()) -> bool:
        """Whether this problem loses or changes annotations and its kind is not accepted."""
        return KINDS[self.kind][0] and self.kind not in accepted

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.kind}: {self.message}"


# kinds that lose annotations only in some writings: blocking is decided per format
FORMAT_DEPENDENT = ("nested", "overlap")


class CorpusProblemError(ValueError):
    """A corpus whose problems would lose or change annotations; lists the first of them
    (and, for nesting a writing cannot hold, which formats lose what)."""

    def __init__(
        self, corpus: str, problems: list[Problem], shown: int = 10, losses: Sequence[str] = ()
    ) -> None:
        lines = [*losses[:shown], *(str(p) for p in problems[:shown])]
        more = len(problems) - min(len(problems), shown)
        kinds = sorted({p.kind for p in problems})
        super().__init__(
            f"corpus {corpus}: {len(problems)} problem(s) would lose or change annotations:\n  "
            + "\n  ".join(lines)
            + (f"\n  ... and {more} more" if more > 0 else "")
            + f"\nrun `biogner corpora check` on it; fix the files, or accept the kinds in the "
            f"card (`accept: [{', '.join(kinds)}]`)"
        )
        self.problems = problems
