"""The training recipe's parts that run without Ray: the checkpointed state, the step meter,
the step plan (tests/test_train.py runs the whole recipe on Ray Train + DeepSpeed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from biogner.config import load_config
from biogner.train.config import TRAIN_SECONDS, TrainConfig
from biogner.train.loop import TrainState, plan_steps, step_line
from biogner.train.meter import StepMeter

TINY = Path(__file__).parents[1] / "jobs" / "configs" / "tiny.yaml"


def test_train_state_file_keeps_its_keys_and_reads_a_state_without_seconds() -> None:
    state = TrainState(global_step=6, epoch=1, micro_in_epoch=4, train_seconds=2.5)
    assert json.loads(state.to_json()) == {
        "global_step": 6,
        "epoch": 1,
        "micro_in_epoch": 4,
        TRAIN_SECONDS: 2.5,
    }
    assert TrainState.from_json(state.to_json()) == state
    # a checkpoint written before the loop counted its own seconds
    old = TrainState.from_json('{"global_step": 2, "epoch": 0, "micro_in_epoch": 8}')
    assert old == TrainState(2, 0, 8, 0.0)


def test_step_meter_adds_up_one_steps_micro_batches_and_starts_over() -> None:
    meter = StepMeter()
    meter.add(2.0, real=30, padded=40)
    meter.add(1.0, real=10, padded=40)
    time.sleep(0.01)
    summary = meter.summary()  # one process: the "over ranks" reductions are the identity
    assert summary["loss"] == pytest.approx(1.5)  # the mean over micro-batches
    assert summary["padding_ratio"] == pytest.approx(0.5)
    assert 0 < summary["tokens_per_s"] < 40 / 0.01
    meter.reset()
    assert (meter.loss_sum, meter.micro, meter.real, meter.padded) == (0.0, 0, 0, 0)
    meter.add(4.0, real=8, padded=8)
    assert meter.summary()["loss"] == 4.0 and meter.summary()["padding_ratio"] == 0.0


def test_plan_steps_counts_optimizer_steps_per_rank_and_refuses_too_few_rows() -> None:
    cfg = load_config(
        TrainConfig,
        TINY,
        [
            "optim.per_device_batch_size=4",
            "optim.gradient_accumulation_steps=2",
            "optim.epochs=1.5",
            "optim.max_steps=null",
        ],
    )
    # 100 rows on 2 ranks: 50 each, 12 micro-batches, 6 optimizer steps an epoch
    assert plan_steps(cfg, 100, 2) == (6, 9)
    fixed = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"max_steps": 20})})
    assert plan_steps(fixed, 100, 2) == (6, 20)  # a fixed budget repeats epochs
    with pytest.raises(ValueError, match="too few for 2 workers"):
        plan_steps(cfg, 15, 2)


def test_step_line_shows_the_step_its_metrics_and_eta() -> None:
    metrics = {"loss": 1.23456, "learning_rate": 2e-4, "tokens_per_s": 99.6, "padding_ratio": 0.1}
    assert step_line(3, 10, metrics, "1m") == (
        "[train] step 3/10 loss 1.2346 lr 2.00e-04 tokens/s 100 padding 0.100 eta 1m"
    )
