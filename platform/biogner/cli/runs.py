"""`biogner train`, `evaluate`, `sweep`, `select`, `report`, `demo`: training, scoring and the
study on the command line. Each handler imports its stage when it runs, so `biogner --help`
stays fast."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from biogner.config import ConfigError, load_config, to_yaml
from biogner.corpora.registry import SPLITS
from biogner.evaluate.config import EvalConfig
from biogner.extract.config import INPUT_FORMATS, OUTPUT_FORMATS
from biogner.study.config import (
    DEFAULT_ALIAS,
    DEFAULT_METRIC,
    DEFAULT_MODEL_NAME,
    REPORT_METRIC,
    load_sweep,
)
from biogner.tracking.config import TrackingConfig
from biogner.train.config import TrainConfig


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file (jobs/configs/*.yaml); defaults otherwise")
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. optim.max_steps=20")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config")


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
    except (ConfigError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_yaml(cfg))
        return 0
    from biogner.corpora import CorpusProblemError
    from biogner.train.driver import run_training
    from biogner.train.rerun import RerunConflict

    try:
        outcome = run_training(cfg)
    except (RerunConflict, CorpusProblemError) as exc:  # a clear refusal, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"run {outcome.run_id}: {outcome.status} after {outcome.steps} steps; "
        f"final loss {outcome.metrics.get('loss', float('nan')):.4f}"
    )
    print(f"tracking: {cfg.tracking.uri}  (mlflow ui --backend-store-uri {cfg.tracking.uri})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from biogner.corpora import get_corpus
    from biogner.evaluate.runner import run_evaluations

    corpora = [c.strip() for c in args.corpus.split(",") if c.strip()]
    overrides = [f"model={args.model}", f"split={args.split}"]
    if corpora and corpora != ["all"]:
        overrides.append(f"corpus={corpora[0]}")
    if args.format:
        overrides.append(f"format={args.format}")
    if args.limit is not None:  # validated: `--limit 0` is an error, not "no limit"
        overrides.append(f"limit={args.limit}")
    if args.tracking_uri:
        overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    try:
        cfg = load_config(EvalConfig, None, [*overrides, *args.overrides])
        if not corpora:
            raise ConfigError("--corpus: name a corpus, several (A,B) or `all`")
        for name in corpora if corpora != ["all"] else []:  # before Ray starts
            try:
                get_corpus(name)
            except KeyError as exc:
                raise ConfigError(f"--corpus: {exc.args[0]}") from None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        results = run_evaluations(cfg, corpora)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    p = cfg.metric_prefix
    subset = f" (first {cfg.limit}: a subset, not selectable)" if cfg.limit else ""
    subset += "" if cfg.generation.constrained else " (free decoding)"
    for result in results:
        m = result.metrics
        print(
            f"{cfg.model} on {result.corpus}/{cfg.split}{subset}, "
            f"{int(m[p + 'sentences'])} sentences, {int(m[p + 'gold_mentions'])} gold mentions: "
            f"F1 {m[p + 'f1']:.4f} [95% CI {m[p + 'f1_low']:.4f}-{m[p + 'f1_high']:.4f}]"
            f"  P {m[p + 'precision']:.4f}  R {m[p + 'recall']:.4f}"
            f"  parse errors {m[p + 'parse_error_rate']:.3f}"
            f"  hallucinations {m[p + 'hallucination_rate']:.3f}"
            f"  tokens/entity {m[p + 'generated_tokens_per_entity']:.1f}"
            f"  sentences/s {m[p + 'sentences_per_s']:.2f}"
        )
        labels = sorted(result.scores.per_label)
        for label in labels if len(labels) > 1 else []:
            print(
                f"  {label}: F1 {m[f'{p}f1_{label}']:.4f} [95% CI {m[f'{p}f1_low_{label}']:.4f}"
                f"-{m[f'{p}f1_high_{label}']:.4f}], "
                f"{int(m[f'{p}gold_mentions_{label}'])} gold mentions"
            )
        print(f"evaluation run {result.run_id} (parent {result.parent_run_id})")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from biogner.extract.config import ExtractConfig
    from biogner.extract.job import run_extract

    overrides = [
        f"model={args.model}",
        f"inputs=[{','.join(_yaml_str(p) for p in args.input)}]",
        f"output={_yaml_str(args.output)}",
        f"input_format={args.input_format}",
        f"output_format={args.output_format}",
    ]
    if args.tracking_uri:
        overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    try:
        cfg = load_config(ExtractConfig, None, [*overrides, *args.overrides])
        summary = run_extract(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    rate = summary.sentences / summary.seconds if summary.seconds else 0.0
    print(
        f"{summary.documents} documents ({summary.bad_documents} bad: errors.jsonl), "
        f"{summary.blocks} blocks: {summary.blocks_written} written, "
        f"{summary.blocks_done_before} done before; {summary.sentences} sentences, "
        f"{summary.entities} entities, {rate:.1f} sentences/s -> {summary.output} "
        f"(MLflow run {summary.run_id})"
    )
    return 0 if summary.complete else 3


def _yaml_str(value: str) -> str:
    """A path as a YAML string in a key=value override (quotes, so `:` or `#` stay text)."""
    return json.dumps(value)


def _cmd_sweep(args: argparse.Namespace) -> int:

    from biogner.study.sweep import outcomes_json, run_sweep, summary_table

    try:
        cfg = load_sweep(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    outcomes = run_sweep(cfg)
    print(summary_table(cfg, outcomes))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(outcomes_json(outcomes), fh, indent=2)
    failed = [o for o in outcomes if o.status == "FAILED"]
    for o in failed:
        print(f"FAILED {o.cell.run_name(cfg.experiment)}: {o.error}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from biogner.demo import run_demo

    return run_demo(
        tiny=args.tiny,
        home=args.home,
        serve_port=args.port,
        data_dir=args.data_dir,
        mirror=args.mirror,
        budget_minutes=args.budget_minutes,
    )


def add_tracking_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or .biogner/mlflow.db)"
    )


def _corpus_name(ref: str | None) -> str | None:
    """A `--corpus` that filters runs: a card's path stands for its name (runs are tagged
    with names); any other value is a name, known here or not (runs may be from elsewhere)."""
    from biogner.corpora.card import looks_like_card_path
    from biogner.corpora.registry import get_corpus

    if ref is None or not looks_like_card_path(ref):
        return ref
    try:
        return get_corpus(ref).name
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None


def _cmd_select(args: argparse.Namespace) -> int:
    from biogner.study.select import explain, select_champion

    cfg = TrackingConfig(tracking_uri=args.tracking_uri, experiment=args.experiment)
    try:
        selection = select_champion(
            cfg,
            args.experiment,
            args.metric,
            _corpus_name(args.corpus),
            args.model_name,
            args.alias,
            dry_run=args.dry_run,
        )
    except (ValueError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(explain(selection))
    return 0


def add_select_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`biogner select`: rank a study's runs and move the champion alias to the best."""
    p = subparsers.add_parser(
        "select", help="rank finished training runs by a metric; register the champion"
    )
    p.add_argument("--experiment", required=True, help="MLflow experiment of the study")
    p.add_argument("--metric", default=DEFAULT_METRIC)
    p.add_argument("--corpus", help="only runs trained on this corpus, scored on it")
    p.add_argument(
        "--model-name",
        default=DEFAULT_MODEL_NAME,
        help="registered model (default: %(default)s, the name serve_configs/*.yaml load)",
    )
    p.add_argument("--alias", default=DEFAULT_ALIAS)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="rank and compare exactly as select does (a tie goes to the cheaper format), "
        "register nothing",
    )
    add_tracking_argument(p)
    p.set_defaults(func=_cmd_select)
    return p


