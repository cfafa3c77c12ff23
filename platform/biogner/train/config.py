"""The training job's config: one YAML file + `key=value` overrides, logged as resolved."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from biogner.corpora import get_corpus
from biogner.formats import get_format
from biogner.models.config import ModelConfig
from biogner.tracking.config import TrackingConfig

# metric: seconds the training loop ran for the steps a run kept, summed over its resumes
TRAIN_SECONDS = "train_seconds"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Strict):
    corpora: list[str] = Field(
        default_factory=lambda: ["NCBI-disease"],
        description="corpus names (built-in or registered) or corpus card paths (a card's "
        "path is made absolute when the config loads)",
    )
    formats: list[str] = Field(
        default_factory=lambda: ["conv_term"],
        description="one format, or several: each sentence is trained in one of them, "
        "chosen by a seeded hash (the multi-format mix)",
    )
    split: str = "train"
    limit: int | None = Field(None, description="first N sentences per corpus (a fixed subset)")
    sentences_per_corpus: int | None = Field(
        None,
        ge=1,
        description="a seeded random sample of at most N sentences from each corpus (after "
        "`limit`): one budget per corpus, so a large corpus does not drown a small one",
    )
    data_dir: str | None = None
    converted_dir: str = ".biogner/converted"
    max_length: int = Field(512, description="longer chats are dropped and counted")


class OptimSection(_Strict):
    epochs: float = 1.0
    max_steps: int | None = Field(
        None, description="a fixed budget of optimizer steps (overrides epochs)"
    )
    per_device_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = 1.0
    seed: int = 42
    group_by_length: bool = True
    length_group_batches: int = Field(32, description="batches sorted together by length")
    log_every_steps: int = 1
    checkpoint_every_steps: int = Field(50, description="0 = only at the end")
    stop_after_steps: int | None = Field(
        None, description="end the job early (as if preempted) after this step; for resume tests"
    )


class DeepSpeedSection(_Strict):
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="auto: bf16 where the GPU or CPU computes it natively (AVX512-BF16/AMX), "
        "else fp32; master weights and optimizer state stay fp32",
    )


class ScalingSection(_Strict):
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    threads_per_worker: int | None = Field(
        None,
        ge=1,
        description="torch threads of a CPU worker; default: the node's cores / its workers",
    )
    worker_niceness: int = Field(
        0,
        ge=0,
        le=19,
        description="nice value of the training workers; Ray starts its workers at 15, where "
        "any other process on the node (even Ray's own) preempts a CPU worker's threads",
    )
    max_failures: int = 1
    storage_path: str = ".biogner/ray_results"
    keep_checkpoints: bool = Field(
        False,
        description="keep a FINISHED run's Ray Train checkpoints (weights and optimizer state, "
        "~3 GB for a 135M full fine-tune) under storage_path; by default a local run's are "
        "deleted once its model is logged to MLflow: they only serve resuming an unfinished run",
    )


RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$"


class TrainConfig(_Strict):
    run_name: str = Field(
        "biogner-train",
        pattern=RUN_NAME_PATTERN,
        description="names the MLflow run and its checkpoint folder `<storage_path>/<run_name>` "
        "(rerunning it resumes): letters, digits and `._+-`, starting with a letter or digit, so "
        "that it can never name the storage folder itself or a folder beside it",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataSection = Field(default_factory=DataSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection)
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        for name in self.data.formats:
            get_format(name)
        self.data.corpora = [get_corpus(ref).ref for ref in self.data.corpora]
        if not self.data.formats or not self.data.corpora:
            raise ValueError("data.formats and data.corpora must not be empty")
        return self
