"""Which corpora exist: the built-in cards (shipped in `corpora/cards/`), the cards a user
registered (`biogner corpora register`, kept in `<BIOGNER_HOME>/.biogner/corpora/`), and any
card named by its path; and a split's sentences by any of these references (`load_split`).
No corpus is written in code: a corpus is a card.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from biogner.corpora.card import (
    SPLITS,
    CardError,
    CorpusCard,
    card_yaml,
    load_card,
    looks_like_card_path,
)
from biogner.corpora.data_dir import DATA_DIR_ENV, resolve_data_dir
from biogner.corpora.iob import ReadStats
from biogner.corpora.load import read_corpus
from biogner.corpora.problems import CorpusProblemError
from biogner.home import biogner_home
from biogner.types import Sentence

BUILTIN_CARDS = Path(__file__).parent / "cards"


@cache
def builtin_corpora() -> dict[str, CorpusCard]:
    """The built-in corpora, by name, in the order of their card files."""
    cards = [load_card(p) for p in sorted(BUILTIN_CARDS.glob("*.yaml"))]
    return {card.name: card for card in cards}


def registered_dir() -> Path:
    return biogner_home() / ".biogner" / "corpora"


def registered_corpora() -> dict[str, CorpusCard]:
    """The cards registered in this BIOGNER_HOME, by name."""
    folder = registered_dir()
    if not folder.is_dir():
        return {}
    cards = [load_card(p) for p in sorted(folder.glob("*.yaml"))]
    return {card.name: card for card in cards}


def known_corpora() -> dict[str, CorpusCard]:
    """Built-in then registered cards, by name."""
    return {**builtin_corpora(), **registered_corpora()}


# the builtins, by name: `all` in configs, the order of report tables
CORPORA = builtin_corpora()


def get_corpus(ref: str | CorpusCard) -> CorpusCard:
    """A corpus by built-in or registered name (case-insensitive) or by its card's path.

    A card without `entity_types` gets the types found in its files (sorted), so that every
    caller sees the same types. KeyError lists the known names."""
    if isinstance(ref, CorpusCard):
        return _with_types(ref)
    if looks_like_card_path(ref) or Path(ref).expanduser().is_file():
        path = Path(ref).expanduser()
        if not path.is_file():
            raise KeyError(f"corpus card {ref} not found")
        try:
            card = load_card(path)
        except CardError as exc:
            raise KeyError(str(exc)) from None
        clash = {k.lower(): v for k, v in builtin_corpora().items()}.get(card.name.lower())
        if clash is not None:
            raise KeyError(f"{path}: name {card.name!r} is a built-in corpus; choose another")
        return _with_types(card)
    known = known_corpora()
    by_lower = {name.lower(): card for name, card in known.items()}
    found = by_lower.get(ref.lower())
    if found is None:
        raise KeyError(
            f"unknown corpus {ref!r}; known: {', '.join(known)} (or give a card's path: "
            "a .yaml file naming the corpus's files, see docs/your-corpus.md)"
        )
    return _with_types(found)


def _with_types(card: CorpusCard) -> CorpusCard:
    if card.entity_types is not None:
        return card
    return card.model_copy(update={"entity_types": read_corpus(card).types})


def register_card(path: str | Path) -> Path:
    """Copy a card into this BIOGNER_HOME's registry (its files stay where they are), so that
    configs and commands can name it; a card of the same name is replaced."""
    card = get_corpus(str(Path(path).expanduser().resolve()))
    folder = registered_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{card.name}.yaml"
    raw = load_card(path)  # as written: types found are not frozen into the copy
    out.write_text(f"# registered from {Path(path).resolve()}\n{card_yaml(raw)}", encoding="utf-8")
    return out


def load_split(
    corpus: str | CorpusCard,
    split: str,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    stats: ReadStats | None = None,
    accept: Sequence[str] = (),
) -> list[Sentence]:
    """Sentences of one corpus split (the first `limit` when given); ids are
    `<corpus>-<split>-<n>`. A problem that would lose or change annotations raises
    CorpusProblemError (unless the card or `accept` accepts its kind)."""
    card = get_corpus(corpus) if isinstance(corpus, str) else corpus
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    read = read_corpus(card, data_dir, [split], stats)
    blocking = read.blocking(accept)
    if blocking:
        raise CorpusProblemError(card.name, blocking)
    sentences = read.splits[split].sentences
    return list(sentences[:limit] if limit is not None else sentences)  # the read is shared


__all__ = [
    "CORPORA",
    "DATA_DIR_ENV",
    "SPLITS",
    "builtin_corpora",
    "get_corpus",
    "known_corpora",
    "load_split",
    "register_card",
    "registered_corpora",
    "resolve_data_dir",
]
