"""The GPU check: biogner's own training, export and generation paths on one accelerator.

Run through `bench/gpu/check.sh` (which makes Ray, DeepSpeed and MLflow importable on a bare
GPU machine). Everything goes through the platform's code, switched only by config:

1. Generation, first (a run cut off by the device's time limit has timed it):
   `biogner.generation.Generator` on the model built from the config (random weights), bf16
   on CUDA, sentences/s for the inline, term and bio writings at batch 16 and 64, constrained,
   with biogner's decode loop and its mechanisms on and off (`generation.decoder: hf`, the
   path before them), and free with them on. Random weights write to their token budget
   under little guidance: a worst case for sentences/s, and the on/off ratio is the figure.
2. Training: `biogner.train.driver.run_training` (Ray Train TorchTrainer -> the one train
   loop -> DeepSpeed) for ZeRO-2 and ZeRO-3 x full fine-tuning and LoRA, on fixed-length
   rows (seq 512 on GPU). Per cell: median tokens/s and step time over the steps after the
   warm-up (read back from the run's MLflow metric history), peak GPU memory (logged by the
   loop), and MFU = 6 x parameters x tokens/s / the card's dense bf16 peak (full fine-tuning;
   LoRA computes no weight gradients for the base, so its "model FLOPs" use 4 x parameters).
3. The ZeRO-3 export: the final checkpoint's consolidated 16-bit weights -> HF directory ->
   logged to MLflow -> downloaded -> reloaded: shapes match the built model, weights are
   finite and changed by training (merged LoRA too), and the reloaded model generates.

Writes gpu_check.json and gpu_check.md into --out (cpu_check.* with --cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# Dense bf16 peak (TFLOP/s, no sparsity) by the words in torch.cuda.get_device_name().
BF16_PEAK_TFLOPS: list[tuple[tuple[str, ...], float]] = [
    (("H200",), 989.4),
    (("H100", "PCIE"), 756.5),
    (("H100", "NVL"), 835.5),
    (("H100",), 989.4),  # SXM (HBM3)
    (("A100",), 312.0),
    (("L40S",), 362.0),
]
GPU_SETTINGS = {
    "model": "qwen2.5-0.5b",
    "seq": 512,
    "batch": 16,
    "steps": 24,
    "warmup": 4,
    "precision": "bf16",
    "gen_sentences": 64,
}
CPU_SETTINGS = {
    "model": "tiny-qwen2",
    "seq": 64,
    "batch": 4,
    "steps": 4,
    "warmup": 1,
    "precision": "fp32",
    "gen_sentences": 16,
}
LORA_OVERRIDES = [
    "model.lora=true",
    "model.lora_r=16",
    "model.lora_alpha=32",
    "model.lora_target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
]
GEN_FORMATS = ("multi_inline", "multi_term", "multi_bio")
# (batch, constrained, mechanisms): constrained at both batch sizes with biogner's decode loop
# on ("on": prefix cache, forced tokens, copy speculation, rows leaving) and off (transformers'
# generate, `generation.decoder: hf`), and free with them on.
GEN_MODES = {"on": {}, "off": {"decoder": "hf"}}
GEN_CELLS = (
    (16, True, "off"),
    (16, True, "on"),
    (64, True, "off"),
    (64, True, "on"),
    (64, False, "on"),
)


def peak_tflops(device_name: str) -> float | None:
    upper = device_name.upper()
    for words, tflops in BF16_PEAK_TFLOPS:
        if all(w in upper for w in words):
            return tflops
    return None


def synthetic_rows(n: int, seq: int, vocab: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` rows of exactly `seq` tokens, every token supervised: fixed-length work per step."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ids = [rng.randrange(3, vocab) for _ in range(seq)]
        rows.append({"id": f"synthetic-{i:06d}", "input_ids": ids, "labels": list(ids)})
    return rows


def train_cell(
    spec: str, s: dict[str, Any], zero: int, lora: bool, gpu: bool, root: Path, vocab: int
) -> dict[str, Any]:
    import ray.data
    from mlflow.tracking import MlflowClient

    from biogner.config import load_config
    from biogner.train.config import TrainConfig
    from biogner.train.driver import run_training

    name = f"z{zero}-{'lora' if lora else 'full'}"
    overrides = [
        f"run_name=gpu-check-{name}-{int(time.time())}",
        f"model.spec={spec}",
        *(LORA_OVERRIDES if lora else ["model.lora=false"]),
        f"data.max_length={s['seq']}",
        f"optim.max_steps={s['steps']}",
        f"optim.per_device_batch_size={s['batch']}",
        "optim.gradient_accumulation_steps=1",
        "optim.learning_rate=1e-4",
        "optim.log_every_steps=1",
        "optim.checkpoint_every_steps=0",
        f"deepspeed.zero_stage={zero}",
        f"deepspeed.precision={s['precision']}",
        "scaling.num_workers=1",
        f"scaling.use_gpu={str(gpu).lower()}",
        "scaling.max_failures=0",
        f"scaling.storage_path={root / 'ray'}",
        "tracking.experiment=gpu-check",
        f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"tracking.artifact_root={(root / 'artifacts').as_uri()}",
    ]
    cfg = load_config(TrainConfig, None, overrides)
    rows = synthetic_rows(s["steps"] * s["batch"], s["seq"], vocab)
    start = time.perf_counter()
    outcome = run_training(cfg, rows=ray.data.from_items(rows))
    wall = time.perf_counter() - start
    client = MlflowClient(cfg.tracking.uri)

    def history(key: str) -> list[float]:
        points = sorted(client.get_metric_history(outcome.run_id, key), key=lambda m: m.step)
        return [m.value for m in points]

    tokens = history("tokens_per_s")[s["warmup"] :]
    memory = history("gpu_memory_gib")
    tok_s = statistics.median(tokens)
    return {
        "cell": name,
        "zero": zero,
        "lora": lora,
        "run_id": outcome.run_id,
        "steps": outcome.steps,
        "tokens_per_s": tok_s,
        "step_s": s["batch"] * s["seq"] / tok_s,
        "peak_gpu_gib": max(memory) if memory else None,
        "loss_first": history("loss")[0],
        "loss_last": history("loss")[-1],
        "fit_wall_s": wall,
    }


def export_roundtrip(
    run_id: str, tracking_uri: str, initial: dict[str, Any], lora: bool
) -> dict[str, Any]:
    """Download the run's logged model, reload it, compare with the initial weights, generate."""
    import mlflow
    import torch
    from transformers import AutoModelForCausalLM

    from biogner.tracking.models import download_model_dir

    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = download_model_dir(f"runs:/{run_id}/model", Path(tmp))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        state = model.state_dict()
        shapes_match = {k: tuple(v.shape) for k, v in state.items()} == {
            k: tuple(v.shape) for k, v in initial.items()
        }
        finite = all(bool(torch.isfinite(v).all()) for v in state.values())
        changed = [k for k, v in state.items() if k in initial and not torch.equal(v, initial[k])]
        probe = "q_proj.weight"  # a LoRA target: changes only if the adapters were merged
        out = model.generate(
            input_ids=torch.tensor([[5, 6, 7, 8]]), max_new_tokens=8, do_sample=False
        )
    return {
        "run_id": run_id,
        "lora": lora,
        "shapes_match": shapes_match,
        "finite": finite,
        "tensors_changed": len(changed),
        "tensors": len(state),
        "attention_changed": any(probe in k for k in changed),
        "generated_tokens": int(out.shape[1] - 4),
        "ok": shapes_match and finite and any(probe in k for k in changed) and out.shape[1] > 4,
    }


