"""`biogner train` and `jobs/train.py`: one entry point, a YAML config + key=value overrides."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from biogner.config import ConfigError, load_config, to_yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file (jobs/configs/*.yaml); defaults otherwise")
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. optim.max_steps=20")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config")


def run(args: argparse.Namespace) -> int:
    from biogner.train.config import TrainConfig  # torch/mlflow: only when training

    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
    except (ConfigError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_yaml(cfg))
        return 0
    from biogner.train.driver import RerunConflict, run_training

    try:
        outcome = run_training(cfg)
    except RerunConflict as exc:  # a clear refusal, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"run {outcome.run_id}: {outcome.status} after {outcome.steps} steps; "
        f"final loss {outcome.metrics.get('loss', float('nan')):.4f}"
    )
    print(f"tracking: {cfg.tracking.uri}  (mlflow ui --backend-store-uri {cfg.tracking.uri})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/train.py", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
