"""The README's configuration reference is generated from the config models: keep it current."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from biogner.cli import build_parser
from biogner.docs import END, FIGURE_BLOCKS, START, block_markers, config_reference, figures

README = Path(__file__).parents[1] / "README.md"


def test_readme_config_reference_is_current():
    text = README.read_text()
    section = text.split(START, 1)[1].split(END, 1)[0]
    assert section.strip() == config_reference().strip(), (
        "README configuration reference is stale: run "
        'python -c "from biogner.docs import update_readme; from pathlib import Path; '
        "update_readme(Path('README.md'))\""
    )


@pytest.mark.parametrize(
    ("block", "unit"),
    [
        ("recipe-figures", "strict F1"),
        ("study-figures", "dev F1"),
        ("speed-figures", "sentences/s"),
        ("demo-figures", "test F1"),
        ("corpora-figures", "F1"),
        ("turns-figures", "P(conv better)"),
    ],
)
def test_readme_figures_are_those_of_the_results(block: str, unit: str):
    """The README quotes its figures from bench/RESULTS.md's marked sections only."""
    assert block in FIGURE_BLOCKS
    start, end = block_markers(block)
    text = README.read_text()
    section = text.split(start, 1)[1].split(end, 1)[0]
    quoted = figures(README.parent / "bench" / "RESULTS.md", block)
    assert unit in quoted
    assert section.strip() == quoted.strip(), (
        f"README {block} differ from bench/RESULTS.md: run "
        'python -c "from biogner.docs import update_readme; from pathlib import Path; '
        "update_readme(Path('README.md'))\""
    )


def test_reference_lists_nested_training_keys():
    ref = config_reference()
    for key in ("`optim.learning_rate`", "`deepspeed.zero_stage`", "`model.lora_r`", "`base`"):
        assert key in ref


def readme_commands() -> list[str]:
    """Every `biogner ...` command line of the README's shell blocks (continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("biogner "):
                commands.append(line)
    return commands


def test_every_readme_command_parses_with_the_cli():
    """The README's commands are the CLI's: each one parses (placeholders filled in)."""
    commands = readme_commands()
    assert len(commands) >= 10
    parser = build_parser()
    for line in commands:
        argv = shlex.split(line.replace("<run_id>", "0" * 32).replace("NAME", "demo"))[1:]
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse exits on an unknown command or option
            raise AssertionError(f"README command does not parse: {line}") from exc
        assert callable(args.func), line
