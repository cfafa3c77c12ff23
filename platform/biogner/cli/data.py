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
    from biogner.corpora import CorpusProblemError, IOBError, get_corpus, load_split
    from biogner.evaluate.format_check import check_format
    from biogner.formats import resolve_formats

    try:
        corpus = get_corpus(args.corpus)
        formats = resolve_formats(args.format)
        splits = [args.split] if args.split else list(corpus.declared_splits)
        sentences = [
            s for split in splits for s in load_split(corpus, split, args.data_dir, args.limit)
        ]
    except (KeyError, FileNotFoundError, IOBError, CorpusProblemError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    types = list(corpus.types)
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


def _cmd_corpora_check(args: argparse.Namespace) -> int:
    import json

    from biogner.corpora import get_corpus
    from biogner.corpora.check import format_report, summary
    from biogner.corpora.load import read_corpus
    from biogner.corpora.problems import KINDS
    from biogner.formats import resolve_formats
    from biogner.formats.coverage import blocking_for

    unknown = [k for k in args.accept if k not in KINDS]
    if unknown:
        print(f"error: unknown problem kinds {unknown}; known: {', '.join(KINDS)}", file=sys.stderr)
        return 2
    try:
        formats = [f.name for f in resolve_formats(args.format)] if args.format else []
        read = read_corpus(get_corpus(args.corpus), args.data_dir)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    blocking, losses = blocking_for(read, args.accept, formats)
    if args.json:
        print(json.dumps(summary(read) | {"format_losses": losses}, indent=1, ensure_ascii=False))
    else:
        print(format_report(read, blocking, losses))
    return 1 if blocking else 0


def _cmd_corpora_register(args: argparse.Namespace) -> int:
    from biogner.corpora import register_card

    try:
        path = register_card(args.card)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    print(f"registered: {path}")
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
    p.add_argument("--corpus", required=True, help="a corpus name or a corpus card's path")
    p.add_argument("--split", choices=SPLITS, help="default: all splits")
    p.add_argument("--format", default="all", help="'all', a name or a comma-separated list")
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int, help="first N sentences per split")
    p.add_argument("--show", type=int, default=5, help="failures to print")
    p.set_defaults(func=_cmd_formats_check)

    cor = sub.add_parser("corpora", help="corpus registry").add_subparsers(
        dest="sub", required=True
    )
    p = cor.add_parser("list", help="built-in and registered corpora, and what is present")
    p.add_argument("--data-dir")
    p.add_argument("--verify", action="store_true", help="check SHA-256 of present files")
    p.set_defaults(func=_cmd_corpora_list)
    p = cor.add_parser(
        "check",
        help="counts per split and type, and every problem with its file and line; exit 1 "
        "when a problem would lose or change annotations",
    )
    p.add_argument("corpus", help="a corpus card's path, or a built-in or registered name")
    p.add_argument("--json", action="store_true", help="print the counts and problems as JSON")
    p.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="KIND",
        help="a problem kind that does not fail the check (repeatable), e.g. nested",
    )
    p.add_argument(
        "--format",
        help="the format(s) you will train in ('all', a name or a comma-separated list): nested "
        "or crossing mentions one of them cannot write fail the check, as training does",
    )
    p.add_argument("--data-dir")
    p.set_defaults(func=_cmd_corpora_check)
    p = cor.add_parser("register", help="name a card in this BIOGNER_HOME's registry")
    p.add_argument("card", help="the corpus card's path")
    p.set_defaults(func=_cmd_corpora_register)

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
    p.add_argument(
        "--corpus",
        default="NCBI-disease",
        help="names or corpus card paths, comma-separated, or 'all'",
    )
    p.add_argument("--format", default="all", help="name(s), comma-separated, or 'all'")
    p.add_argument("--split", help="comma-separated; default all splits")
    p.add_argument("--out", default=".biogner/converted")
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int)
    p.add_argument("--tokenizer", help="model spec to count tokens with (e.g. smollm2-135m)")
    p.set_defaults(func=_cmd_convert)
