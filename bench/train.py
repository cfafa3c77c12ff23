"""Training throughput: Ray Train + DeepSpeed vs a plain single-process PyTorch loop.

For each model, the Ray side runs `biogner.train.driver.run_training` (the code path of
`biogner train`) with 1..N workers and each ZeRO stage, and reads tokens/s and padding
ratio from the run's MLflow metric history (median over the steps after the first). The
plain side builds the same examples (same corpus slice, format, tokenizer, length-grouped
batches of the same size: those of a 1-worker run), then trains with torch AdamW in one
process. tokens/s counts real (non-padding) tokens over all workers per optimizer step.
Peak memory: the summed RSS (and PSS, which counts shared pages once) of the whole Ray
process tree, sampled during fit; for the plain loop, the peak RSS of its own process.

Prints a table, writes bench/results/train.json (train_gpu.json with --gpu). Usage:
    python -m bench.train [--models tiny-llama,smollm2-135m] [--workers 1,2] [--steps 12]
        [--batch-size 4] [--zero 2] [--gpu [--model-config qwen2.5-0.5b]]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.common import command, median, table, write_json
from biogner.config import load_config
from biogner.runtime import allocator_env
from biogner.train.config import TrainConfig

GIB = 1024**3
LORA_TARGETS = "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"
LORA_OVERRIDES = [
    "model.lora=true",
    "model.lora_r=16",
    "model.lora_alpha=32",
    f"model.lora_target_modules={LORA_TARGETS}",
]
# Models built from a config (random weights, real shapes): they measure the cost of a
# size without a download. Only on GPU: a step of these on a laptop CPU takes minutes.
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1_000_000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    # The same architecture at test size: the CPU run of bench/gpu/check.sh.
    "tiny-qwen2": {
        "model_type": "qwen2",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 2048,
        "max_position_embeddings": 2048,
        "rope_theta": 1_000_000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
}
# Reading PSS walks every page of every process (/proc/*/smaps_rollup): at 0.5 s it cost the
# driver 80 % of a core, which the 2-core Ray cells then lacked. Sample sparsely.
MEMORY_SAMPLE_S = 5.0


# --------------------------------------------------------------------------- configs


def build_config_model(name: str, root: Path, tokenizer_spec: str = "smollm2-135m") -> str:
    """A randomly initialised model shaped like `name`, saved as an HF dir with the tokenizer
    of `tokenizer_spec` (its ids must fit the shape's vocabulary); returns the dir as a spec."""
    target = root / f"bench-{name}-{Path(tokenizer_spec).name}"
    if (target / "config.json").is_file():
        return str(target)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from biogner.models.load import load_tokenizer

    shape = dict(MODEL_CONFIGS[name])
    tokenizer = load_tokenizer(tokenizer_spec)
    if len(tokenizer) > shape["vocab_size"]:
        raise ValueError(f"{tokenizer_spec}'s {len(tokenizer)} ids do not fit {name}'s vocabulary")
    config = AutoConfig.for_model(
        shape.pop("model_type"),
        **shape,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return str(target)


def bench_config(
    args: argparse.Namespace, spec: str, lora: bool, workers: int, zero: int, tmp: Path
) -> TrainConfig:
    """The run config of one Ray cell (everything but the model is shared by all cells)."""
    cpus = args.cpus_per_worker or max(1, (os.cpu_count() or 1) // workers)
    name = Path(spec).name
    overrides = [
        f"run_name=bench-{name}-w{workers}-z{zero}-{int(time.time())}",
        f"model.spec={spec}",
        *(LORA_OVERRIDES if lora else ["model.lora=false"]),
        f"data.corpora=[{args.corpus}]",
        f"data.formats=[{args.format}]",
        f"data.limit={args.limit}",
        f"data.max_length={args.max_length}",
        f"data.converted_dir={tmp / 'converted'}",
        f"optim.max_steps={args.steps}",
        f"optim.per_device_batch_size={args.batch_size}",
        "optim.gradient_accumulation_steps=1",
        "optim.log_every_steps=1",
        "optim.checkpoint_every_steps=0",
        f"deepspeed.zero_stage={zero}",
        f"deepspeed.precision={args.precision or ('bf16' if args.gpu else 'auto')}",
        f"scaling.num_workers={workers}",
        f"scaling.use_gpu={str(args.gpu).lower()}",
        f"scaling.cpus_per_worker={cpus}",
        "scaling.max_failures=0",
        f"scaling.storage_path={tmp / 'ray'}",
        "tracking.experiment=bench-train",
        f"tracking.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        f"tracking.artifact_root={tmp / 'artifacts'}",
    ]
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    return load_config(TrainConfig, None, overrides)


# --------------------------------------------------------------------------- memory


def tree_memory(root: psutil.Process) -> tuple[int, int]:
    """(summed RSS, summed PSS) in bytes of `root` and all its descendants."""
    rss = pss = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


class TreeSampler(threading.Thread):
    """Samples the memory of this process tree (driver, raylet, GCS, workers) until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int, int]] = []  # (unix time, rss, pss)
        self._stop_event = threading.Event()
        self._root = psutil.Process()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.time(), *tree_memory(self._root)))
            self._stop_event.wait(MEMORY_SAMPLE_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def peak(self, until: float | None = None) -> tuple[int, int]:
        kept = [s for s in self.samples if until is None or s[0] <= until] or self.samples
        return max(s[1] for s in kept), max(s[2] for s in kept)


# --------------------------------------------------------------------------- Ray side


def ray_cell(cfg: TrainConfig) -> dict[str, Any]:
    """One `run_training` with memory sampling; metrics from the run's MLflow history."""
    from mlflow.tracking import MlflowClient

    from biogner.train.driver import run_training

    idle_rss, idle_pss = tree_memory(psutil.Process())
    sampler = TreeSampler()
    sampler.start()
    start = time.perf_counter()
    try:
        outcome = run_training(cfg)
    finally:
        sampler.stop()
    wall = time.perf_counter() - start
    client = MlflowClient(cfg.tracking.uri)

    def history(key: str) -> list[Any]:
        return sorted(client.get_metric_history(outcome.run_id, key), key=lambda m: m.step)

    tokens, padding, loss = history("tokens_per_s"), history("padding_ratio"), history("loss")
    last_step_ms = max(m.timestamp for m in tokens)
    peak_rss, peak_pss = sampler.peak(until=last_step_ms / 1000)
    fit_rss, fit_pss = sampler.peak()
    return {
        "run_id": outcome.run_id,
        "tokens_per_s": median([m.value for m in tokens[1:]]),
        "padding_ratio": median([m.value for m in padding[1:]]),
        "loss_step1": loss[0].value,
        "steps": len(tokens),
        "idle_rss_gib": idle_rss / GIB,
        "idle_pss_gib": idle_pss / GIB,
        "peak_rss_gib": peak_rss / GIB,  # while training steps ran
        "peak_pss_gib": peak_pss / GIB,
        "fit_peak_rss_gib": fit_rss / GIB,  # including the final export and model logging
        "fit_peak_pss_gib": fit_pss / GIB,
        "wall_s": wall,
    }


# --------------------------------------------------------------------------- plain side


def plain_examples(cfg: TrainConfig) -> list[Any]:
    """The rows a 1-worker Ray run trains on, built without Ray: render, tokenize, drop
    chats longer than max_length (as biogner.train.dataset does)."""
    from biogner.chat_tokens import tokenize_chat
    from biogner.corpora import load_split
    from biogner.data import render_rows
    from biogner.models.load import load_tokenizer
    from biogner.train.batching import rank_examples
    from biogner.train.dataset import mix_choice

    d = cfg.data
    tokenizer = load_tokenizer(cfg.model.spec, cfg.model.cache_dir)
    rows = []
    for corpus in d.corpora:
        for sentence in load_split(corpus, d.split, d.data_dir, d.limit):
            for row in render_rows(sentence, corpus, d.split, d.formats):
                pick = mix_choice(sentence.id, len(d.formats), cfg.optim.seed)
                if len(d.formats) > 1 and d.formats[pick] != row["format"]:
                    continue
                chat = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
                toks = tokenize_chat(tokenizer, chat, d.max_length)
                if not toks["truncated"]:
                    rows.append({"id": row["id"], **toks})
    columns = {key: [r[key] for r in rows] for key in ("id", "input_ids", "labels")}
    return rank_examples(lambda: [columns], 0, 1)


def plain_loop(cfg_json: dict[str, Any], use_gpu: bool) -> dict[str, Any]:
    """Train `steps` optimizer steps with torch AdamW on the 1-worker batches, in a fresh
    process (run through multiprocessing spawn, so its peak RSS is its own)."""
    import torch

    from biogner.models.load import load_model
    from biogner.train.batching import collate, epoch_batches
    from biogner.train.deepspeed_config import client_optimizer, precision
    from biogner.train.loss import causal_lm_loss

    cfg = TrainConfig.model_validate(cfg_json)
    device = torch.device("cuda" if use_gpu else "cpu")
    examples = plain_examples(cfg)
    # The same precision switch as the Ray loop (CPU bf16 = autocast); on GPU the plain loop
    # runs under autocast too, where DeepSpeed would hold bf16 weights.
    bf16 = precision(cfg, use_gpu) == "bf16"
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if bf16
        else contextlib.nullcontext
    )
    torch.manual_seed(cfg.optim.seed)
    model, tokenizer = load_model(cfg.model, device=device, for_training=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = client_optimizer(cfg, params)  # the Ray loop's optimizer (fused AdamW)
    assert optim is not None
    o = cfg.optim
    assert o.max_steps is not None
    step_s: list[float] = []
    rss_gib: list[float] = []  # after each step: does memory keep growing over a long run?
    me = psutil.Process()
    real_tokens: list[int] = []
    pad_ratio: list[float] = []
    losses: list[float] = []
    epoch = 0
    while len(step_s) < o.max_steps:
        batches = epoch_batches(
            examples, o.per_device_batch_size, o.seed, epoch, o.group_by_length,
            o.length_group_batches,
        )  # fmt: skip
        for batch in batches[: o.max_steps - len(step_s)]:
            tensors, real, padded = collate(batch, tokenizer.pad_token_id)
            if use_gpu:
                torch.cuda.synchronize()
            tick = time.perf_counter()
            with autocast():
                out = causal_lm_loss(model, {k: v.to(device) for k, v in tensors.items()})
            out.backward()
            torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm)
            optim.step()
            optim.zero_grad(set_to_none=True)
            loss = float(out.detach())  # waits for the step on GPU too
            step_s.append(time.perf_counter() - tick)
            rss_gib.append(me.memory_info().rss / GIB)
            real_tokens.append(real)
            pad_ratio.append(1.0 - real / padded)
            losses.append(loss)
        epoch += 1
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        "tokens_per_s": median([r / s for r, s in zip(real_tokens[1:], step_s[1:], strict=True)]),
        "padding_ratio": median(pad_ratio[1:]),
        "loss_step1": losses[0],
        "steps": len(step_s),
        "step_s_median": median(step_s[1:]),
        "tokens_per_example": sum(len(e.input_ids) for e in examples) / len(examples),
        "precision": "bf16" if bf16 else "fp32",
        "torch_threads": torch.get_num_threads(),
        "peak_rss_gib": peak_rss / GIB,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / GIB if use_gpu else None,
        "per_step": {"step_s": step_s, "real_tokens": real_tokens, "rss_gib": rss_gib},
    }


def run_plain(cfg: TrainConfig, use_gpu: bool, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The plain loop in a fresh process started with `env` (default: the allocator a Ray
    training worker gets, so that the two paths compare at the same settings)."""
    env = allocator_env() if env is None else env
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the spawned process inherits it before importing torch
    start = time.perf_counter()
    try:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            result: dict[str, Any] = pool.apply(plain_loop, (cfg.model_dump(mode="json"), use_gpu))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    result["wall_s"] = time.perf_counter() - start
    result["env"] = env
    return result


# --------------------------------------------------------------------------- main


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", default="tiny-llama,smollm2-135m", help="model specs")
    parser.add_argument(
        "--model-config",
        default="",
        help=f"models built from a config, GPU only: {', '.join(MODEL_CONFIGS)}",
    )
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--zero", default="2", help="DeepSpeed ZeRO stages, e.g. 2,3")
    parser.add_argument("--modes", default="lora,full", help="lora and/or full fine-tuning")
    parser.add_argument("--precision", help="auto (default on CPU), fp32, bf16 (default on GPU)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--gpu", action="store_true", help="use_gpu, bf16, one GPU per worker")
    parser.add_argument("--cpus-per-worker", type=float, help="default: CPUs / workers")
    parser.add_argument("--corpus", default="NCBI-disease")
    parser.add_argument("--format", default="conv_term")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--limit", type=int, help="sentences; default: enough for one epoch")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    for name in _csv(args.model_config):
        if name not in MODEL_CONFIGS:
            parser.error(f"--model-config {name!r}: known configs are {', '.join(MODEL_CONFIGS)}")
        if not args.gpu:
            parser.error(f"--model-config {name} needs --gpu (too slow to train on a CPU)")
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step is a warm-up and is not counted)")
    if args.limit is None:  # every worker count sees one epoch of distinct sentences
        most = max(int(w) for w in _csv(args.workers))
        args.limit = int(args.steps * args.batch_size * most * 1.2) + 8
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    from biogner.models.cache import cache_root
    from biogner.runtime import init_ray

    init_ray()
    modes = [m == "lora" for m in _csv(args.modes)]
    specs = _csv(args.models)
    specs += [build_config_model(n, cache_root()) for n in _csv(args.model_config)]
    models = [(spec, lora) for spec in specs for lora in modes]
    workers = [int(w) for w in _csv(args.workers)]
    stages = [int(z) for z in _csv(args.zero)]
    n_gpus = 0
    if args.gpu:
        import torch

        n_gpus = torch.cuda.device_count()
    rows: list[dict[str, Any]] = []
    cells: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp_name:
        tmp = Path(tmp_name)
        for spec, lora in models:
            name = Path(spec).name if os.sep in spec else spec
            plain_cfg = bench_config(args, spec, lora, 1, stages[0], tmp)
            print(f"== {name}: plain PyTorch loop, {args.steps} steps", flush=True)
            plain = run_plain(plain_cfg, args.gpu)
            cells.append({"model": name, "pipeline": "plain", **plain})
            for world in workers:
                if args.gpu and world > n_gpus:
                    print(f"skip {name} x{world} workers: only {n_gpus} GPU(s)", flush=True)
                    continue
                for zero in stages:
                    cfg = bench_config(args, spec, lora, world, zero, tmp)
                    print(f"== {name}: Ray Train, {world} worker(s), ZeRO-{zero}", flush=True)
                    ray = ray_cell(cfg)
                    cells.append(
                        {"model": name, "pipeline": "ray", "workers": world, "zero": zero, **ray}
                    )
                    rows.append(
                        {
                            "model": name,
                            "lora": lora,
                            "workers": world,
                            "zero": zero,
                            "ray_tok_s": ray["tokens_per_s"],
                            "plain_tok_s": plain["tokens_per_s"],
                            "ratio": ray["tokens_per_s"] / plain["tokens_per_s"],
                            "ray_sent_s": ray["tokens_per_s"] / plain["tokens_per_example"],
                            "plain_sent_s": plain["tokens_per_s"] / plain["tokens_per_example"],
                            "precision": plain["precision"],
                            "ray_pad": ray["padding_ratio"],
                            "plain_pad": plain["padding_ratio"],
                            "ray_peak_gib": ray["peak_pss_gib"],
                            "ray_rss_sum_gib": ray["peak_rss_gib"],
                            "plain_peak_gib": plain["peak_rss_gib"],
                            "ray_loss1": ray["loss_step1"],
                            "plain_loss1": plain["loss_step1"],
                            "fit_s": ray["wall_s"],
                        }
                    )
    columns = list(rows[0]) if rows else []
    print(table(rows, columns))
    print(
        "ratio = Ray Train tokens/s / plain loop tokens/s (median over steps 2..N); "
        "ray_peak_gib = peak PSS of the whole Ray process tree while steps ran, "
        "ray_rss_sum_gib = the same as summed RSS (shared pages counted per process), "
        "plain_peak_gib = peak RSS of the plain loop's process"
    )
    path = write_json(
        "train_gpu" if args.gpu else "train",
        {
            "command": command("bench.train", argv),
            "settings": {k: v for k, v in vars(args).items() if not callable(v)},
            "rows": rows,
            "cells": cells,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
