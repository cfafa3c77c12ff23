"""Shared fixtures: one local Ray session for the whole suite, the real corpora folder."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator, Sequence
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


# `make test` and CI set it: there the corpora tests must run, and a missing corpus fails them
# (a suite that skipped them silently passed without having read a corpus).
REQUIRE_CORPORA_ENV = "BIOGNER_REQUIRE_CORPORA"
# Corpora the shared data folder does not carry (its README: BC4CHEMD's files are too large to
# carry): their tests skip even where the corpora are required.
NOT_SHARED = frozenset({"BC4CHEMD"})


def corpora_dir(*names: str, splits: Sequence[str] = ("train", "dev", "test")) -> Path:
    """The corpora folder (`resolve_data_dir`: $BIOGNER_DATA_DIR, else ../shared/data/bioner)
    once it holds `splits` of every corpus in `names`. Without them the test skips on a
    developer's machine and fails where BIOGNER_REQUIRE_CORPORA=1; a corpus in NOT_SHARED
    always skips."""
    from biogner.corpora import get_corpus, resolve_data_dir

    data = resolve_data_dir()
    for name in names:
        folder = data / get_corpus(name).folder
        missing = [s for s in splits if not (folder / f"{s}.tsv").is_file()]
        if not missing:
            continue
        reason = f"corpus {name}: no {', '.join(missing)} split in {folder} (set BIOGNER_DATA_DIR)"
        if name in NOT_SHARED:
            pytest.skip(f"{reason}; the shared corpora do not carry {name} (their README)")
        if os.environ.get(REQUIRE_CORPORA_ENV, "") not in ("", "0"):
            pytest.fail(f"{reason}; {REQUIRE_CORPORA_ENV} is set: the corpora tests must run")
        pytest.skip(reason)
    return data


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real BioNER corpora (NCBI-disease at least); `corpora_dir` says when their
    absence skips a test and when it fails it."""
    return corpora_dir("NCBI-disease", splits=("train",))


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


@pytest.fixture(scope="session")
def empty_store_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema made, once: making it (MLflow's migrations)
    costs seconds, copying it nothing."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-empty") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, empty_store_db: Path) -> Iterator[Path]:
    """One SQLite MLflow store per module (`mlflow.db` in the folder: a copy of the empty one).

    `setup` points MLflow's globals (and, through MLflow, the MLFLOW_*_URI env vars) at this
    store; they are restored afterwards so that other test modules see a clean process.
    """
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(var, raising=False)
        folder = tmp_path_factory.mktemp("mlflow")
        shutil.copyfile(empty_store_db, folder / "mlflow.db")
        yield folder
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
    from transformers import AutoTokenizer

    from biogner.models.load import resolve_model_dir

    source = resolve_model_dir("tiny-llama")
    assert source is not None
    tokenizer = AutoTokenizer.from_pretrained(source)
    _train_copier(out, source, copy_examples(tokenizer, sentences), steps)
    tokenizer.save_pretrained(out)
    return out


def copy_examples(tokenizer: Any, sentences: list[Sentence]) -> list[Any]:
    """The copier's training examples: each sentence answered in inline, bio and term."""
    from biogner.chat_tokens import tokenize_chat
    from biogner.formats import get_format

    return [
        tokenize_chat(tokenizer, get_format(f).render(s, COPIER_TYPES), max_length=256)
        for s in sentences
        for f in ("multi_inline", "multi_bio", "multi_term")
    ]


def _train_copier(out: Path, source: Path, examples: list[Any], steps: int) -> None:
    """`steps` AdamW steps on `examples`, saved: seeded, on one thread (the same weights on
    any machine, whatever its cores; on a busy 2-core box, 30 steps took 55 s on one thread
    and 224 s on two)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit(model, examples, steps)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out)


def _fit(model: Any, examples: list[Any], steps: int) -> None:
    import torch

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


def cached_copy_model(sentences: list[Sentence], steps: int = 300) -> Path:
    """`fit_copy_model` built once per machine, in the model cache (`biogner.models.cache`,
    as tiny-llama itself is): fitting it is most of a `make test-fast` on 2 cores. The key
    is everything the fitted weights depend on (tiny-llama's files, the training examples as
    tokenized, the training code, torch's and transformers' versions), so a change to any
    of them fits a new one."""
    import hashlib
    import inspect
    import json

    import torch
    import transformers
    from transformers import AutoTokenizer

    from biogner.models.cache import cache_root, cached_build
    from biogner.models.load import resolve_model_dir

    source = resolve_model_dir("tiny-llama")
    assert source is not None
    examples = copy_examples(AutoTokenizer.from_pretrained(source), sentences)
    code = [inspect.getsource(f) for f in (fit_copy_model, _train_copier, _fit)]
    versions = [torch.__version__, transformers.__version__]
    digest = hashlib.sha256(json.dumps([steps, versions, code, examples]).encode())
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    target = cache_root() / f"test-copier-{digest.hexdigest()[:16]}"
    about = {"built_by": "tests/conftest.py fit_copy_model", "sentences": len(sentences)}
    return cached_build(target, lambda out: fit_copy_model(out, sentences, steps), about)


@pytest.fixture(scope="session")
def copier_model(data_dir: Path) -> Path:
    """tiny-llama fitted on the first 24 sentences of BC5CDR dev (once per session)."""
    from biogner.corpora import load_split

    sentences = load_split("BC5CDR", "dev", data_dir, limit=24)
    return cached_copy_model(sentences)
