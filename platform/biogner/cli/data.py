"""`biogner formats`, `corpora`, `data download`, `convert`: the data side of the command line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from biogner.corpora.registry import SPLITS


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

    try:  # names checked before Ray starts: a typo is one line, not a traceback
        cfg = ConvertConfig(
            corpora=args.corpus.split(","),
            formats=args.format.split(","),
            splits=args.split.split(",") if args.split else list(SPLITS),
            data_dir=args.data_dir,
            out=args.out,
            limit=args.limit,
            tokenizer=args.tokenizer,
        ).resolved()
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    init_ray()
    summary = convert(cfg)
    print(summary.table())
    return 0


def add_data_commands(sub: Any) -> None:
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