def _cmd_report(args: argparse.Namespace) -> int:
    from biogner.study.anchors import load_anchors
    from biogner.study.report import ARTIFACT_DIR, build_report

    cfg = TrackingConfig(tracking_uri=args.tracking_uri, experiment=args.experiment)
    try:
        anchors = load_anchors(args.anchors) if args.anchors else None
        paths = build_report(
            cfg,
            args.experiment,
            Path(args.out),
            args.metric,
            args.data_dir,
            log_run=not args.no_log,
            anchors=anchors,
            corpora=args.corpus,
        )
    except (KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(paths.markdown.read_text())
    for path in paths.files:
        print(f"wrote {path}")
    if paths.run_id:
        print(f"logged to MLflow run {paths.run_id} (artifacts under {ARTIFACT_DIR}/)")
    return 0


def add_report_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`biogner report`: heatmaps, cost scatters and the Markdown table of a study."""
    p = subparsers.add_parser("report", help="F1 heatmaps, cost plots and the study table")
    p.add_argument("--experiment", required=True, help="MLflow experiment of the study")
    p.add_argument("--out", required=True, help="directory for report.md and the PNGs")
    p.add_argument("--metric", default=REPORT_METRIC)
    p.add_argument("--data-dir", help="corpora, for the ceiling F1 (default: usual data dir)")
    p.add_argument("--no-log", action="store_true", help="do not log a report run to MLflow")
    p.add_argument(
        "--corpus",
        action="append",
        default=[],
        help="a corpus card of the study (repeatable): its ceiling F1 is read from the card's "
        "files (built-in and registered corpora are found by name)",
    )
    p.add_argument(
        "--anchors",
        help="published F1 to show beside each corpus (YAML; jobs/anchors/published.yaml)",
    )
    add_tracking_argument(p)
    p.set_defaults(func=_cmd_report)
    return p


def add_run_commands(sub: Any) -> None:
    p = sub.add_parser("train", help="fine-tune on Ray Train + DeepSpeed, tracked in MLflow")
    add_train_arguments(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="batch generation + strict scoring of a model")
    p.add_argument("--model", required=True, help="runs:/ID/model, models:/NAME@ALIAS or a dir")
    p.add_argument(
        "--corpus",
        default="NCBI-disease",
        help="a corpus, several (AnatEM,BC5CDR), or `all`: those the model was trained on",
    )
    p.add_argument("--format", help="default: the model's training format")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--limit", type=int, help="first N sentences (a quick look)")
    p.add_argument("--tracking-uri")
    p.add_argument("overrides", nargs="*", help="EvalConfig key=value overrides")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("sweep", help="models x formats x corpora: train + evaluate each cell")
    p.add_argument("--config", required=True, help="jobs/configs/study_*.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value")
    p.add_argument("--json", help="write the outcomes as JSON here")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("extract", help="entities of documents (JSONL, text, PubTator, BioC)")
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, runs:/ID/model or a dir")
    p.add_argument("--input", required=True, nargs="+", help="files or folders of documents")
    p.add_argument("--output", required=True, help="folder: output blocks, manifest, errors")
    p.add_argument(
        "--input-format",
        default="auto",
        choices=INPUT_FORMATS,
    )
    p.add_argument(
        "--output-format",
        default="jsonl",
        choices=OUTPUT_FORMATS,
    )
    p.add_argument("--tracking-uri")
    p.add_argument("overrides", nargs="*", help="ExtractConfig key=value overrides")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("demo", help="convert, train two formats, evaluate, select, serve")
    p.add_argument("--tiny", action="store_true", help="tiny-llama: the same path in ~a minute")
    p.add_argument("--home", default=".biogner", help="where the demo keeps its state")
    p.add_argument("--port", type=int, default=8000, help="HTTP port of the endpoint")
    p.add_argument(
        "--data-dir", help="corpora folder (default: $BIOGNER_DATA_DIR or the shared one)"
    )
    p.add_argument(
        "--mirror",
        help="fetch NCBI-disease from this mirror when the data folder lacks it "
        "(default: $BIOGNER_DATA_MIRROR, else the canonical source)",
    )
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=20.0,
        help="fit the demo to this many minutes on this machine: it times a training step and "
        "generation first, then trains fewer steps or one writing if the full demo would not "
        "fit; 0: the full demo whatever it takes (default: 20)",
    )
    p.set_defaults(func=_cmd_demo)

    add_select_command(sub)
    add_report_command(sub)
