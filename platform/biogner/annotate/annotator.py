"""`Annotator`: a model in memory that turns texts into entities, the one way from texts to
entities that the Python API, the extraction job, the MLflow pyfunc and the endpoint share.

Why one piece: the path (texts -> sentence windows -> generation in the model's format ->
entities with offsets in the texts as sent) was written three times, once per way of running
a model, and the three could drift apart. No Ray, no MLflow here: `biogner.load` resolves a
model URI and hands its folder to `Annotator.from_dir`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from biogner.annotate.assemble import assemble
from biogner.annotate.entities import Entity, TextResult
from biogner.annotate.text import Window
from biogner.annotate.windows import WINDOW_CHARS, WINDOW_TOKENS, text_windows
from biogner.generation import Generator
from biogner.generation.routing import ask_plan
from biogner.models.card import ModelCard, read_card
from biogner.models.config import GenerationConfig


class EntityTypeError(ValueError):
    """Entity types a model cannot be asked for; `code` says why (`empty`,
    `unknown_entity_types`), for the endpoint's error body."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def select_types(known: Sequence[str], requested: Sequence[str] | None) -> list[str]:
    """The entity types to extract of the `known` ones, in the model's own order (conv turns
    follow it); None: all it knows. Empty or unknown types: EntityTypeError, naming them.
    (A function of the card alone: the extraction job checks before it loads the model.)"""
    if requested is None:
        return list(known)
    if isinstance(requested, str):
        requested = [requested]
    if not requested:
        raise EntityTypeError("empty", "entity_types must not be empty")
    unknown = sorted({t for t in requested if t not in known})
    if unknown:
        raise EntityTypeError(
            "unknown_entity_types", f"unknown entity types {unknown}; this model knows {known}"
        )
    wanted = set(requested)
    return [t for t in known if t in wanted]


@dataclass
class Annotator:
    """A model that extracts entities from texts in the format it answers in (`format`).

    `extract(texts)` gives each text's entities, `pipe(texts)` streams them; long sentences
    are cut into windows of at most `window_tokens` tokens and `window_chars` characters."""

    generator: Generator
    card: ModelCard
    format: str
    window_tokens: int = WINDOW_TOKENS
    window_chars: int = WINDOW_CHARS

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        generation: GenerationConfig | None = None,
        format: str | None = None,
        window_tokens: int = WINDOW_TOKENS,
        window_chars: int = WINDOW_CHARS,
    ) -> Annotator:
        """Load the model in `model_dir` (a biogner model folder: weights and card) to answer
        in `format` (default: its card's; one it was not trained in: ModelCardError)."""
        card = read_card(model_dir)
        served = card.serving_format(format)
        generator = Generator(model_dir, generation or GenerationConfig())
        return cls(generator, card, served, window_tokens, window_chars)

    @property
    def entity_types(self) -> list[str]:
        """The types the model knows, in its own order."""
        return list(self.card.entity_types)

    def select_types(self, requested: Sequence[str] | None) -> list[str]:
        """The entity types to extract (`select_types` of the model's own)."""
        return select_types(self.card.entity_types, requested)

    def asked_types(self, types: Sequence[str]) -> list[str]:
        """Every type the model is asked to answer `types`: the whole type groups they
        belong to (`generation.routing`), in the model's order. Requests whose types are
        asked alike are generated together."""
        plan = ask_plan(types, self.card.type_groups)
        asked = {t for group in plan for t in group}
        known = self.card.entity_types
        return [t for t in known if t in asked] + sorted(asked - set(known))

    def windows(self, texts: Sequence[str], max_windows: int | None = None) -> list[list[Window]]:
        """Each text's model inputs (`annotate.windows.text_windows`)."""
        return text_windows(texts, self.window_tokens, self.window_chars, max_windows)

    def annotate(
        self,
        texts: Sequence[str],
        entity_types: Sequence[str] | None = None,
        min_score: float | None = None,
    ) -> list[TextResult]:
        """Each text's entities and whether the model read it all (`TextResult`)."""
        return self.annotate_windows(texts, self.windows(texts), entity_types, min_score)

    def annotate_windows(
        self,
        texts: Sequence[str],
        windows: Sequence[Sequence[Window]],
        entity_types: Sequence[str] | None = None,
        min_score: float | None = None,
    ) -> list[TextResult]:
        """`annotate` of texts already cut into `windows` (a caller that counts them)."""
        types = self.select_types(entity_types)
        sentences = [w.sentence for ws in windows for w in ws]
        generations = self.generator.extract(sentences, self.format, types) if sentences else []
        return assemble(texts, windows, generations, set(types), min_score or 0.0)

    def annotate_rows(
        self,
        texts: Sequence[str],
        types_per_text: Sequence[Sequence[str] | None],
        min_score: float | None = None,
    ) -> list[TextResult]:
        """`annotate` where each text names its own types (None: all); texts asking the
        same types are generated together."""
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, types in enumerate(types_per_text):
            groups.setdefault(tuple(self.select_types(types)), []).append(i)
        out: dict[int, TextResult] = {}
        for types, rows in groups.items():
            results = self.annotate([texts[i] for i in rows], list(types), min_score)
            out.update(zip(rows, results, strict=True))
        return [out[i] for i in range(len(texts))]

    def extract(
        self,
        texts: Sequence[str],
        entity_types: Sequence[str] | None = None,
        min_score: float | None = None,
    ) -> list[list[Entity]]:
        """Per text, the entities found (offsets into that text; `text[start:end]` is the
        entity's `text`), of `entity_types` (default: all the model knows), scored at least
        `min_score` (default: all)."""
        if isinstance(texts, str):
            raise TypeError("extract takes a list of texts; for one text: extract([text])[0]")
        return [r.entities for r in self.annotate(texts, entity_types, min_score)]

    def pipe(
        self,
        texts: Iterable[str],
        batch_size: int = 32,
        entity_types: Sequence[str] | None = None,
        min_score: float | None = None,
    ) -> Iterator[list[Entity]]:
        """`extract` over a stream of texts, `batch_size` texts at a time: one list of
        entities per text, in order, without holding the stream in memory."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        types = self.select_types(entity_types)  # a bad type fails before any text is read
        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) == batch_size:
                yield from self.extract(batch, types, min_score)
                batch = []
        if batch:
            yield from self.extract(batch, types, min_score)


__all__ = ["Annotator", "EntityTypeError", "select_types"]
