"""The evaluation job's config (`biogner evaluate`, each sweep cell): pydantic only."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from biogner.corpora.registry import get_corpus
from biogner.formats import get_format
from biogner.models.config import GenerationConfig
from biogner.tracking.config import TrackingConfig

FREE_DECODING = "free"  # metric names of a free-decoding evaluation: `test_free_f1`, ...


def split_prefix(split: str, constrained: bool = True) -> str:
    """Metric-name prefix of an evaluation: `test_`, or `test_free_` for free decoding.

    Why two names: the study scores the same checkpoint both ways, and a free evaluation
    must never overwrite (or be selected as) the constrained score that serving delivers."""
    return f"{split}_" if constrained else f"{split}_{FREE_DECODING}_"


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="runs:/<id>/model, models:/<name>@<alias>, or a dir")
    corpus: str = "NCBI-disease"
    format: str | None = Field(None, description="default: the format the model was trained on")
    split: str = "test"
    limit: int | None = Field(
        None,
        ge=1,
        description="first N sentences only: a quick look, tagged as a subset, never copied "
        "onto the training run and never eligible for champion selection",
    )
    data_dir: str | None = None
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    num_actors: int = Field(1, ge=1, description="at most; a small split starts fewer")
    use_gpu: bool = False
    rows_per_task: int = Field(64, ge=1)
    error_sample: int = 25
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    parent_run_id: str | None = Field(
        None, description="default: the training run of a runs:/ or models:/ URI"
    )
    log_to_parent: bool = Field(
        True,
        description="also log <split>_f1 ... on the parent run (whole splits only; free "
        "decoding as <split>_free_f1 ...)",
    )

    @field_validator("corpus")
    @classmethod
    def _known_corpus(cls, name: str) -> str:
        """Checked when the config loads: a typo fails before Ray starts or a model loads."""
        try:
            return get_corpus(name).ref
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None

    @field_validator("format")
    @classmethod
    def _known_format(cls, name: str | None) -> str | None:
        if name is None:
            return None
        try:
            return get_format(name).name
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None

    @property
    def metric_prefix(self) -> str:
        """`test_`, or `test_free_` when decoding free (generation.constrained: false)."""
        return split_prefix(self.split, self.generation.constrained)
