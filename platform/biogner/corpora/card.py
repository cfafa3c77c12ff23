"""The corpus card: a small YAML file naming a corpus, its annotation format and its files.

Why a file and not code: a lab brings its own annotations (brat, doccano, Prodigy, PubTator,
BioC, CoNLL) and must not edit the installed package to train on them. The built-in corpora
are cards too (shipped in `corpora/cards/`, their download URLs and checksums in them), so
every corpus takes one path through the code.

```yaml
name: my-ade                 # letters, digits and `._+-`
format: brat                 # iob2 | conll | jsonl | brat | pubtator | bioc-xml | bioc-json
train: export/train/         # a file or a folder, relative to this card
dev: export/dev/
test: export/test.txt
entity_types: [Drug, AdverseEvent]   # optional: else the types found, in a stable order
split: {train: 0.8, dev: 0.1, test: 0.1, seed: 13}  # when only one file or folder is given
accept: [nested]             # problem kinds that do not stop training (biogner corpora check)
description: ...
license: ...
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from biogner.config import describe_errors
from biogner.corpora.problems import KINDS, TYPE_NAME

SPLITS = ("train", "dev", "test")
CARD_SUFFIXES = (".yaml", ".yml")
AnnotationFormat = Literal["iob2", "conll", "jsonl", "brat", "pubtator", "bioc-xml", "bioc-json"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$"


class CardError(ValueError):
    """A card that cannot be read or is invalid; the message names the file and field."""


class SplitSource(BaseModel):
    """One split's file or folder; a built-in corpus also says where to download it."""

    model_config = ConfigDict(extra="forbid")

    path: str
    url: str | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class SplitFractions(BaseModel):
    """Document-level fractions for a corpus exported as one file or folder."""

    model_config = ConfigDict(extra="forbid")

    train: float = Field(0.8, ge=0, le=1)
    dev: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    seed: int = 13

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitFractions:
        total = self.train + self.dev + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + dev + test must be 1, got {total:g}")
        return self


class CorpusCard(BaseModel):
    """A corpus: its name, annotation format, files per split and what it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., pattern=NAME_PATTERN)
    format: AnnotationFormat
    train: SplitSource | None = None
    dev: SplitSource | None = None
    test: SplitSource | None = None
    entity_types: tuple[str, ...] | None = Field(
        None, description="the types, in the order prompts ask them; default: those found"
    )
    split: SplitFractions | None = None
    accept: tuple[str, ...] = Field(
        (), description="problem kinds of `biogner corpora check` that do not block training"
    )
    description: str = ""
    license: str = ""
    location: Literal["card", "data_dir"] = Field(
        "card",
        description="where split paths are relative to: the card's folder, or (built-in "
        "corpora) the data directory's `<name>/` folder",
    )
    # the folder split paths are relative to: set when the card is loaded, never written
    root: str | None = Field(None, exclude=True)
    card_path: str | None = Field(None, exclude=True)

    @field_validator("train", "dev", "test", mode="before")
    @classmethod
    def _path_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("entity_types")
    @classmethod
    def _types(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must not be empty (leave it out to use the types found)")
        for label in value:
            if not TYPE_NAME.match(label):
                raise ValueError(
                    f"type {label!r}: word characters and `_ . + / -`, single inner spaces"
                )
        if len(set(value)) != len(value):
            raise ValueError(f"types repeat: {list(value)}")
        return value

    @field_validator("accept")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [k for k in value if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown problem kinds {unknown}; known: {', '.join(KINDS)}")
        return value

    @model_validator(mode="after")
    def _splits(self) -> CorpusCard:
        given = [s for s in SPLITS if getattr(self, s) is not None]
        if not given:
            raise ValueError("name at least one of train, dev, test")
        if self.split is not None and len(given) != 1:
            raise ValueError(f"`split` divides one file or folder; this card names {given}")
        return self

    # -- what the rest of the code asks of a corpus -------------------------------------
    @property
    def folder(self) -> str:
        """The data directory's folder of a built-in corpus."""
        return self.name

    @property
    def types(self) -> tuple[str, ...]:
        """The entity types (those declared; `get_corpus` fills in those found otherwise)."""
        return self.entity_types or ()

    @property
    def builtin(self) -> bool:
        return self.location == "data_dir"

    @property
    def ref(self) -> str:
        """What names this corpus in a config another process reads: the name of a built-in
        or registered card, else the card's absolute path."""
        return self.card_path if self.card_path and not self.builtin else self.name

    @property
    def declared_splits(self) -> tuple[str, ...]:
        """The splits the corpus has: those named, or all three when one is divided."""
        if self.split is not None:
            return SPLITS
        return tuple(s for s in SPLITS if getattr(self, s) is not None)

    def source(self, split: str) -> SplitSource:
        value = getattr(self, split) if split in SPLITS else None
        if value is None:
            raise KeyError(f"corpus {self.name} has no {split!r} split")
        return value

    def url(self, split: str) -> str:
        url = self.source(split).url
        if url is None:
            raise KeyError(f"corpus {self.name}: no download URL for {split}")
        return url

    def sha256(self, split: str) -> str | None:
        return self.source(split).sha256

    def split_path(self, split: str, data_dir: Path | None = None) -> Path:
        """The file or folder of a split named in the card (not of a divided one)."""
        rel = Path(self.source(split).path).expanduser()
        if rel.is_absolute():
            return rel
        if self.builtin:
            if data_dir is None:
                raise ValueError(f"corpus {self.name}: a data directory is needed")
            return data_dir / self.folder / rel
        if self.root is None:
            raise ValueError(f"corpus {self.name}: its card's folder is unknown")
        return Path(self.root) / rel


def load_card(path: str | Path) -> CorpusCard:
    """Read and validate a card; relative split paths are taken from the card's folder."""
    path = Path(path).expanduser().resolve()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise CardError(f"{path}: cannot read the card ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: not YAML ({exc})") from None
    return card_from_mapping(data, path)


def card_from_mapping(data: Any, path: Path) -> CorpusCard:
    """A card from its parsed YAML, `path` naming it in errors and anchoring its paths."""
    if not isinstance(data, dict):
        raise CardError(f"{path}: a card is a YAML mapping (name, format, train, ...)")
    root = data.pop("root", None)  # a registered copy keeps the original card's folder
    try:
        card = CorpusCard.model_validate(data)
    except ValidationError as exc:
        raise CardError(f"{path}: {describe_errors(exc, '<card>')}") from None
    return card.model_copy(update={"root": str(root or path.parent), "card_path": str(path)})


def looks_like_card_path(ref: str) -> bool:
    """Whether a corpus reference names a card file rather than a corpus name."""
    return ref.lower().endswith(CARD_SUFFIXES) or "/" in ref or ref.startswith("~")


def card_yaml(card: CorpusCard) -> str:
    """The card as YAML, with `root` set so that a copy elsewhere reads the same files."""
    data = card.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    data["name"], data["format"] = card.name, card.format
    if card.root and not card.builtin:
        data["root"] = card.root
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
