"""The model card: what `biogner_model.json` says about a trained model, with a schema.

Why typed: evaluation, serving, the sweep and extraction all read it, and an untyped dict let
each reader decide what a missing key meant (a multi-format model was served in `formats[0]`
without a word). Pydantic only (a config module): the HTTP ingress and configs import it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from biogner.config import describe_errors
from biogner.models.config import METADATA_FILE

CARD_VERSION = 1


class ModelCardError(ValueError):
    """A missing or malformed card; the message names the file and the field."""


class ModelCard(BaseModel):
    """`biogner_model.json`. Keys it does not know are kept (a newer writer's additions)."""

    model_config = ConfigDict(extra="allow")

    card_version: int = Field(CARD_VERSION, description="the schema version that wrote it")
    base_model: str = Field("", description="the model spec it was fine-tuned from")
    format: str = Field(..., description="the format it answers in by default")
    formats: list[str] = Field(
        default_factory=list, description="every format it was trained in (default: [format])"
    )
    entity_types: list[str] = Field(..., min_length=1)
    type_groups: list[list[str]] = Field(
        default_factory=list,
        description="the types it was asked together in training, one group per corpus "
        "(default: all its types, one group)",
    )
    corpora: list[str] = Field(default_factory=list, description="the corpora's names")
    corpus_refs: list[str] = Field(
        default_factory=list,
        description="how to find each corpus again: a built-in or registered name, or its "
        "card's path (`evaluate --corpus all` reads these)",
    )
    lora: bool = False

    @model_validator(mode="after")
    def _defaults_and_consistency(self) -> ModelCard:
        if not self.formats:
            self.formats = [self.format]
        if self.format not in self.formats:
            raise ValueError(f"format {self.format!r} is not among formats {self.formats}")
        if not self.type_groups:
            self.type_groups = [list(self.entity_types)]
        unknown = sorted({t for g in self.type_groups for t in g} - set(self.entity_types))
        if unknown:
            raise ValueError(f"type_groups name types not in entity_types: {unknown}")
        return self

    def serving_format(self, requested: str | None) -> str:
        """The format to answer in: `requested` if the model was trained in it, its own
        default otherwise; a format it never learned is refused (it would write nonsense)."""
        if requested is None:
            return self.format
        if requested not in self.formats:
            raise ModelCardError(
                f"this model was trained in {self.formats}, not in {requested!r}: "
                "serve or evaluate it in one of those"
            )
        return requested


def has_card(model_dir: str | Path) -> bool:
    """Whether `model_dir` is a biogner model (a bare HF directory, as benches use, is not)."""
    return (Path(model_dir) / METADATA_FILE).is_file()


def card_json(model_dir: str | Path) -> dict[str, Any]:
    """The card as written (its JSON object, keys as the writer put them), checked against
    the schema first: for callers that pass it on (the pyfunc's `metadata`, a logged
    model's metadata) rather than read it."""
    path = Path(model_dir) / METADATA_FILE
    data = _load(path)
    _validate(path, data)
    return data


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelCardError(
            f"{path} not found: not a biogner model directory (log it with biogner train)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelCardError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelCardError(f"{path}: must be a JSON object")
    return data


def read_card(model_dir: str | Path) -> ModelCard:
    """The card of a biogner model directory; ModelCardError names the file and the field."""
    path = Path(model_dir) / METADATA_FILE
    return _validate(path, _load(path))


def _validate(path: Path, data: dict[str, Any]) -> ModelCard:
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise ModelCardError(f"{path}: {describe_errors(exc, '<card>')}") from None