def generation_cells(model_dir: Path, s: dict[str, Any], gpu: bool) -> Iterator[dict[str, Any]]:
    import torch

    from biogner.corpora import load_split
    from biogner.generation import Generator
    from biogner.models.config import GenerationConfig

    sentences = load_split("NCBI-disease", "test")[: s["gen_sentences"]]
    for batch, constrained, mechanisms in GEN_CELLS:
        gen = Generator(
            model_dir,
            GenerationConfig(
                batch_size=batch,
                device="cuda" if gpu else "cpu",
                dtype="bfloat16" if gpu else "float32",
                constrained=constrained,
                **GEN_MODES[mechanisms],
            ),
        )
        for fmt in GEN_FORMATS:
            gen.extract(sentences[: min(batch, len(sentences))], fmt, ["Disease"])  # warm-up
            if gpu:
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = gen.extract(sentences, fmt, ["Disease"])
            if gpu:
                torch.cuda.synchronize()
            wall = time.perf_counter() - start
            tokens = sum(g.generated_tokens for g in out)
            yield (
                {
                    "format": fmt,
                    "batch": batch,
                    "constrained": constrained,
                    "mechanisms": mechanisms,
                    "sentences": len(out),
                    "sentences_per_s": len(out) / wall,
                    "generated_tokens_per_s": tokens / wall,
                    "tokens_per_sentence": tokens / len(out),
                    "wall_s": wall,
                }
            )
        del gen
        if gpu:
            torch.cuda.empty_cache()


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"# {'GPU' if result['gpu'] else 'CPU'} check",
        "",
        f"Device: {env['device']}; torch {env['torch']}, transformers {env['transformers']}, "
        f"ray {env['ray']}, deepspeed {env['deepspeed']}, mlflow {env['mlflow']}. "
        f"Model: {result['model']} ({result['parameters'] / 1e6:.1f} M parameters, built from "
        f"a config, random weights), seq {result['settings']['seq']}, batch "
        f"{result['settings']['batch']}, {result['settings']['precision']}, "
        f"{result['settings']['steps']} steps per cell (median over steps after "
        f"{result['settings']['warmup']}). Total {result['wall_s']:.0f} s.",
        "",
        "| cell | tokens/s | step s | MFU | peak GPU GiB | loss first -> last | fit s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in result["training"]:
        if "error" in c:
            lines.append(f"| {c['cell']} | failed: {c['error']} | | | | | |")
            continue
        mfu = f"{100 * c['mfu']:.1f} %" if c.get("mfu") is not None else "-"
        mem = f"{c['peak_gpu_gib']:.1f}" if c.get("peak_gpu_gib") is not None else "-"
        lines.append(
            f"| {c['cell']} | {c['tokens_per_s']:,.0f} | {c['step_s']:.3f} | {mfu} | {mem} | "
            f"{c['loss_first']:.3f} -> {c['loss_last']:.3f} | {c['fit_wall_s']:.0f} |"
        )
    lines += ["", "ZeRO-3 export (consolidated 16-bit -> HF dir -> MLflow -> reload):", ""]
    for e in result["export"]:
        lines.append(f"- {json.dumps(e)}")
    lines += ["", "| generation | mechanisms | batch | sentences/s | tokens/s | tokens/sentence |"]
    lines += ["| --- | --- | ---: | ---: | ---: | ---: |"]
    for g in result["generation"]:
        lines.append(
            f"| {g['format']} ({'constrained' if g['constrained'] else 'free'}) | "
            f"{g.get('mechanisms', 'off')} | {g['batch']} | "
            f"{g['sentences_per_s']:.1f} | "
            f"{g['generated_tokens_per_s']:,.0f} | {g['tokens_per_sentence']:.0f} |"
        )
    if result["errors"]:
        lines += ["", "Errors:", ""] + [f"- {e}" for e in result["errors"]]
    return "\n".join(lines) + "\n"


