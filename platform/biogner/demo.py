"""`biogner demo`: the whole platform on one machine with embedded defaults.

time this machine (`demo_plan`: what fits the time budget) -> convert -> fine-tune two
formats -> score both on the whole dev split -> select the champion (paired bootstrap; a tie
goes to the cheaper format) -> score it on the whole test split -> serve it -> send an
abstract -> print entities and the commands to go further. Every stage is resumable: a second
run reuses the plan, the conversion, the finished cells and the champion.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from biogner.corpora import load_split
from biogner.corpora.download import DownloadError, ensure_corpus
from biogner.corpora.registry import SPLITS
from biogner.data import ConvertConfig, convert, shard_is_current
from biogner.demo_plan import Plan, choose_plan, describe, probe
from biogner.evaluate.config import EvalConfig
from biogner.evaluate.runner import run_evaluation
from biogner.formats import FORMATS
from biogner.models.config import GenerationConfig, ModelConfig
from biogner.models.load import cpu_flags, cpu_has_native_bf16, load_model
from biogner.runtime import init_ray
from biogner.serve.demo import serve_and_query
from biogner.study.config import SweepConfig
from biogner.study.report import build_report
from biogner.study.select import Selection, explain, select_champion
from biogner.study.sweep import CellOutcome, run_sweep, summary_table
from biogner.tracking.config import TrackingConfig
from biogner.tracking.models import run_model_uri
from biogner.tracking.runs import client_for
from biogner.tracking.uris import alias_uri

CORPUS = "NCBI-disease"
SAMPLE_ABSTRACT = (
    "Germline mutations in the BRCA1 gene predispose women to early-onset breast cancer and "
    "ovarian cancer. We studied 120 families with hereditary nonpolyposis colorectal cancer "
    "and found that Duchenne muscular dystrophy and cystic fibrosis were absent. Patients "
    "with ataxia-telangiectasia showed an increased risk of leukaemia."
)


# How the demo scores (dev and test alike), for speed on a CPU (bench/RESULTS.md#demo):
# batches of 32 sentences; two evaluation actors of one thread each (+16 % sentences/s over
# one actor with two threads: small decoding matmuls scale badly across threads); answers
# capped at 48 tokens: the longest gold answer of the NCBI-disease dev and test splits is 46
# tokens, and a batch otherwise decodes until its longest rambling answer ends (+24 %).
EVAL_BATCH_SIZE = 32
EVAL_ACTORS = 2
EVAL_ANSWER_CAP = 48


def eval_generation() -> GenerationConfig:
    return GenerationConfig(batch_size=EVAL_BATCH_SIZE, max_new_tokens_cap=EVAL_ANSWER_CAP)


@dataclass(frozen=True)
class DemoPreset:
    model: str
    formats: tuple[str, ...]
    train_limit: int | None
    steps: int
    batch_size: int
    learning_rate: float
    model_overrides: tuple[str, ...]


# `full`: the reference recipe (jobs/configs/ncbi_cpu.yaml: SmolLM2-135M fully fine-tuned,
# lr 2e-4, bf16 where the CPU has it) for two term writings, 80 steps of 8
# sentences each from the whole train split; both are scored on the whole dev split, which
# picks the champion, and the champion on the whole test split (bench/RESULTS.md#demo).
# Term writings, not the v4 study's leading inline pair: an inline answer copies the sentence
# (6x the generated tokens), which a demo's scoring budget cannot afford on an AVX2 laptop.
# `tiny`: the same path with tiny-llama in a few minutes.
PRESETS = {
    "full": DemoPreset(
        "smollm2-135m", ("conv_term", "multi_term"), None, 80, 8, 2e-4, ("model.lora=false",)
    ),
    "tiny": DemoPreset(
        "tiny-llama", ("conv_term", "multi_triple"), 48, 6, 4, 2e-3, ("model.lora=false",)
    ),
}


def _stage(n: int, title: str) -> float:
    print(f"\n=== [{n}/6] {title}", flush=True)
    return time.perf_counter()


def _done(start: float) -> None:
    print(f"    done in {time.perf_counter() - start:.1f} s", flush=True)


PROBE_THREADS = 2  # the demo trains on one two-thread worker and scores on two one-thread actors
PLAN_FILE = "plan.json"


def demo_plan(preset: DemoPreset, home: Path, data_dir: str, budget_minutes: float) -> Plan:
    """The formats and steps this machine can train within the budget: measured on the first
    run and kept in `home`, so a rerun resumes the same cells (a changed step count would be a
    different run, which the rerun guard refuses)."""
    saved = home / PLAN_FILE
    if saved.is_file():
        data = json.loads(saved.read_text(encoding="utf-8"))
        plan = Plan(
            tuple(data["formats"]), int(data["steps"]), data["estimate_s"], data["budget_s"]
        )
        print(
            f"    plan of the first run ({saved}): {' and '.join(plan.formats)}, {plan.steps} steps"
        )
        return plan
    full = Plan(preset.formats, preset.steps, 0.0, 0.0)
    if budget_minutes <= 0:
        print("    no time budget (--budget-minutes 0): the full demo")
        return full
    model, _ = load_model(ModelConfig(spec=preset.model, lora=False), "cpu", for_training=True)
    speed = probe(model, cpu_has_native_bf16(), PROBE_THREADS, amx="amx_bf16" in cpu_flags())
    del model
    n_dev, n_test = (len(load_split(CORPUS, split, data_dir)) for split in ("dev", "test"))
    plan = choose_plan(preset.formats, preset.steps, speed, n_dev, n_test, budget_minutes * 60)
    print(describe(plan, speed, preset.formats, preset.steps))
    home.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(asdict(plan) | {"speed": asdict(speed)}), encoding="utf-8")
    return plan


def champion_test_scores(
    tracking: TrackingConfig, run_id: str, fmt: str, data_dir: str | None = None
) -> dict[str, float]:
    """The champion's whole-test-split scores: reused when that run was already scored."""
    metrics = client_for(tracking).get_run(run_id).data.metrics
    if "test_f1_low" in metrics:
        return dict(metrics)
    result = run_evaluation(
        EvalConfig(
            model=run_model_uri(run_id), corpus=CORPUS, format=fmt, split="test",
            data_dir=data_dir, tracking=tracking, parent_run_id=run_id,
            generation=eval_generation(), num_actors=EVAL_ACTORS,
        )
    )  # fmt: skip
    return result.metrics


