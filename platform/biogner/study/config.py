"""A study's config (`biogner sweep --config`): which models x formats x corpora to train,
with which base training config, and how every cell is evaluated. Pydantic only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from biogner.config import load_config
from biogner.corpora import get_corpus
from biogner.formats import FORMATS
from biogner.models.config import GenerationConfig
from biogner.tracking.config import TrackingConfig

DEFAULT_METRIC = "dev_f1"  # choose on dev (select); test stays a report
REPORT_METRIC = "test_f1"  # what reports show
DEFAULT_MODEL_NAME = "biogner"  # serve_configs/*.yaml load models:/biogner@champion
DEFAULT_ALIAS = "champion"


class SweepEval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    splits: list[str] = Field(
        default_factory=lambda: ["dev", "test"],
        description="every cell is evaluated on each (whole) split: dev chooses, test reports",
    )
    limit: int | None = Field(
        None, description="first N sentences only: a quick look, never selectable"
    )
    free_splits: list[str] = Field(
        default_factory=list,
        description="splits also decoded free (no grammar) from the same checkpoint, logged as "
        "<split>_free_f1 ...: what constrained decoding changes",
    )
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    num_actors: int = Field(1, ge=1, description="at most; a small split starts fewer")
    use_gpu: bool = False


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment: str = "biogner-study"
    base: str | None = Field(
        "jobs/configs/smollm2_cpu.yaml", description="training config of every cell"
    )
    overrides: list[str] = Field(default_factory=list, description="key=value for every cell")
    models: list[str] = Field(default_factory=lambda: ["smollm2-135m"])
    formats: list[str] = Field(default_factory=lambda: ["conv_term", "multi_triple"])
    mixes: list[list[str]] = Field(
        default_factory=list, description="multi-format training mixes, each one cell"
    )
    corpora: list[str] = Field(
        default_factory=lambda: ["NCBI-disease"],
        description="corpus names or corpus card paths: one study per corpus",
    )
    evaluate: SweepEval = Field(default_factory=SweepEval)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    parallel: bool = False
    metric: str = Field("dev_f1", description="what the summary shows and `select` ranks by")

    @field_validator("corpora")
    @classmethod
    def _corpus_refs(cls, refs: list[str]) -> list[str]:
        """Names checked and card paths made absolute when the config loads."""
        try:
            return [get_corpus(ref).ref for ref in refs]
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None

    def cells(self) -> list[Cell]:
        formats = list(FORMATS) if self.formats == ["all"] else self.formats
        groups = [[f] for f in formats] + [list(m) for m in self.mixes]
        return [
            Cell(model, tuple(group), corpus)
            for corpus in self.corpora
            for model in self.models
            for group in groups
        ]


def format_label(formats: Iterable[str], eval_format: str | None = None) -> str:
    """`conv_term`; `mix(conv_term+multi_triple)` for a model trained on several formats,
    `mix(all)` for one trained on every format.

    With `eval_format` (a score): a mix always names the format it was scored in
    (`mix(all)@multi_bio`), since it is evaluated in each of them, and a single-format model
    evaluated in another format gets `@<format>` too: two evaluations never share a row.
    """
    names = tuple(formats)
    if not names:
        return eval_format or "?"
    if len(names) == 1:
        label = names[0]
    else:
        every = len(names) == len(FORMATS) and set(names) == set(FORMATS)
        label = "mix(all)" if every else f"mix({'+'.join(names)})"
    if eval_format and (len(names) > 1 or eval_format != names[0]):
        label += f"@{eval_format}"
    return label


@dataclass(frozen=True)
class Cell:
    model: str
    formats: tuple[str, ...]
    corpus: str

    @property
    def format_label(self) -> str:
        return format_label(self.formats)

    @property
    def corpus_name(self) -> str:
        """The corpus's name (`corpus` may be a card's path)."""
        return get_corpus(self.corpus).name

    def run_name(self, experiment: str) -> str:
        model = self.model.replace("/", "_")
        fmt = self.formats[0] if len(self.formats) == 1 else "mix-" + "-".join(self.formats)
        return f"{experiment}-{model}-{self.corpus_name}-{fmt}"


def load_sweep(path: str | Path | None, overrides: list[str]) -> SweepConfig:
    return load_config(SweepConfig, path, overrides)
