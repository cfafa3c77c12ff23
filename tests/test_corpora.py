"""IOB2 reader, span <-> tag conversion, registry and data-dir resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import corpora_dir

from biogner.corpora import (
    CORPORA,
    IOBError,
    ReadStats,
    get_corpus,
    load_split,
    read_iob2,
    registry,
    resolve_data_dir,
    spans_to_tags,
)
from biogner.corpora.iob import tags_to_spans
from biogner.types import Sentence, Span


def shared_corpus(name: str) -> Path:
    """The folder of a built-in corpus in the corpora folder (`corpora_dir`: skips, or fails
    where the corpora are required, when it is absent)."""
    return corpora_dir(name) / name


def raw_tags(path: Path) -> list[list[str]]:
    """Tags per sentence straight from the file (independent of the reader under test)."""
    sentences: list[list[str]] = []
    current: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
        elif not line.startswith("-DOCSTART-\t"):
            current.append(line.split("\t")[1].strip())
    if current:
        sentences.append(current)
    return sentences


def write(tmp_path: Path, content: str | bytes, name: str = "x.tsv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# --- real corpora ---------------------------------------------------------------------------


def test_ncbi_disease_sentence_counts() -> None:
    data = corpora_dir("NCBI-disease")
    counts = {s: len(load_split("NCBI-disease", s, data_dir=data)) for s in registry.SPLITS}
    assert counts == {"train": 5424, "dev": 923, "test": 940}


def test_load_split_ids_limit_and_missing_file(tmp_path: Path) -> None:
    data = corpora_dir("NCBI-disease")
    first = load_split("ncbi-disease", "dev", data_dir=data, limit=3)
    assert [s.id for s in first] == [f"NCBI-disease-dev-{i}" for i in range(3)]
    with pytest.raises(FileNotFoundError, match="biogner data download NCBI-disease"):
        load_split("NCBI-disease", "dev", data_dir=tmp_path)
    with pytest.raises(KeyError, match="validation"):
        load_split("NCBI-disease", "validation", data_dir=data)


def test_jnlpba_docstart_lines_are_skipped() -> None:
    data = corpora_dir("JNLPBA")
    stats = ReadStats()
    sentences = load_split("JNLPBA", "dev", data_dir=data, stats=stats)
    assert stats.docstarts == 200
    assert len(sentences) == stats.sentences == 1739
    assert not any("-DOCSTART-" in s.tokens for s in sentences)
    labels = {span.label for s in sentences for span in s.spans}
    assert labels == set(get_corpus("JNLPBA").entity_types)


@pytest.mark.parametrize("corpus", ["NCBI-disease", "BC5CDR"])
def test_spans_to_tags_inverts_the_reader_on_every_sentence(corpus: str) -> None:
    folder = shared_corpus(corpus)
    for split in registry.SPLITS:
        stats = ReadStats()
        sentences = list(read_iob2(folder / f"{split}.tsv", stats=stats))
        tags = raw_tags(folder / f"{split}.tsv")
        assert stats.repaired_tags == 0  # so the file's tags are the canonical ones
        assert len(sentences) == len(tags)
        for sent, gold in zip(sentences, tags, strict=True):
            assert spans_to_tags(sent) == gold, sent.id
            # and the other way round: tags -> spans -> tags -> spans is stable
            spans, repaired = tags_to_spans(list(sent.tokens), spans_to_tags(sent))
            assert (tuple(sorted(spans)), repaired) == (sent.spans, 0), sent.id


def test_entity_offsets_slice_text_to_the_joined_tokens() -> None:
    folder = shared_corpus("BC5CDR")
    path = folder / "dev.tsv"
    checked = 0
    for sent, tags in zip(read_iob2(path), raw_tags(path), strict=True):
        assert sent.text == " ".join(sent.tokens)
        groups: list[tuple[list[str], str]] = []
        for tok, tag in zip(sent.tokens, tags, strict=True):
            if tag.startswith("B-"):
                groups.append(([tok], tag[2:]))
            elif tag.startswith("I-"):
                groups[-1][0].append(tok)
        assert [(s.text_in(sent.text), s.label) for s in sent.spans] == [
            (" ".join(toks), label) for toks, label in groups
        ]
        checked += len(groups)
    assert checked == 9593


# --- reader on small files ------------------------------------------------------------------


def test_docstart_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "-DOCSTART-\tO\n\n\nIL-2\tB-DNA\ngene\tI-DNA\n\n-DOCSTART-\tO\nx\tO\n")
    stats = ReadStats()
    sents = list(read_iob2(path, stats=stats))
    assert [s.tokens for s in sents] == [("IL-2", "gene"), ("x",)]
    assert sents[0].spans == (Span(0, 9, "DNA"),)
    assert [s.id for s in sents] == ["x-0", "x-1"]
    assert (stats.docstarts, stats.sentences, stats.tokens, stats.entities) == (2, 2, 3, 1)


def test_crlf_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, "a\tB-X\r\nb\tI-X\r\n\r\nc\tO\r\n")
    sents = list(read_iob2(path))
    assert [s.tokens for s in sents] == [("a", "b"), ("c",)]
    assert sents[0].spans == (Span(0, 3, "X"),)


def test_i_after_o_starts_an_entity_and_is_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "the\tO\nlung\tI-Anatomy\ncells\tI-Anatomy\ngrow\tO\n")
    stats = ReadStats()
    (sent,) = read_iob2(path, stats=stats)
    assert sent.mentions() == [("lung cells", "Anatomy")]
    assert (stats.repaired_tags, stats.entities) == (1, 1)
    # repaired on the way in, canonical on the way out
    assert spans_to_tags(sent) == ["O", "B-Anatomy", "I-Anatomy", "O"]


def test_i_of_another_type_starts_a_new_entity(tmp_path: Path) -> None:
    path = write(tmp_path, "a\tB-X\nb\tI-Y\nc\tI-Y\nd\tB-Y\ne\tI-X\n")
    stats = ReadStats()
    (sent,) = read_iob2(path, stats=stats)
    assert sent.mentions() == [("a", "X"), ("b c", "Y"), ("d", "Y"), ("e", "X")]
    assert stats.repaired_tags == 2


def test_i_at_sentence_start_is_repaired(tmp_path: Path) -> None:
    stats = ReadStats()
    (sent,) = read_iob2(write(tmp_path, "a\tI-X\nb\tB-X\n"), stats=stats)
    assert sent.spans == (Span(0, 1, "X"), Span(2, 3, "X"))
    assert stats.repaired_tags == 1


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        ("a\tO\nb O\n", 2, "expected 'token<TAB>tag'"),
        ("a\tO\n\nb\tE-X\n", 3, "unknown tag 'E-X'"),
        ("a\tX\n", 1, "unknown tag 'X'"),
        ("a\tB-\n", 1, "unknown tag 'B-'"),
        ("a\tb-X\n", 1, "unknown tag 'b-X'"),
        ("a\tO\n\tO\n", 2, "empty or contains whitespace"),
        (b"a\tO\nb\xff\xfe\tO\n", 2, "not valid UTF-8"),
    ],
)
def test_malformed_files_name_file_and_line(
    tmp_path: Path, content: str | bytes, line: int, reason: str
) -> None:
    path = write(tmp_path, content, "bad.tsv")
    with pytest.raises(IOBError) as info:
        list(read_iob2(path))
    err = info.value
    assert (err.path, err.line) == (str(path), line)
    assert str(err).startswith(f"{path}:{line}: ")
    assert reason in str(err)


def test_spans_to_tags_drops_overlaps_and_unaligned_spans() -> None:
    sent = Sentence.from_tokens("s", ["acute", "lung", "injury", "today"])
    spans = [Span(0, 17, "Disease"), Span(6, 10, "Anatomy"), Span(18, 20, "X")]
    assert spans_to_tags(sent, spans) == ["B-Disease", "I-Disease", "I-Disease", "O"]
    assert spans_to_tags(sent, []) == ["O"] * 4


# --- registry and data dir ------------------------------------------------------------------


def test_registry_names_and_lookup() -> None:
    assert len(CORPORA) == 10
    assert get_corpus("bc5cdr-CHEM").name == "BC5CDR-chem"
    with pytest.raises(KeyError, match="known: AnatEM"):
        get_corpus("CoNLL")
    for corpus in CORPORA.values():
        for split in registry.SPLITS:
            digest = corpus.sha256(split)
            assert corpus.url(split).startswith("https://")
            assert digest is None or len(digest) == 64
    assert CORPORA["BC4CHEMD"].sha256("train") is None


def test_resolve_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(tmp_path / "from-env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "from-env"
    monkeypatch.setenv(registry.DATA_DIR_ENV, "~/corpora")
    assert resolve_data_dir() == Path.home() / "corpora"

    monkeypatch.delenv(registry.DATA_DIR_ENV)
    repo_shared = Path(registry.__file__).resolve().parents[3].parent / "shared/data/bioner"
    default = resolve_data_dir()
    if repo_shared.is_dir():
        assert default == repo_shared.resolve()
    else:
        assert default == Path(".biogner") / "data"
    # ../shared/data/bioner relative to the working directory comes before the repo's
    local = tmp_path / "shared" / "data" / "bioner"
    local.mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert resolve_data_dir() == local.resolve()
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
