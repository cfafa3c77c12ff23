"""`biogner formats list|check`: every corpus present round-trips through every format."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import corpora_dir

from biogner.cli import main
from biogner.corpora import CORPORA, load_split
from biogner.corpora.registry import SPLITS
from biogner.formats import FORMATS

# Small corpora are checked on all splits; the others on their test split, which keeps this
# file under a minute on 2 cores (all splits of all corpora take several minutes).
ALL_SPLITS = {"NCBI-disease", "s800"}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(argv)
    return code, capsys.readouterr().out.strip().splitlines()


def table_rows(lines: list[str]) -> dict[str, list[str]]:
    """format name -> [kind, exact, ambig, failed, ceiling F1] from the check table."""
    rows = [ln.split() for ln in lines]
    return {r[0]: r[1:] for r in rows if r and r[0] in FORMATS}


def test_formats_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run(["formats", "list"], capsys)
    assert code == 0
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[1:]}
    assert len(rows) == 10
    assert set(rows) == set(FORMATS)
    assert rows["conv_term"] == ["conv", "term", "lossy", "yes"]
    assert rows["multi_triple"] == ["multi", "triple", "exact", "yes"]
    assert rows["multi_bio"] == ["multi", "bio", "exact", "no"]


# two corpora in test-fast (one type; two types), every corpus in `make test` (slow)
FAST_CORPORA = {"NCBI-disease", "BC5CDR"}


@pytest.mark.parametrize(
    "corpus",
    [c if c in FAST_CORPORA else pytest.param(c, marks=pytest.mark.slow) for c in sorted(CORPORA)],
)
def test_formats_check_on_real_corpus(corpus: str, capsys: pytest.CaptureFixture[str]) -> None:
    splits = list(SPLITS) if corpus in ALL_SPLITS else ["test"]
    data = corpora_dir(corpus, splits=splits)  # BC4CHEMD: a skip (not in the shared corpora)
    expected = sum(len(load_split(corpus, s, data_dir=data)) for s in splits)
    argv = ["formats", "check", "--corpus", corpus, "--data-dir", str(data)]
    if corpus not in ALL_SPLITS:
        argv += ["--split", "test"]
    code, lines = run(argv, capsys)
    assert code == 0, "\n".join(lines)
    assert lines[-1] == f"round-trip: {expected}/{expected} sentences"
    rows = table_rows(lines)
    assert set(rows) == set(FORMATS)
    for name, (kind, exact, ambig, failed, ceiling) in rows.items():
        assert failed == "0", name
        assert int(exact) + int(ambig) == expected, name
        if kind == "exact":
            assert (exact, ambig, ceiling) == (str(expected), "0", "1.0000"), name
        else:
            assert 0.9 < float(ceiling) <= 1.0, name


NASTY_TSV = """\
The\tO
[\tB-Disease
]\tI-Disease
|\tO
\\\tB-Disease
{\tO
}\tB-Disease
"\tI-Disease
:\tO
(\tB-Disease
)\tI-Disease
B-Disease\tB-Disease
O\tO
None\tB-Disease

None\tB-Disease
of\tO
None\tO
\\None\tB-Disease
x(O)\tI-Disease
a|b\tO
a|b\tB-Disease

No\tO
entities\tO
.\tO
"""


def test_formats_check_on_a_custom_corpus_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "NCBI-disease"
    folder.mkdir()
    (folder / "train.tsv").write_text(NASTY_TSV, encoding="utf-8")
    argv = ["formats", "check", "--corpus", "ncbi-disease", "--split", "train"]
    code, lines = run([*argv, "--data-dir", str(tmp_path)], capsys)
    assert code == 0, "\n".join(lines)
    assert lines[0].startswith("NCBI-disease (train): 3 sentences")
    assert lines[-1] == "round-trip: 3/3 sentences"
    rows = table_rows(lines)
    assert set(rows) == set(FORMATS)
    for name, (kind, exact, ambig, failed, _) in rows.items():
        assert failed == "0", name
        # Sentence 2 tags only the second `a|b`: lossy formats can't say which, and count
        # it as their declared ambiguity.
        assert (exact, ambig) == (("3", "0") if kind == "exact" else ("2", "1")), name


def test_formats_check_selected_formats_and_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "BC5CDR"
    folder.mkdir()
    tsv = "aspirin\tB-Chemical\n[\tO\nbleeding\tB-Disease\n]\tI-Disease\n\n" * 4
    (folder / "dev.tsv").write_text(tsv, encoding="utf-8")
    argv = ["formats", "check", "--corpus", "BC5CDR", "--split", "dev", "--limit", "3"]
    code, lines = run(
        [*argv, "--format", "conv_term,multi_triple", "--data-dir", str(tmp_path)], capsys
    )
    assert code == 0, "\n".join(lines)
    assert "types ['Chemical', 'Disease']" in lines[0]
    assert set(table_rows(lines)) == {"conv_term", "multi_triple"}
    assert lines[-1] == "round-trip: 3/3 sentences"


def test_check_reports_missing_data(tmp_path, capsys):
    assert main(["formats", "check", "--corpus", "NCBI-disease", "--data-dir", str(tmp_path)]) == 2
    assert "train.tsv not found" in capsys.readouterr().err


def test_check_reports_unknown_format(capsys):
    assert main(["formats", "check", "--corpus", "NCBI-disease", "--format", "conv_xml"]) == 2
    assert "unknown format 'conv_xml'" in capsys.readouterr().err
