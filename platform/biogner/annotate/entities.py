"""What every way of running a model returns: entities with exact offsets in the text sent.

Why here and not in the HTTP schema: the Python API (`biogner.load`), the extraction job, the
MLflow pyfunc and the endpoint return the very same objects; the endpoint's response schema
embeds them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Entity(BaseModel):
    """One mention the model found: `text == texts[i][start:end]`."""

    start: int = Field(description="character offset in the text (inclusive)")
    end: int = Field(description="character offset in the text (exclusive)")
    label: str
    text: str = Field(description="text[start:end]")
    score: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="confidence: the model's probability of the tokens that wrote this entity "
        "(among those its grammar allowed); None when the generation config turns scores off",
    )


class TextResult(BaseModel):
    """One text's entities and whether the model read all of it."""

    entities: list[Entity]
    truncated: bool = Field(description="part of the text was cut (window character limit)")
    incomplete: bool = Field(
        False, description="a model answer hit its token budget: entities may be missing"
    )


__all__ = ["Entity", "TextResult"]
