"""`biogner demo`: the whole platform on one machine with embedded defaults.

convert -> LoRA-train two formats -> evaluate -> select the champion -> serve it -> send an
abstract -> print entities, the F1 table and the commands to go further. Every stage is
resumable: a second run reuses the conversion, the finished cells and the champion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

CORPUS = "NCBI-disease"
SAMPLE_ABSTRACT = (
    "Germline mutations in the BRCA1 gene predispose women to early-onset breast cancer and "
    "ovarian cancer. We studied 120 families with hereditary nonpolyposis colorectal cancer "
    "and found that Duchenne muscular dystrophy and cystic fibrosis were absent. Patients "
    "with ataxia-telangiectasia showed an increased risk of leukaemia."
)


@dataclass(frozen=True)
class DemoPreset:
    model: str
    formats: tuple[str, ...]
    train_limit: int
    steps: int
    batch_size: int
    learning_rate: float
    eval_limit: int
    model_overrides: tuple[str, ...]


# LoRA as in jobs/configs/smollm2_cpu.yaml (the CPU study's base).
SMOLLM2_LORA = (
    "model.lora=true",
    "model.lora_r=16",
    "model.lora_alpha=32",
    "model.lora_target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
    "optim.warmup_ratio=0.1",
)
# `full`: the two best formats of the CPU study (bench/RESULTS.md) with twice its step budget;
# about 8 minutes on an idle 2-core CPU, under 15. `tiny`: the same path in about a minute.
PRESETS = {
    "full": DemoPreset(
        "smollm2-135m", ("conv_term", "multi_term"), 1000, 24, 4, 2e-3, 50, SMOLLM2_LORA
    ),
    "tiny": DemoPreset(
        "tiny-llama", ("conv_term", "multi_triple"), 48, 6, 4, 2e-3, 20, ("model.lora=false",)
    ),
}


def _stage(n: int, title: str) -> float:
    print(f"\n=== [{n}/6] {title}", flush=True)
    return time.perf_counter()


def _done(start: float) -> None:
    print(f"    done in {time.perf_counter() - start:.1f} s", flush=True)


def run_demo(tiny: bool = False, home: str | Path = ".biogner", serve_port: int = 8000) -> int:
    from biogner.corpora.registry import SPLITS
    from biogner.data import ConvertConfig, convert, shard_is_current
    from biogner.evaluate.report import build_report
    from biogner.formats import FORMATS
    from biogner.runtime import init_ray
    from biogner.selection import explain, select_champion
    from biogner.sweep import SweepConfig, run_sweep, summary_table
    from biogner.tracking import TrackingConfig

    preset = PRESETS["tiny" if tiny else "full"]
    home = Path(home).resolve()
    experiment = "biogner-demo-tiny" if tiny else "biogner-demo"
    model_name = "biogner-tiny" if tiny else "biogner"  # serve_configs/local.yaml serves biogner
    tracking = TrackingConfig(
        tracking_uri=f"sqlite:///{home}/mlflow.db", artifact_root=str(home / "artifacts")
    )
    total = time.perf_counter()
    init_ray()

    t = _stage(1, "convert NCBI-disease into all ten formats (Ray Data)")
    converted = home / "converted"
    missing = [
        (fmt, split)
        for fmt in FORMATS
        for split in SPLITS
        if not shard_is_current(converted, CORPUS, split, fmt)
    ]
    if missing:
        summary = convert(ConvertConfig(corpora=[CORPUS], formats=["all"], out=str(converted)))
        print(f"    {summary.total_rows} rows -> {converted}")
    else:
        print(f"    reusing {converted} (all {len(FORMATS)} formats x {len(SPLITS)} splits)")
    _done(t)

    t = _stage(2, f"fine-tune {preset.model} in {' and '.join(preset.formats)} (Ray Train)")
    sweep = SweepConfig(
        experiment=experiment,
        base=None,
        overrides=[
            *preset.model_overrides,
            f"data.limit={preset.train_limit}",
            f"data.converted_dir={converted}",
            f"optim.max_steps={preset.steps}",
            f"optim.per_device_batch_size={preset.batch_size}",
            f"optim.learning_rate={preset.learning_rate}",
            f"optim.checkpoint_every_steps={preset.steps}",
            "scaling.num_workers=1",
            "scaling.cpus_per_worker=2",
            f"scaling.storage_path={home / 'ray_results'}",
            "deepspeed.zero_stage=0",
        ],
        models=[preset.model],
        formats=list(preset.formats),
        corpora=["NCBI-disease"],
        tracking=tracking,
    )
    sweep.evaluate.limit = preset.eval_limit
    outcomes = run_sweep(sweep)
    _done(t)

    t = _stage(3, "evaluation table (strict micro F1, NCBI-disease test)")
    print(summary_table(sweep, outcomes))
    failed = [o for o in outcomes if o.status == "FAILED"]
    if len(failed) == len(outcomes):
        print("all cells failed; see the errors above")
        return 1
    report = build_report(tracking, experiment, home / "report")
    print(report.markdown.read_text())
    _done(t)

    t = _stage(4, "select the champion (MLflow registry alias)")
    selection = select_champion(tracking, experiment, "test_f1", model_name=model_name)
    print(explain(selection))
    _done(t)

    t = _stage(5, "serve the champion (Ray Serve on 127.0.0.1) and send an abstract")
    from biogner.serve.demo import serve_and_query

    response = serve_and_query(
        f"models:/{model_name}@champion", tracking, serve_port, SAMPLE_ABSTRACT
    )
    entities = response["results"][0]["entities"]
    print(f"    abstract: {SAMPLE_ABSTRACT}")
    print(f"    {len(entities)} entities:")
    for e in entities:
        print(f"      [{e['start']:>4}, {e['end']:>4}) {e['label']:<10} {e['text']}")
    _done(t)

    _stage(6, "next steps")
    print(f"    MLflow UI:   mlflow ui --backend-store-uri {tracking.uri}")
    print(
        f"    serve:       biogner serve --config serve_configs/local.yaml "
        f"--model models:/{model_name}@champion --port {serve_port} "
        f"--set tracking.tracking_uri={tracking.uri} "
        f"--set tracking.artifact_root={tracking.artifact_root}"
    )
    print(
        f"    query:       curl -s http://127.0.0.1:{serve_port}/v1/extract -H "
        "'Content-Type: application/json' "
        '-d \'{"texts": ["BRCA1 mutations cause breast cancer ."]}\''
    )
    print(f"    report:      {report.markdown}")
    print(f"\ndemo finished in {time.perf_counter() - total:.0f} s")
    return 0
