"""The extraction job's config (`biogner extract`, `jobs/extract.py`): pydantic only."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from biogner.models.config import GenerationConfig
from biogner.tracking.config import TrackingConfig

InputFormat = Literal["auto", "jsonl", "text", "pubtator", "bioc-xml", "bioc-json"]
OutputFormat = Literal["jsonl", "parquet", "pubtator", "bioc-xml", "bioc-json"]
INPUT_FORMATS: tuple[str, ...] = get_args(InputFormat)
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)


class ExtractConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="models:/<name>@<alias>, runs:/<id>/model, or a dir")
    inputs: list[str] = Field(..., min_length=1, description="files or folders of documents")
    output: str = Field(..., description="folder for the output blocks, manifest and errors")
    input_format: InputFormat = "auto"
    output_format: OutputFormat = "jsonl"
    entity_types: list[str] | None = Field(None, description="default: all the model knows")
    min_score: float = Field(
        0.0, ge=0.0, le=1.0, description="leave out entities scored below this (0: keep all)"
    )
    docs_per_block: int = Field(
        256, ge=1, description="documents per output file: the unit a rerun skips when done"
    )
    max_doc_chars: int = Field(
        200_000, ge=1, description="a longer document goes to the errors file"
    )
    window_tokens: int = Field(128, ge=1, description="tokens per model input (long sentences)")
    window_chars: int = Field(1_000, ge=1, description="characters per model input")
    num_actors: int = Field(1, ge=1)
    use_gpu: bool = False
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    tracking: TrackingConfig = Field(
        default_factory=lambda: TrackingConfig(experiment="biogner-extract")
    )
    stop_after_blocks: int | None = Field(
        None, ge=1, description="end the job after this many new blocks (as if killed); tests"
    )