@dataclass(frozen=True)
class DemoSetup:
    """What every stage of one demo run shares: where it keeps its state and what it names."""

    preset: DemoPreset
    home: Path
    experiment: str
    model_name: str  # serve_configs/local.yaml serves `biogner`
    tracking: TrackingConfig
    data_dir: str
    serve_port: int

    @property
    def champion_uri(self) -> str:
        return alias_uri(self.model_name, "champion")


def demo_setup(tiny: bool, home: str | Path, data_dir: str, serve_port: int) -> DemoSetup:
    """The preset, the store under `home` and the names of the full or the tiny demo."""
    root = Path(home).resolve()
    tracking = TrackingConfig(
        tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "artifacts")
    )
    return DemoSetup(
        preset=PRESETS["tiny" if tiny else "full"],
        home=root,
        experiment="biogner-demo-tiny" if tiny else "biogner-demo",
        model_name="biogner-tiny" if tiny else "biogner",
        tracking=tracking,
        data_dir=data_dir,
        serve_port=serve_port,
    )


def convert_corpus(setup: DemoSetup) -> Path:
    """Stage 1: the corpus in every format, unless every shard is already current."""
    converted = setup.home / "converted"
    missing = [
        (fmt, split)
        for fmt in FORMATS
        for split in SPLITS
        if not shard_is_current(converted, CORPUS, split, fmt)
    ]
    if missing:
        cfg = ConvertConfig(
            corpora=[CORPUS], formats=["all"], out=str(converted), data_dir=setup.data_dir
        )
        print(f"    {convert(cfg).total_rows} rows -> {converted}")
    else:
        print(f"    reusing {converted} (all {len(FORMATS)} formats x {len(SPLITS)} splits)")
    return converted


def demo_sweep(
    setup: DemoSetup, formats: Sequence[str], steps: int, converted: Path
) -> SweepConfig:
    """Stage 2's study: one cell per format, trained on one worker, scored on the whole dev
    split (test is for the champion only)."""
    preset = setup.preset
    sweep = SweepConfig(
        experiment=setup.experiment,
        base=None,
        overrides=[
            *preset.model_overrides,
            *([f"data.limit={preset.train_limit}"] if preset.train_limit else []),
            f"data.converted_dir={converted}",
            f"data.data_dir={setup.data_dir}",
            f"optim.max_steps={steps}",
            f"optim.per_device_batch_size={preset.batch_size}",
            f"optim.learning_rate={preset.learning_rate}",
            "optim.warmup_ratio=0.05",
            "optim.log_every_steps=5",
            f"optim.checkpoint_every_steps={steps}",
            "scaling.num_workers=1",
            "scaling.cpus_per_worker=2",
            f"scaling.storage_path={setup.home / 'ray_results'}",
            "deepspeed.zero_stage=0",
        ],
        models=[preset.model],
        formats=list(formats),
        corpora=[CORPUS],
        tracking=setup.tracking,
    )
    sweep.evaluate.splits = ["dev"]
    sweep.evaluate.generation = eval_generation()
    sweep.evaluate.num_actors = EVAL_ACTORS
    sweep.metric = "dev_f1"
    return sweep


