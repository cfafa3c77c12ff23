"""The docs stay true: generated pages and quoted figures are current, the site builds with
no broken link, every `biogner` command in them parses, and every citation of a README or
RESULTS section names a section that exists."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from biogner.cli import build_parser
from biogner.docs import (
    COPIED,
    FIGURE_BLOCKS,
    RESULTS,
    block_markers,
    config_reference,
    copied_page,
    figures,
    quoting,
    stale,
)

ROOT = Path(__file__).parents[1]


def test_generated_docs_are_current():
    """README's and the docs' quoted figures, the copied pages and the config reference."""
    assert stale(ROOT) == [], "generated docs are stale: run `python -m biogner.docs`"


@pytest.mark.parametrize(
    ("block", "unit"),
    [
        ("headline-figures", "F1"),
        ("yourcorpus-figures", "F1"),
        ("recipe-figures", "strict F1"),
        ("study-figures", "dev F1"),
        ("speed-figures", "sentences/s"),
        ("demo-figures", "test F1"),
        ("corpora-figures", "F1"),
        ("turns-figures", "P(conv better)"),
    ],
)
def test_every_figure_block_is_measured_in_the_results(block: str, unit: str):
    assert block in FIGURE_BLOCKS
    assert unit in figures(ROOT / RESULTS, block)


def test_every_figure_block_is_quoted_somewhere():
    """A block no page quotes is still shown on the results page; one that a page quotes
    without RESULTS.md holding it fails the currency check above."""
    quoted = {
        name
        for page in quoting(ROOT)
        for name in FIGURE_BLOCKS
        if block_markers(name)[0] in (ROOT / page).read_text()
    }
    assert "headline-figures" in quoted  # the README's one results table
    assert quoted <= set(FIGURE_BLOCKS)


def test_reference_lists_nested_training_keys():
    ref = config_reference()
    for key in ("`optim.learning_rate`", "`deepspeed.zero_stage`", "`model.lora_r`", "`base`"):
        assert key in ref


def test_copied_pages_link_into_the_site_or_name_the_file():
    page = copied_page(
        "See [install](docs/install.md#data), [results](bench/RESULTS.md), "
        "[the image](infra/docker/Dockerfile), [`jobs/train.py`](jobs/train.py) and "
        "[a site](https://example.org).",
        "docs/index.md",
    )
    assert "[install](install.md#data)" in page
    assert "[results](results.md)" in page  # a copied source links to its page
    assert "the image (`infra/docker/Dockerfile`)" in page  # outside the site: its path
    assert "`jobs/train.py`" in page and "](jobs/train.py)" not in page
    assert "[a site](https://example.org)" in page


def test_docs_site_builds_strict(tmp_path: Path):
    """A broken link, a missing anchor or a page left out of the nav fails the build."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "reference" / "config" / "index.html").exists()
    assert set(COPIED) <= {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")}


def docs_commands() -> list[tuple[str, str]]:
    """Every `biogner ...` command line of the README's and the docs' shell blocks
    (continuations joined), with the file it is in."""
    commands = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.split(r"\s(?:#|>|\||&&)", line, maxsplit=1)[0].strip()
                if line.startswith("biogner "):
                    commands.append((doc.name, line))
    return commands


def test_every_command_in_the_docs_parses_with_the_cli():
    """The docs' commands are the CLI's: each one parses (placeholders filled in)."""
    commands = docs_commands()
    assert len(commands) >= 30
    parser = build_parser()
    for doc, line in commands:
        filled = re.sub(r"<run[ _]id>", "0" * 32, line).replace("NAME", "demo")
        try:
            args = parser.parse_args(shlex.split(filled)[1:])
        except SystemExit as exc:  # argparse exits on an unknown command or option
            raise AssertionError(f"{doc}: command does not parse: {line}") from exc
        assert callable(args.func), line


def headings(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [h.strip() for h in re.findall(r"^#+ (.+)$", text, flags=re.M)]


# a section cited by its anchor or its heading in quotes: RESULTS.md and its archive, README,
# a docs page
_CITATION = re.compile(
    r"(bench/RESULTS\.md|bench/results/archive/[\w-]+\.md|README(?:\.md)?|docs/[\w/-]+\.md)"
    r"""(?:#([\w-]+)|,? "([^"]+)")"""
)
_CITING = ["platform", "jobs", "bench", "tests", "serve_configs", "infra", ".ci", "Makefile"]


def citations() -> list[tuple[str, str, str]]:
    """(file, cited file, section) for every citation of a section in code and configs."""
    found = []
    for top in _CITING:
        paths = [ROOT / top] if (ROOT / top).is_file() else (ROOT / top).rglob("*")
        for path in paths:
            if not path.is_file() or path.suffix in {".json", ".parquet", ".png", ".gz"}:
                continue
            if "archive" in path.parts or path == Path(__file__):
                continue  # the record cites sections as they were then
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            for cited, anchor, heading in _CITATION.findall(text):
                section = anchor or " ".join(heading.split())  # a heading may wrap a line
                found.append((str(path.relative_to(ROOT)), cited, section))
    return found


def test_citations_name_sections_that_exist():
    missing = []
    for where, cited, section in citations():
        path = ROOT / ("README.md" if cited == "README" else cited)
        names = headings(path) if path.exists() else []
        slugs = {slugify(h, "-") for h in names}
        if section not in slugs and not any(h.startswith(section) for h in names):
            missing.append(f"{where}: {cited} {section!r}")
    assert not missing, "citations of sections that do not exist:\n" + "\n".join(missing)
