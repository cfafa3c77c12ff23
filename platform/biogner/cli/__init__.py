"""`biogner` command line: all argument parsing lives in this package, one module per group
(`data`: formats, corpora, downloads, conversion; `runs`: train, evaluate, sweep, select, report,
demo; `serve`). Handlers wire arguments to the library and import their stage when they run;
`jobs/*.py` are thin `main([...])` wrappers for `ray job submit`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from biogner import __version__, console
from biogner.cli.data import add_data_commands
from biogner.cli.runs import add_run_commands
from biogner.cli.serve import add_serve_command
from biogner.runtime import VERBOSE_ENV, quiet_logs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biogner", description="Generative biomedical NER with lightweight LLMs on Ray."
    )
    parser.add_argument("--version", action="version", version=f"biogner {__version__}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's, DeepSpeed's and the libraries' own logs and progress bars "
        "(default: they go to .biogner/logs/)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    add_data_commands(sub)
    add_run_commands(sub)
    add_serve_command(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, whole_process: bool | None = None) -> int:
    """Run one command. `whole_process`: this call is the process's command (the `biogner`
    script, `python -m biogner.cli`, `jobs/*.py`; by default when `argv` is None), so Ray's
    C++ noise may be filtered out of its stderr (`biogner.console`); a caller that runs
    commands in its own process (tests, notebooks) keeps its stderr as it is."""
    args = build_parser().parse_args(argv)
    if args.verbose:  # read by biogner.runtime, here and in every Ray worker
        os.environ[VERBOSE_ENV] = "1"
    elif whole_process if whole_process is not None else argv is None:
        console.enable()
        # before any handler opens a store: a new SQLite store's migration lines (MLflow's
        # "Creating initial MLflow database tables...") go to the log file, like Ray's
        quiet_logs()
    return int(args.func(args))