def choose_champion(
    setup: DemoSetup, sweep: SweepConfig, outcomes: list[CellOutcome]
) -> Selection | None:
    """Stage 3: the cells' table and the champion on dev; None when every cell failed."""
    print(summary_table(sweep, outcomes))
    if all(o.status == "FAILED" for o in outcomes):
        print("all cells failed; see the errors above")
        return None
    selection = select_champion(
        setup.tracking, setup.experiment, "dev_f1", model_name=setup.model_name
    )
    print(explain(selection))
    return selection


def score_champion(setup: DemoSetup, selection: Selection) -> Path:
    """Stage 4: the champion's whole-test-split scores, then the study's report (its path)."""
    champion = selection.champion
    test = champion_test_scores(
        setup.tracking, champion.run_id, champion.eval_format, setup.data_dir
    )
    print(
        f"    champion {champion.format}: test F1 {test['test_f1']:.4f} "
        f"[95% CI {test['test_f1_low']:.4f}-{test['test_f1_high']:.4f}], "
        f"P {test['test_precision']:.4f}, R {test['test_recall']:.4f}, "
        f"{int(test['test_sentences'])} sentences, {int(test['test_gold_mentions'])} gold mentions"
    )
    report = build_report(setup.tracking, setup.experiment, setup.home / "report")
    print(f"    report: {report.markdown}")
    return report.markdown


def query_champion(setup: DemoSetup) -> None:
    """Stage 5: the champion behind Ray Serve, sent the sample abstract; its entities shown."""
    response = serve_and_query(
        setup.champion_uri, setup.tracking, setup.serve_port, SAMPLE_ABSTRACT
    )
    entities = response["results"][0]["entities"]
    print(f"    abstract: {SAMPLE_ABSTRACT}")
    print(f"    {len(entities)} entities:")
    for e in entities:
        print(f"      [{e['start']:>4}, {e['end']:>4}) {e['label']:<10} {e['text']}")


def print_next_steps(setup: DemoSetup, report: Path) -> None:
    """Stage 6: the commands that go on from here (the demo's endpoint is gone by now)."""
    tracking, port = setup.tracking, setup.serve_port
    print(f"    MLflow UI:   mlflow ui --backend-store-uri {tracking.uri}")
    print(
        f"    serve:       biogner serve --config serve_configs/local.yaml "
        f"--model {setup.champion_uri} --port {port} "
        f"--set tracking.tracking_uri={tracking.uri} "
        f"--set tracking.artifact_root={tracking.artifact_root}"
    )
    print(
        f"    query:       curl -s http://127.0.0.1:{port}/v1/extract -H "
        "'Content-Type: application/json' "
        '-d \'{"texts": ["BRCA1 mutations cause breast cancer ."]}\''
    )
    print(f"    report:      {report}")


def run_demo(
    tiny: bool = False,
    home: str | Path = ".biogner",
    serve_port: int = 8000,
    data_dir: str | None = None,
    mirror: str | None = None,
    budget_minutes: float = 20.0,
) -> int:
    """The six stages in order; 2 when the corpus cannot be had, 1 when every cell failed."""
    total = time.perf_counter()
    try:  # before Ray starts: a machine without the corpus fails (or fetches) at once
        folder, fetched = ensure_corpus(CORPUS, data_dir, mirror)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if fetched:
        print(f"fetched {CORPUS} (checksums verified) into {folder / CORPUS}")
    setup = demo_setup(tiny, home, str(folder), serve_port)
    preset = setup.preset
    if tiny:
        formats, steps = preset.formats, preset.steps
    else:
        print(f"measuring this machine against the {budget_minutes:g}-minute budget")
        plan = demo_plan(preset, setup.home, setup.data_dir, budget_minutes)
        formats, steps = plan.formats, plan.steps
    init_ray()

    t = _stage(1, "convert NCBI-disease into all ten formats (Ray Data)")
    converted = convert_corpus(setup)
    _done(t)
    t = _stage(2, f"fine-tune {preset.model} in {' and '.join(formats)}, {steps} steps (Ray Train)")
    sweep = demo_sweep(setup, formats, steps, converted)
    outcomes = run_sweep(sweep)
    _done(t)
    t = _stage(3, "choose on the whole dev split (strict micro F1, paired bootstrap)")
    selection = choose_champion(setup, sweep, outcomes)
    if selection is None:
        return 1
    _done(t)
    t = _stage(4, "score the champion on the whole test split")
    report = score_champion(setup, selection)
    _done(t)
    t = _stage(5, "serve the champion (Ray Serve on 127.0.0.1) and send an abstract")
    query_champion(setup)
    _done(t)
    _stage(6, "next steps")
    print_next_steps(setup, report)
    print(f"\ndemo finished in {time.perf_counter() - total:.0f} s")
    return 0
