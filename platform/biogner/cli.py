"""`biogner` command line: wires arguments to the library; no logic of its own."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from biogner.corpora.registry import SPLITS
from biogner.runtime import VERBOSE_ENV


def _cmd_formats_list(args: argparse.Namespace) -> int:
    from biogner.formats import FORMATS

    print(f"{'format':<14}{'turns':<7}{'writing':<9}{'kind':<7}nesting")
    for name, fmt in FORMATS.items():
        kind = "exact" if fmt.exact else "lossy"
        nest = "yes" if fmt.writing.nesting else "no"
        print(f"{name:<14}{fmt.turn:<7}{fmt.writing.name:<9}{kind:<7}{nest}")
    return 0


def _cmd_formats_check(args: argparse.Namespace) -> int:
    from biogner.corpora import IOBError, get_corpus, load_split
    from biogner.evaluate.format_check import check_format
    from biogner.formats import resolve_formats

    try:
        corpus = get_corpus(args.corpus)
        formats = resolve_formats(args.format)
        splits = [args.split] if args.split else list(SPLITS)
        sentences = [
            s for split in splits for s in load_split(corpus, split, args.data_dir, args.limit)
        ]
    except (KeyError, FileNotFoundError, IOBError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    types = list(corpus.entity_types)
    print(f"{corpus.name} ({', '.join(splits)}): {len(sentences)} sentences, types {types}")
    print(f"{'format':<14}{'kind':<7}{'exact':>8}{'ambig':>8}{'failed':>8}{'ceiling F1':>12}")
    failed_ids: set[str] = set()
    shown = 0
    for fmt in formats:
        res = check_format(fmt, sentences, types)
        kind = "exact" if fmt.exact else "lossy"
        print(
            f"{fmt.name:<14}{kind:<7}{res.exact_roundtrips:>8}{res.ambiguous:>8}"
            f"{len(res.failures):>8}{res.ceiling_f1:>12.4f}"
        )
        for sent, reason in res.failures:
            failed_ids.add(sent.id)
            if shown < args.show:
                shown += 1
                print(f"  FAIL {fmt.name} {sent.id}: {reason}\n    text: {sent.text}")
    ok = len(sentences) - len(failed_ids)
    print(f"round-trip: {ok}/{len(sentences)} sentences")
    return 0 if not failed_ids else 1


def _cmd_corpora_list(args: argparse.Namespace) -> int:
    from biogner.corpora import corpora_status, format_corpora_table, resolve_data_dir

    print(f"data dir: {resolve_data_dir(args.data_dir)}")
    print(format_corpora_table(corpora_status(args.data_dir, verify=args.verify)))
    return 0


def _cmd_data_download(args: argparse.Namespace) -> int:
    from biogner.corpora import CORPORA, DownloadError, download_corpus

    names = list(CORPORA) if args.corpus == "all" else [args.corpus]
    try:
        for name in names:
            for path in download_corpus(
                name,
                args.to,
                splits=args.split or SPLITS,
                base_url=args.mirror,
                allow_unverified=args.allow_unverified,
                timeout=args.timeout,
            ):
                print(path)
    except (DownloadError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from biogner.data import ConvertConfig, convert
    from biogner.runtime import init_ray

    cfg = ConvertConfig(
        corpora=args.corpus.split(","),
        formats=args.format.split(","),
        splits=args.split.split(",") if args.split else list(SPLITS),
        data_dir=args.data_dir,
        out=args.out,
        limit=args.limit,
        tokenizer=args.tokenizer,
    )
    init_ray()
    summary = convert(cfg)
    print(summary.table())
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from biogner.config import ConfigError, load_config
    from biogner.evaluate.runner import EvalConfig, run_evaluation

    overrides = [f"model={args.model}", f"corpus={args.corpus}", f"split={args.split}"]
    if args.format:
        overrides.append(f"format={args.format}")
    if args.limit:
        overrides.append(f"limit={args.limit}")
    if args.tracking_uri:
        overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    try:
        cfg = load_config(EvalConfig, None, [*overrides, *args.overrides])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run_evaluation(cfg)
    m = result.metrics
    p = cfg.metric_prefix
    subset = f" (first {cfg.limit}: a subset, not selectable)" if cfg.limit else ""
    subset += "" if cfg.generation.constrained else " (free decoding)"
    print(
        f"{cfg.model} on {cfg.corpus}/{cfg.split}{subset}, {int(m[p + 'sentences'])} sentences, "
        f"{int(m[p + 'gold_mentions'])} gold mentions: F1 {m[p + 'f1']:.4f} "
        f"[95% CI {m[p + 'f1_low']:.4f}-{m[p + 'f1_high']:.4f}]  P {m[p + 'precision']:.4f}"
        f"  R {m[p + 'recall']:.4f}  parse errors {m[p + 'parse_error_rate']:.3f}"
        f"  hallucinations {m[p + 'hallucination_rate']:.3f}"
        f"  tokens/entity {m[p + 'generated_tokens_per_entity']:.1f}"
        f"  sentences/s {m[p + 'sentences_per_s']:.2f}"
    )
    print(f"evaluation run {result.run_id} (parent {result.parent_run_id})")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    import json

    from biogner.config import ConfigError
    from biogner.sweep import load_sweep, outcomes_json, run_sweep, summary_table

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

    return run_demo(tiny=args.tiny, home=args.home, serve_port=args.port, data_dir=args.data_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biogner", description="Generative biomedical NER with lightweight LLMs on Ray."
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's, DeepSpeed's and the libraries' own logs and progress bars "
        "(default: they go to .biogner/logs/)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    fmt = sub.add_parser("formats", help="output formats").add_subparsers(dest="sub", required=True)
    p = fmt.add_parser("list", help="list the output formats")
    p.set_defaults(func=_cmd_formats_list)
    p = fmt.add_parser("check", help="round-trip every sentence through the formats")
    p.add_argument("--corpus", required=True)
    p.add_argument("--split", choices=SPLITS, help="default: all splits")
    p.add_argument("--format", default="all", help="'all', a name or a comma-separated list")
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int, help="first N sentences per split")
    p.add_argument("--show", type=int, default=5, help="failures to print")
    p.set_defaults(func=_cmd_formats_check)

    cor = sub.add_parser("corpora", help="corpus registry").add_subparsers(
        dest="sub", required=True
    )
    p = cor.add_parser("list", help="the registry and what is present in the data dir")
    p.add_argument("--data-dir")
    p.add_argument("--verify", action="store_true", help="check SHA-256 of present files")
    p.set_defaults(func=_cmd_corpora_list)

    dat = sub.add_parser("data", help="corpus files").add_subparsers(dest="sub", required=True)
    p = dat.add_parser("download", help="fetch a corpus with SHA-256 verification")
    p.add_argument("corpus", help="corpus name or 'all'")
    p.add_argument("--to", required=True, help="data directory to write into")
    p.add_argument("--split", action="append", choices=SPLITS)
    p.add_argument("--mirror", help="base URL of a mirror in the data-dir layout")
    p.add_argument("--allow-unverified", action="store_true")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=_cmd_data_download)

    p = sub.add_parser("convert", help="corpora x formats -> Parquet shards on Ray Data")
    p.add_argument("--corpus", default="NCBI-disease", help="name(s), comma-separated, or 'all'")
    p.add_argument("--format", default="all", help="name(s), comma-separated, or 'all'")
    p.add_argument("--split", help="comma-separated; default all splits")
    p.add_argument("--out", default=".biogner/converted")
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int)
    p.add_argument("--tokenizer", help="model spec to count tokens with (e.g. smollm2-135m)")
    p.set_defaults(func=_cmd_convert)

    from biogner.train import job as train_job

    p = sub.add_parser("train", help="fine-tune on Ray Train + DeepSpeed, tracked in MLflow")
    train_job.add_arguments(p)
    p.set_defaults(func=train_job.run)

    p = sub.add_parser("evaluate", help="batch generation + strict scoring of a model")
    p.add_argument("--model", required=True, help="runs:/ID/model, models:/NAME@ALIAS or a dir")
    p.add_argument("--corpus", default="NCBI-disease")
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

    p = sub.add_parser("demo", help="convert, train two formats, evaluate, select, serve")
    p.add_argument("--tiny", action="store_true", help="tiny-llama: the same path in ~a minute")
    p.add_argument("--home", default=".biogner", help="where the demo keeps its state")
    p.add_argument("--port", type=int, default=8000, help="HTTP port of the endpoint")
    p.add_argument(
        "--data-dir", help="corpora folder (default: $BIOGNER_DATA_DIR or the shared one)"
    )
    p.set_defaults(func=_cmd_demo)

    from biogner.evaluate.report import add_report_command
    from biogner.selection import add_select_command
    from biogner.serve.cli import add_serve_command

    add_select_command(sub)
    add_report_command(sub)
    add_serve_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:  # read by biogner.runtime, here and in every Ray worker
        os.environ[VERBOSE_ENV] = "1"
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
