"""Model loading by spec: the built-in tiny-llama and smollm2-135m, local paths, Hub ids, LoRA."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from biogner.chat_tokens import prompt_ids, tokenize_chat
from biogner.corpora import load_split
from biogner.models.builtin import FALLBACK_TEXT
from biogner.models.cache import BUILD_MARKER
from biogner.models.config import ModelConfig, ModelLoadError
from biogner.models.gguf import smollm2_gguf_path
from biogner.models.load import (
    apply_lora,
    count_parameters,
    load_model,
    load_tokenizer,
    resolve_dtype,
    resolve_model_dir,
)
from biogner.prompts import render_chat

CHAT = [
    {"role": "user", "content": "Text: BRCA1 mutations cause breast cancer .\nWhich diseases?"},
    {"role": "assistant", "content": "breast cancer"},
]


def _weights_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def tiny(tiny_cache: Path):
    return load_model(ModelConfig(cache_dir=str(tiny_cache), lora=False), device="cpu")


def test_tiny_llama_is_small_and_has_chat_template(tiny) -> None:
    model, tokenizer = tiny
    trainable, total = count_parameters(model)
    assert 50_000 < total < 1_000_000
    assert trainable == total  # no LoRA asked: full fine-tuning
    assert tokenizer.chat_template
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    text = render_chat(tokenizer, CHAT, add_generation_prompt=False)
    assert text == (
        f"<|im_start|>user\n{CHAT[0]['content']}<|im_end|>\n"
        f"<|im_start|>assistant\n{CHAT[1]['content']}<|im_end|>\n"
    )
    assert render_chat(tokenizer, CHAT[:1], add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n"
    )


def test_tiny_llama_build_is_deterministic(tiny, tmp_path: Path) -> None:
    """Every Ray worker builds (or reads) the same weights and vocabulary."""
    model, tokenizer = tiny
    again, tokenizer2 = load_model(ModelConfig(cache_dir=str(tmp_path), lora=False), device="cpu")
    assert _weights_hash(again) == _weights_hash(model)
    assert tokenizer2.get_vocab() == tokenizer.get_vocab()
    sample = "Germline mutations of BRCA1 predispose to breast cancer ."
    assert tokenizer2.encode(sample) == tokenizer.encode(sample)


def test_tiny_tokenizer_round_trips_corpus_text(tiny) -> None:
    _, tokenizer = tiny
    try:
        lines = [s.text for s in load_split("NCBI-disease", "dev", limit=500)]
    except FileNotFoundError:
        lines = []
    lines += FALLBACK_TEXT.splitlines() + ["ünïcode αβγ → µg/kg ; tabs\tand  double spaces"]
    encoded = tokenizer(lines, add_special_tokens=False)["input_ids"]
    for line, ids in zip(lines, encoded, strict=True):
        assert tokenizer.decode(ids) == line
    # trained BPE merges: far fewer tokens than characters
    assert sum(map(len, encoded)) < 0.6 * sum(map(len, lines))


def test_concurrent_builds_share_one_complete_directory(tmp_path: Path) -> None:
    results: list[Path | None] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(resolve_model_dir("tiny-llama", tmp_path))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(results)) == 1
    built = results[0]
    assert built is not None and (built / BUILD_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [built.name]  # no tmp left


def test_local_directory_spec_loads_the_same_model(tiny, tiny_cache: Path) -> None:
    model, _ = tiny
    local = resolve_model_dir("tiny-llama", tiny_cache)
    assert local is not None and (local / "config.json").is_file()
    again, tokenizer = load_model(ModelConfig(spec=str(local), lora=False), device="cpu")
    assert _weights_hash(again) == _weights_hash(model)
    assert tokenizer.chat_template


def test_lora_reduces_trainable_parameters_and_trains(tiny_cache: Path) -> None:
    cfg = ModelConfig(cache_dir=str(tiny_cache), lora_r=4, lora_alpha=8)
    model, tokenizer = load_model(cfg, device="cpu")
    trainable, total = count_parameters(model)
    assert 0 < trainable < total / 10
    base_params = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert base_params and all("lora_" not in n for n in base_params)

    row = tokenize_chat(tokenizer, CHAT)
    batch = {k: torch.tensor([row[k]]) for k in ("input_ids", "labels", "attention_mask")}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        loss = model(**batch).loss
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_lora_rejects_unknown_target_modules(tiny) -> None:
    model, _ = tiny
    cfg = ModelConfig(lora_target_modules=["query_key_value"])
    with pytest.raises(ValueError, match="query_key_value"):
        apply_lora(model, cfg)


def test_generate_with_left_padded_batch(tiny) -> None:
    model, tokenizer = tiny
    assert tokenizer.padding_side == "left"
    chats = [
        [{"role": "user", "content": "Text: cancer ."}],
        [{"role": "user", "content": "Text: a much longer sentence about colon cancer and APC ."}],
    ]
    prompts = [render_chat(tokenizer, c, add_generation_prompt=True) for c in chats]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert batch["input_ids"][0, 0] == tokenizer.pad_token_id  # the short one is padded left
    assert batch["input_ids"][0].tolist()[-3:] == prompt_ids(tokenizer, chats[0])[-3:]
    with torch.no_grad():
        out = model.generate(
            **batch,
            max_new_tokens=5,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
        single = model.generate(
            torch.tensor([prompt_ids(tokenizer, chats[0])]),
            max_new_tokens=1,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
    width = batch["input_ids"].shape[1]
    assert out.sequences.shape[0] == 2 and width < out.sequences.shape[1] <= width + 5
    # left padding is masked out: the padded row scores its first new token like it alone
    torch.testing.assert_close(out.scores[0][0], single.scores[0][0], atol=1e-4, rtol=1e-4)


def test_dtype_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    import biogner.models.load as modeling

    cpu = torch.device("cpu")
    monkeypatch.setattr(modeling, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    assert resolve_dtype("auto", cpu) == torch.float32
    monkeypatch.setattr(modeling, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    assert resolve_dtype("auto", cpu) == torch.bfloat16  # inference on a bf16 CPU
    assert resolve_dtype("auto", cpu, for_training=True) == torch.float32  # autocast trains
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="model.dtype"):
        ModelConfig(dtype="float8")


def test_bogus_hub_id_gives_helpful_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Offline, as CI runs (without it, an unreachable Hub costs ~1 min of retries).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    spec = "biogner-tests/no-such-model-anywhere"
    with pytest.raises(ModelLoadError) as info:
        load_tokenizer(spec, cache_dir=tmp_path)
    message = str(info.value)
    assert spec in message and "local copy" in message and "config.json" in message


@pytest.mark.parametrize(
    "make_spec, fragment",
    [
        (lambda d: str(d / "missing-model"), "does not exist"),
        (lambda d: str(d), "no config.json"),
        (lambda d: str(d / "weights.bin"), "not a .gguf"),
    ],
)
def test_bad_local_specs_are_named(tmp_path: Path, make_spec, fragment: str) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0")
    spec = make_spec(tmp_path)
    with pytest.raises(ModelLoadError, match=fragment) as info:
        resolve_model_dir(spec, tmp_path / "cache")
    assert str(Path(spec)) in str(info.value) or spec in str(info.value)


@pytest.mark.slow  # converts and runs a 135M-parameter model: tens of seconds on 2 cores
def test_gguf_file_spec_loads_smollm2() -> None:
    """The package's GGUF file converts once (shared with the `smollm2-135m` built-in) and
    the converted model still answers like SmolLM2: its weights survived the conversion."""
    try:
        gguf = smollm2_gguf_path()
    except ModelLoadError as exc:
        pytest.skip(str(exc))
    assert resolve_model_dir(str(gguf)) == resolve_model_dir("smollm2-135m")
    model, tokenizer = load_model(ModelConfig(spec=str(gguf)), device="cpu", for_training=False)
    assert 130e6 < count_parameters(model)[1] < 140e6
    assert not model.training
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = torch.tensor([prompt_ids(tokenizer, chat)])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=10, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    from biogner.models.load import cpu_flags, cpu_has_native_bf16

    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
    sapphire = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"
    zen4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    assert not cpu_has_native_bf16(avx2)
    assert cpu_has_native_bf16(sapphire) and cpu_has_native_bf16(zen4)
    assert not cpu_has_native_bf16("")  # no flags line: assume emulated bf16 (slow)
    assert {"amx_bf16", "amx_tile", "avx2"} <= cpu_flags(sapphire)  # the demo's AMX check
    assert "amx_bf16" not in cpu_flags(zen4) and cpu_flags("") == set()