def environment(gpu: bool) -> dict[str, str]:
    import importlib.metadata

    import torch

    versions = {}
    for dist in ("torch", "transformers", "ray", "deepspeed", "mlflow"):
        name = "mlflow-skinny" if dist == "mlflow" else dist
        try:
            versions[dist] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = importlib.metadata.version(dist)
    versions["device"] = torch.cuda.get_device_name() if gpu else "cpu"
    return versions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="tiny model, fp32, gloo, on the CPU")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--steps", type=int, help="training steps per cell")
    parser.add_argument("--skip-generation", action="store_true")
    args = parser.parse_args(argv)
    gpu = not args.cpu
    s = dict(CPU_SETTINGS if args.cpu else GPU_SETTINGS)
    if args.steps:
        s["steps"] = args.steps
    start = time.perf_counter()

    import torch

    if gpu and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu for the CPU version of this check", file=sys.stderr)
        return 2
    from bench.train import build_config_model
    from biogner.models.config import TINY_LLAMA
    from biogner.models.load import count_parameters
    from biogner.runtime import init_ray

    root = Path(tempfile.mkdtemp(prefix="biogner-check-"))
    spec = build_config_model(s["model"], root / "models", tokenizer_spec=TINY_LLAMA)
    from transformers import AutoModelForCausalLM

    built = AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32)
    _, n_params = count_parameters(built)
    vocab = int(built.config.vocab_size)
    initial = {k: v.clone() for k, v in built.state_dict().items()}
    del built
    init_ray()
    peak = peak_tflops(torch.cuda.get_device_name()) if gpu else None
    result: dict[str, Any] = {
        "gpu": gpu,
        "model": s["model"],
        "parameters": n_params,
        "settings": s,
        "peak_bf16_tflops": peak,
        "environment": environment(gpu),
        "training": [],
        "export": [],
        "generation": [],
        "errors": [],
    }
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_check" if gpu else "cpu_check"

    def save() -> None:
        # After every cell: a run cut off at its time limit still returns what it measured.
        result["wall_s"] = time.perf_counter() - start
        (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")

    def generate(model_dir: Path) -> None:
        print("== generation", flush=True)
        try:
            for cell in generation_cells(model_dir, s, gpu):
                result["generation"].append(cell)
                print(json.dumps(cell), flush=True)
                save()
        except Exception as exc:
            traceback.print_exc()
            result["errors"].append(f"generation: {type(exc).__name__}: {exc}")

    # Generation first, on the model built from the config (random weights: the mechanisms'
    # on/off ratio is what is measured), so that a run cut off by the device's time limit has
    # timed it; then ZeRO-3 full, whose export round-trip runs next.
    if not args.skip_generation:
        generate(Path(spec))
    for zero, lora in ((3, False), (3, True), (2, False), (2, True)):
        print(f"== train ZeRO-{zero} {'LoRA' if lora else 'full'}", flush=True)
        try:
            cell = train_cell(spec, s, zero, lora, gpu, root, vocab)
        except Exception as exc:
            traceback.print_exc()
            name = f"z{zero}-{'lora' if lora else 'full'}"
            result["training"].append({"cell": name, "error": f"{type(exc).__name__}: {exc}"})
            result["errors"].append(f"train {name}: {type(exc).__name__}: {exc}")
            continue
        flops_per_token = (4 if lora else 6) * n_params
        cell["mfu"] = flops_per_token * cell["tokens_per_s"] / (peak * 1e12) if peak else None
        result["training"].append(cell)
        print(json.dumps(cell), flush=True)
        save()
        if zero != 3:
            continue
        try:
            check = export_roundtrip(cell["run_id"], tracking_uri, initial, lora)
        except Exception as exc:
            traceback.print_exc()
            check = {"run_id": cell["run_id"], "lora": lora, "ok": False, "error": str(exc)}
        result["export"].append(check)
        print(json.dumps(check), flush=True)
        save()
        if not check["ok"]:
            result["errors"].append(f"export round-trip z3 lora={lora}: {check}")
    save()
    text = markdown(result)
    (out / f"{stem}.md").write_text(text)
    print(text)
    print(f"wrote {out / stem}.json and .md", flush=True)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
