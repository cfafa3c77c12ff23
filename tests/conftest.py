"""Shared fixtures: one local Ray session for the whole suite, the real corpora folder."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from biogner.types import Sentence

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real BioNER corpora; tests that need them skip when the folder is absent."""
    from biogner.corpora import resolve_data_dir

    path = resolve_data_dir()
    if not (path / "NCBI-disease" / "train.tsv").is_file():
        pytest.skip(f"BioNER corpora not found at {path} (set BIOGNER_DATA_DIR)")
    return path


# What a person must not see from a biogner command: Ray's Python loggers ("INFO ...
# worker.py:123 -- ..."), Ray Data's plan, Ray's C++ core ("[<time> E <pid> <tid>]
# core_worker.cc:2465: ..."), the raylet's pushed warnings, MLflow's loggers and Python
# warnings (they go to `.biogner/logs/`, or do not arise).
LIBRARY_LINE = re.compile(
    r"\b(INFO|WARNING)\b.*\.py:\d+ --|streaming_executor|Execution plan of"
    r"|^\[[\d\- :,]+ [IWE] \d+ \d+\] \w+\.cc:\d+|\(raylet\)"
    r"|\b(INFO|WARNING)\b mlflow\.|Warning\b"
)


def library_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if LIBRARY_LINE.search(line)]


def write_small_corpus(source: Path, out: Path, corpus: str, sentences: int) -> Path:
    """A copy of `corpus` with the first `sentences` sentences of each split: whole splits
    that a test can evaluate in seconds."""
    folder = out / corpus
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        blocks = (source / corpus / f"{split}.tsv").read_text().split("\n\n")
        kept = [b.strip("\n") for b in blocks if b.strip()][:sentences]
        (folder / f"{split}.tsv").write_text("\n\n".join(kept) + "\n\n")
    return out


@pytest.fixture(scope="session")
def small_data_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NCBI-disease cut to 40 sentences per split (train, dev, test)."""
    return write_small_corpus(data_dir, tmp_path_factory.mktemp("small-data"), "NCBI-disease", 40)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test on the shared Ray cluster is `slow` (Ray Train, Data, Serve; the CLI on
    them): `make test-fast` (`-m "not slow"`) runs what needs no Ray."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole suite (starting Ray costs seconds each time)."""
    import ray

    from biogner.runtime import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def workers_on_jemalloc() -> bool:
    """Whether Ray's compute workers should run on jemalloc: preloaded through their
    runtime_env where the machine has it, or inherited from a LD_PRELOAD naming it."""
    from biogner.runtime import allocator_env

    return bool(allocator_env()) or "jemalloc" in os.environ.get("LD_PRELOAD", "")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One SQLite MLflow store per module: creating its schema costs seconds.

    `setup` points MLflow's globals (and, through MLflow, the MLFLOW_*_URI env vars) at this
    store; they are restored afterwards so that other test modules see a clean process.
    """
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(var, raising=False)
        yield tmp_path_factory.mktemp("mlflow")
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]


def tiny_llama(dtype: Any, **config: Any) -> Any:
    """A two-layer llama with random weights (seed 0), in `dtype`, for inference: the
    shapes of a real one, small (`config` overrides LlamaConfig's fields)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    fields = {
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        **config,
    }
    return LlamaForCausalLM(LlamaConfig(**fields)).to(dtype).eval()


def write_noise_model(out: Path, seed: int) -> Path:
    """tiny-llama with its weights redrawn large (noise logits that depend on the context: with
    the default small init it repeats one token whatever it reads), saved with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from biogner.models.load import resolve_model_dir

    source = resolve_model_dir("tiny-llama")
    assert source is not None
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for param in model.parameters():
            param.data.normal_(0.0, 0.3)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


COPIER_TYPES = ["Chemical", "Disease"]


def fit_copy_model(out: Path, sentences: list[Sentence], steps: int = 300) -> Path:
    """tiny-llama fitted to answer in inline, bio and term (multi): it learns to restate."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from biogner.chat_tokens import tokenize_chat
    from biogner.formats import get_format
    from biogner.models.load import resolve_model_dir

    source = resolve_model_dir("tiny-llama")
    assert source is not None
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    examples = [
        tokenize_chat(tokenizer, get_format(f).render(s, COPIER_TYPES), max_length=256)
        for s in sentences
        for f in ("multi_inline", "multi_bio", "multi_term")
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = [examples[int(i)] for i in torch.randint(len(examples), (8,), generator=gen)]
        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in batch])
        labels = torch.tensor([e["labels"] + [-100] * (width - len(e["labels"])) for e in batch])
        mask = torch.arange(width)[None] < torch.tensor([[len(e["input_ids"])] for e in batch])
        loss = model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def copier_model(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """tiny-llama fitted on the first 24 sentences of BC5CDR dev (once per session)."""
    from biogner.corpora import load_split

    sentences = load_split("BC5CDR", "dev", data_dir, limit=24)
    return fit_copy_model(tmp_path_factory.mktemp("copier"), sentences)
