"""The demo's time budget: what it chooses for a machine's measured speed, the probe on a real
(tiny) model, the CPU-flag override, and the plan kept for reruns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from biogner.demo import PLAN_FILE, PRESETS, demo_plan, demo_setup, demo_sweep
from biogner.demo_plan import (
    MARGIN,
    MIN_STEPS,
    Plan,
    Speed,
    choose_plan,
    describe,
    estimate_s,
    probe,
)
from biogner.generation import packed
from biogner.models.config import ModelConfig
from biogner.models.load import CPU_BF16_ENV, cpu_bf16_override, cpu_has_native_bf16, load_model
from biogner.study.sweep import cell_train_config

FORMATS = ("conv_term", "multi_term")
N_DEV, N_TEST = 923, 940  # NCBI-disease
BUDGET_S = 20 * 60


def _speed(train_probe_s: float, forward_probe_s: float) -> Speed:
    return Speed(train_probe_s, forward_probe_s, bf16=False, threads=2)


def test_a_fast_machine_gets_the_full_demo() -> None:
    plan = choose_plan(FORMATS, 80, _speed(1.0, 0.1), N_DEV, N_TEST, BUDGET_S)
    assert plan == Plan(FORMATS, 80, plan.estimate_s, BUDGET_S) and plan.fits


def test_slower_machines_get_fewer_steps_then_one_writing_then_the_smallest() -> None:
    chosen = []
    for train_probe_s, forward_probe_s in [(1.7, 0.3), (5.0, 0.6), (5.0, 1.5), (10.0, 3.0)]:
        speed = _speed(train_probe_s, forward_probe_s)
        plan = choose_plan(FORMATS, 80, speed, N_DEV, N_TEST, BUDGET_S)
        chosen.append((len(plan.formats), plan.steps, plan.fits))
        if plan.fits and plan.steps < 80:  # the largest option that fits: 10 steps more would not
            bigger = estimate_s(len(plan.formats), plan.steps + 10, speed, N_DEV, N_TEST)
            assert bigger > (1 - MARGIN) * BUDGET_S, speed
        if plan.fits:  # a margin of the budget stays free for the probe's own spread
            assert plan.estimate_s <= (1 - MARGIN) * BUDGET_S
    assert chosen[0][:2] == (2, 80)
    assert chosen[1][0] == 2 and chosen[1][1] < 80  # both writings, fewer steps
    assert chosen[2][0] == 1  # one writing
    assert chosen[3] == (1, MIN_STEPS, False)  # nothing fits: the smallest, which says so
    for (f1, s1, _), (f2, s2, _) in zip(chosen, chosen[1:], strict=False):
        assert (f2, s2) <= (f1, s1) or f2 < f1  # a slower machine never gets more


def test_estimate_grows_with_steps_writings_and_slowness() -> None:
    base = _speed(1.5, 0.3)
    assert estimate_s(2, 80, base, N_DEV, N_TEST) > estimate_s(2, 70, base, N_DEV, N_TEST)
    assert estimate_s(2, 80, base, N_DEV, N_TEST) > estimate_s(1, 80, base, N_DEV, N_TEST)
    assert estimate_s(1, 80, _speed(3.0, 0.3), N_DEV, N_TEST) > estimate_s(
        1, 80, base, N_DEV, N_TEST
    )
    assert estimate_s(1, 80, _speed(1.5, 0.6), N_DEV, N_TEST) > estimate_s(
        1, 80, base, N_DEV, N_TEST
    )


def test_the_constants_follow_the_matmul_unit() -> None:
    amx = Speed(1.5, 0.24, bf16=True, threads=2, amx=True)
    avx512 = Speed(1.5, 0.24, bf16=True, threads=2)
    assert (amx.kernels, avx512.kernels, _speed(1.5, 0.24).kernels) == (
        "amx",
        "avx512_bf16",
        "fp32",
    )
    # AMX tiles make the probe's large forward fast, not the decode loop's small passes: the
    # same probe times promise less scoring on an AMX box, so its plan is smaller
    assert amx.score_rate < avx512.score_rate and amx.train_step_s > avx512.train_step_s
    probed = [Speed(3.0, 0.5, True, 2, amx=True), Speed(3.0, 0.5, True, 2)]
    assert estimate_s(2, 80, probed[0], N_DEV, N_TEST) > estimate_s(2, 80, probed[1], N_DEV, N_TEST)
    on_amx, on_avx512 = (choose_plan(FORMATS, 80, p, N_DEV, N_TEST, BUDGET_S) for p in probed)
    assert (len(on_amx.formats), on_amx.steps) < (len(on_avx512.formats), on_avx512.steps)
    assert "bf16 (native, AMX)" in describe(on_amx, amx, FORMATS, 80)


def test_describe_says_what_was_measured_and_chosen() -> None:
    speed = _speed(5.0, 0.6)
    plan = choose_plan(FORMATS, 80, speed, N_DEV, N_TEST, BUDGET_S)
    text = describe(plan, speed, FORMATS, 80)
    assert "fp32 (no native bf16" in text and "sentences/s" in text
    assert f"{' and '.join(plan.formats)}, {plan.steps} steps" in text and "over budget" in text
    smallest = choose_plan(FORMATS, 80, _speed(10.0, 3.0), N_DEV, N_TEST, BUDGET_S)
    assert "runs anyway" in describe(smallest, speed, FORMATS, 80)


def test_cpu_bf16_override(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = "flags\t\t: fpu avx2 avx512_bf16\n"
    for value, expected in [("0", False), ("1", True), ("auto", None), ("", None)]:
        monkeypatch.setenv(CPU_BF16_ENV, value)
        assert cpu_bf16_override() is expected
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert cpu_has_native_bf16() is False
    assert cpu_has_native_bf16(flags) is True  # given flags are read as they are
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert cpu_has_native_bf16() is True
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match=CPU_BF16_ENV):
        cpu_has_native_bf16()


def test_probe_times_a_real_model_and_restores_threads() -> None:
    model, _ = load_model(ModelConfig(lora=False), "cpu", for_training=True)  # tiny-llama
    threads = torch.get_num_threads()
    speed = probe(model, bf16=False, threads=1, amx=True)  # AMX unused without bf16
    assert speed.kernels == "fp32" and not speed.amx
    assert torch.get_num_threads() == threads
    assert 0 < speed.forward_probe_s < speed.train_probe_s < 30
    assert speed.train_step_s > speed.train_probe_s and speed.score_rate > 0
    assert all(p.grad is None for p in model.parameters())  # the probe trains nothing
    # the forward was timed on the kernels scoring runs on: Linear weights packed as the
    # Generator packs them (fp32 on x86-64 where this torch has oneDNN)
    packs_fp32 = packed.available() and torch.float32 in packed.packed_dtypes()
    assert any(isinstance(m, packed.PackedLinear) for m in model.modules()) == packs_fp32


def test_the_plan_is_kept_for_reruns_and_budget_zero_is_the_full_demo(tmp_path: Path) -> None:
    preset = PRESETS["full"]
    full = demo_plan(preset, tmp_path / "a", "unused", budget_minutes=0)
    assert (full.formats, full.steps) == (preset.formats, preset.steps)
    saved = Plan(("conv_term",), 50, 1100.0, 1200.0)
    home = tmp_path / "b"
    home.mkdir()
    (home / PLAN_FILE).write_text(
        json.dumps(
            {"formats": ["conv_term"], "steps": 50, "estimate_s": 1100.0, "budget_s": 1200.0}
        )
    )
    # no probe, no corpus: the saved plan is what a rerun trains (same cells, same runs)
    assert demo_plan(preset, home, "no-such-folder", budget_minutes=20) == saved


def test_the_demo_s_cells_train_the_plan_on_one_worker_in_its_own_store(tmp_path: Path) -> None:
    """The sweep the demo runs resolves into training configs that take the plan's steps,
    checkpoint once at the end, read the demo's own shards and log to the demo's store."""
    setup = demo_setup(True, tmp_path / ".biogner", str(tmp_path / "data"), 8000)
    sweep = demo_sweep(setup, ("conv_term", "multi_term"), 7, setup.home / "converted")
    assert sweep.evaluate.splits == ["dev"] and sweep.metric == "dev_f1"
    cells = sweep.cells()
    assert [c.formats for c in cells] == [("conv_term",), ("multi_term",)]
    cfg = cell_train_config(sweep, cells[0])
    assert cfg.optim.max_steps == cfg.optim.checkpoint_every_steps == 7
    assert cfg.data.limit == PRESETS["tiny"].train_limit
    assert cfg.data.converted_dir == str(tmp_path / ".biogner" / "converted")
    assert cfg.data.data_dir == str(tmp_path / "data")
    assert (cfg.scaling.num_workers, cfg.deepspeed.zero_stage) == (1, 0)
    assert cfg.model.spec == "tiny-llama" and not cfg.model.lora
    assert cfg.tracking.uri == f"sqlite:///{setup.home}/mlflow.db"
    assert cfg.tracking.experiment == "biogner-demo-tiny"
    assert setup.champion_uri.endswith("biogner-tiny@champion")
