"""The model a replica serves: an `Annotator` plus where it came from, for `/v1/model`, the
swap on an alias move and the clean-up of its downloaded files.

Why apart from the replica: loading resolves a registry URI and reads files (blocking, run
off the event loop), and tests load and check a model without a Serve deployment."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from biogner.annotate.annotator import Annotator, EntityTypeError
from biogner.generation import Generator
from biogner.models.card import ModelCard
from biogner.models.config import GenerationConfig
from biogner.serve.requests import RequestError
from biogner.serve.schema import Limits, ModelRef
from biogner.tracking.config import TrackingConfig
from biogner.tracking.open import open_model
from biogner.tracking.registry import model_version
from biogner.tracking.uris import parse_model_uri


@dataclass
class LoadedModel:
    """A model in memory plus what the service reports about it."""

    annotator: Annotator
    ref: ModelRef
    loaded_at: float = field(default_factory=time.time)
    download_dir: Path | None = None

    @property
    def card(self) -> ModelCard:
        return self.annotator.card

    @property
    def generator(self) -> Generator:
        return self.annotator.generator

    @property
    def format(self) -> str:
        """The format served: the one asked for, else the card's own; never a format the
        model was not trained in (`ModelCard.serving_format`)."""
        return self.annotator.format

    @property
    def entity_types(self) -> list[str]:
        return self.annotator.entity_types

    def close(self) -> None:
        """Delete the downloaded copy (weights are already in memory)."""
        if self.download_dir is not None:
            shutil.rmtree(self.download_dir, ignore_errors=True)
            self.download_dir = None

    def select_types(self, requested: Sequence[str] | None) -> list[str]:
        """The entity types to extract (`Annotator.select_types`); a bad list is a 422."""
        try:
            return self.annotator.select_types(requested)
        except EntityTypeError as exc:
            raise RequestError(422, exc.code, str(exc), "entity_types") from None

    def asked_types(self, types: Sequence[str]) -> list[str]:
        return self.annotator.asked_types(types)


def alias_version(model_uri: str, tracking: TrackingConfig) -> str:
    """The registry version a `models:/<name>@<alias>` URI points to now (a registry lookup:
    blocking; the alias follower runs it off the replica's event loop)."""
    uri = parse_model_uri(model_uri)
    if uri.alias is None:
        raise ValueError(f"{model_uri} names no registry alias (models:/<name>@<alias>)")
    return str(model_version(tracking, uri).version)


def load(
    model_uri: str,
    tracking: TrackingConfig,
    generation: GenerationConfig,
    fmt: str | None = None,
    limits: Limits | None = None,
) -> LoadedModel:
    """Resolve `model_uri` (registry, run or directory) once, download it and load it, to
    answer in `fmt` (default: the card's format; one it was not trained in: ModelCardError),
    its texts cut into windows as `limits` say."""
    limits = limits or Limits()
    model = open_model(model_uri, tracking, temporary=True)
    try:
        annotator = Annotator.from_dir(
            model.dir, generation, fmt, limits.window_tokens, limits.window_chars
        )
    except BaseException:
        model.close()
        raise
    ref = ModelRef(name=model.name, version=model.version, uri=model_uri, run_id=model.run_id)
    return LoadedModel(annotator, ref, download_dir=model.download_dir)


__all__ = ["LoadedModel", "alias_version", "load"]
