"""One training step of a model on this CPU: fp32 against bf16 autocast, fixed and varying lengths.

Why: `deepspeed.precision: auto` picks bf16 only where the CPU computes it natively, and the
training loop's batches change length every step (length-grouped, no padding to a bucket).
This measures, outside Ray and DeepSpeed, what each precision costs per forward + backward
pass (batch x length random token ids, labels = inputs, the training loop's autocast), once
with the same length every step and once with a new length every step, so a gap between the
two shows what shape changes cost (kernel selection, allocation).

Prints a table, writes bench/results/precision.json. Usage:
    python -m bench.precision [--model smollm2-135m] [--batch 8] [--length 96] [--steps 6]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import command, median, table, write_json


def step_seconds(model: Any, batch: int, length: int, autocast: Callable[[], Any]) -> float:
    """Wall time of one forward + backward pass on random ids of shape (batch, length)."""
    import torch

    ids = torch.randint(100, 10_000, (batch, length))
    start = time.perf_counter()
    with autocast():
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
    import torch

    from biogner.models.config import ModelConfig
    from biogner.models.load import cpu_has_native_bf16, load_model
    from biogner.runtime import cpu_threads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=96)
    parser.add_argument("--steps", type=int, default=6, help="measured steps per cell")
    args = parser.parse_args(argv)

    torch.set_num_threads(cpu_threads())
    model, _ = load_model(ModelConfig(spec=args.model, lora=False), "cpu", for_training=True)
    model.train()
    precisions: dict[str, Callable[[], Any]] = {
        "fp32": contextlib.nullcontext,
        "bf16 autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    }
    rows = []
    for name, autocast in precisions.items():
        for shapes in ("fixed", "varying"):
            lengths = [
                args.length + (k if shapes == "varying" else 0) for k in range(args.steps + 1)
            ]
            times = [step_seconds(model, args.batch, n, autocast) for n in lengths]
            seconds = median(times[1:])  # the first step of a cell warms up
            rows.append(
                {
                    "precision": name,
                    "lengths": shapes,
                    "step_s": seconds,
                    "tokens_s": args.batch * args.length / seconds,
                }
            )
    columns = ["precision", "lengths", "step_s", "tokens_s"]
    print(table(rows, columns))
    print(
        f"{args.model}, batch {args.batch} x {args.length}+ tokens, {torch.get_num_threads()} "
        f"threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: "
        f"{cpu_has_native_bf16()}; median of {args.steps} steps after one warm-up"
    )
    path = write_json(
        "precision",
        {
            "command": command("bench.precision", argv),
            "settings": vars(args),
            "native_bf16": cpu_has_native_bf16(),
            "rows": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
