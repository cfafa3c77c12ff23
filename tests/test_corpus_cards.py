"""Corpus cards and the readers: one corpus written as brat, PubTator, JSONL (Prodigy and
doccano), BioC XML and BioC JSON reads to the same sentences and mentions; running text is cut
by the serving splitter without losing a mention; `corpora check` reports each defect at its
file and line and exits non-zero when annotations would be lost or changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus_support import write_bioc, write_jsonl

from biogner.annotate.text import iter_windows
from biogner.cli import main
from biogner.corpora import CorpusProblemError, get_corpus, load_split, read_corpus
from biogner.corpora.export import ExportDocument, write_brat, write_pubtator

# Titles without a final period, a mention inside a word (IL2 in IL2R), a mention over what
# the splitter takes for a sentence break (`Staph. Aureus infection`: joined), Unicode (é,
# Greek, CJK), a type repeated across documents.
DOCS_BY_SPLIT = {
    "train": [
        (
            "d1",
            "Cisplatin-induced nephrotoxicity in rats",
            "Cisplatin caused renal failure. IL2R levels rose after IL2 therapy.",
        ),
        (
            "d2",
            "Naproxen and gastric ulcer",
            "Gastric ulcer was seen with naproxen in 12 of 40 patients. No hepatitis was found.",
        ),
        (
            "d3",
            "Café-au-lait spots",
            "Café-au-lait spots and β-thalassemia were noted. アスピリン was given.",
        ),
    ],
    "dev": [
        ("d4", "Lithium toxicity", "Lithium caused tremor. Staph. Aureus infection was excluded."),
    ],
    "test": [
        (
            "d5",
            "Heparin and thrombocytopenia",
            "Heparin-induced thrombocytopenia (HIT) was diagnosed. Warfarin was started.",
        ),
    ],
}
MENTIONS = {  # (surface, type) in order of first occurrence; each found at its nth occurrence
    "d1": [
        ("Cisplatin", "Chemical", 0),
        ("nephrotoxicity", "Disease", 0),
        ("Cisplatin", "Chemical", 1),
        ("renal failure", "Disease", 0),
        ("IL2", "Chemical", 0),
        ("IL2", "Chemical", 1),
    ],
    "d2": [
        ("Naproxen", "Chemical", 0),
        ("gastric ulcer", "Disease", 0),
        ("Gastric ulcer", "Disease", 0),
        ("naproxen", "Chemical", 0),
        ("hepatitis", "Disease", 0),
    ],
    "d3": [
        ("Café-au-lait spots", "Disease", 0),
        ("Café-au-lait spots", "Disease", 1),
        ("β-thalassemia", "Disease", 0),
        ("アスピリン", "Chemical", 0),
    ],
    "d4": [
        ("Lithium", "Chemical", 0),
        ("Lithium", "Chemical", 1),
        ("tremor", "Disease", 0),
        ("Staph. Aureus infection", "Disease", 0),
    ],
    "d5": [
        ("Heparin", "Chemical", 0),
        ("thrombocytopenia", "Disease", 0),
        ("Heparin", "Chemical", 1),
        ("thrombocytopenia", "Disease", 1),
        ("HIT", "Disease", 0),
        ("Warfarin", "Chemical", 0),
    ],
}


def _nth(text: str, surface: str, n: int) -> int:
    pos = -1
    for _ in range(n + 1):
        pos = text.index(surface, pos + 1)
    return pos


def served_breaks(text: str) -> int:
    return len(list(iter_windows(text, 10**6, 10**6)))


def export_docs(split: str) -> list[ExportDocument]:
    docs = []
    for doc_id, title, body in DOCS_BY_SPLIT[split]:
        text = f"{title} {body}"
        mentions = []
        for surface, label, n in MENTIONS[doc_id]:
            start = _nth(text, surface, n)
            mentions.append((start, start + len(surface), label))
        docs.append(ExportDocument(doc_id, title, body, tuple(mentions)))
    return docs


def write_corpus(root: Path, fmt: str) -> Path:
    """The corpus in one format, with its card; returns the card's path."""
    folder = root / fmt
    writers = {
        "brat": lambda docs, split: write_brat(docs, folder / split),
        "pubtator": lambda docs, split: write_pubtator(docs, folder / f"{split}.pubtator"),
        "jsonl": lambda docs, split: write_jsonl(docs, folder / f"{split}.jsonl"),
        "doccano": lambda docs, split: write_jsonl(docs, folder / f"{split}.jsonl", "doccano"),
        "bioc-xml": lambda docs, split: write_bioc(docs, folder / f"{split}.xml", False),
        "bioc-json": lambda docs, split: write_bioc(docs, folder / f"{split}.json", True),
    }
    paths = {}
    for split in DOCS_BY_SPLIT:
        written = writers[fmt](export_docs(split), split)
        paths[split] = written.relative_to(folder).as_posix()
    card_format = "jsonl" if fmt == "doccano" else fmt
    card = folder / "card.yaml"
    card.write_text(
        f"name: example-{fmt}\nformat: {card_format}\n"
        + "".join(f"{split}: {path}\n" for split, path in paths.items())
        + "description: a test corpus\nlicense: CC0\n",
        encoding="utf-8",
    )
    return card


FORMATS = ["brat", "pubtator", "jsonl", "doccano", "bioc-xml", "bioc-json"]


def _view(read) -> dict:
    return {
        split: [(s.id.rsplit("-", 2)[-2:], s.text, s.tokens, s.spans) for s in r.sentences]
        for split, r in read.splits.items()
    }


def test_one_corpus_in_six_exports_reads_to_the_same_sentences_and_mentions(
    tmp_path: Path,
) -> None:
    reads = {fmt: read_corpus(get_corpus(str(write_corpus(tmp_path, fmt)))) for fmt in FORMATS}
    first = _view(reads["brat"])
    for fmt, read in reads.items():
        assert _view(read) == first, fmt
        assert read.types == ("Chemical", "Disease"), fmt
        kinds = {p.kind for p in read.problems.items}
        assert kinds == {"inside_word", "crosses_sentence"}, (fmt, read.problems.items)
    mentions = sum(len(s.spans) for r in reads["brat"].splits.values() for s in r.sentences)
    assert mentions == sum(len(m) for m in MENTIONS.values())  # not one lost


def test_running_text_sentences_are_the_serving_splitter_s_with_mentions_kept(
    tmp_path: Path,
) -> None:
    read = read_corpus(get_corpus(str(write_corpus(tmp_path, "brat"))))
    train = read.splits["train"].sentences
    texts = [s.text for s in train]
    # d2 (nothing inside a word, no mention over a break): exactly the served windows
    title, body = DOCS_BY_SPLIT["train"][1][1:]
    served = [w.sentence.text for w in iter_windows(f"{title} {body}", 10**6, 10**6)]
    assert len(served) == 2
    k = texts.index(served[0])
    assert texts[k : k + 2] == served
    # IL2 inside IL2R: the word is split, the mention kept
    il2 = next(s for s in train if "IL2" in s.text)
    assert ("IL2", "Chemical") in il2.mentions() and "IL2 R" in il2.text
    # `Staph. Aureus infection`: the splitter's break after `Staph.` is joined over it
    dev = read.splits["dev"].sentences
    assert any(("Staph . Aureus infection", "Disease") in s.mentions() for s in dev)
    assert served_breaks("Staph. Aureus infection was excluded.") == 2
    for s in train + dev:
        for span in s.spans:
            assert s.text[span.start : span.end].strip() == s.text[span.start : span.end]


def test_check_json_prints_identical_counts_for_each_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = []
    for fmt in FORMATS:
        card = write_corpus(tmp_path, fmt)
        assert main(["corpora", "check", str(card), "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        outputs.append(data["splits"])
    assert all(o == outputs[0] for o in outputs)
    assert outputs[0]["train"] == {
        "documents": 3,
        "sentences": outputs[0]["train"]["sentences"],
        "mentions": {"Chemical": 7, "Disease": 8},
    }
    assert outputs[0]["dev"]["documents"] == 1 and outputs[0]["test"]["documents"] == 1


def test_crlf_bom_tabs_and_unicode_keep_offsets_exact(tmp_path: Path) -> None:
    folder = tmp_path / "brat"
    folder.mkdir()
    text = "\ufeffAspirin\tand  naïve\r\nβ-blockers:\r\n\r\nWarfarin 中文 bleeding."
    body = text[1:]  # the tool counted offsets after the byte-order mark
    mentions = [
        ("Aspirin", "Chemical"),
        ("β-blockers", "Chemical"),
        ("Warfarin", "Chemical"),
        ("bleeding", "Disease"),
    ]
    (folder / "a.txt").write_bytes(text.encode("utf-8"))
    lines = []
    for n, (surface, label) in enumerate(mentions, start=1):
        start = body.index(surface)
        lines.append(f"T{n}\t{label} {start} {start + len(surface)}\t{surface}")
    (folder / "a.ann").write_text("\n".join(lines) + "\n", encoding="utf-8")
    card = tmp_path / "card.yaml"
    card.write_text("name: crlf\nformat: brat\ntrain: brat\n")
    read = read_corpus(get_corpus(str(card)))
    assert read.problems.items == []
    sentences = read.splits["train"].sentences
    assert [s.text for s in sentences] == [
        "Aspirin and naïve β - blockers :",
        "Warfarin 中文 bleeding .",
    ]
    got = [m for s in sentences for m in s.mentions()]
    assert got == [
        ("Aspirin", "Chemical"),
        ("β - blockers", "Chemical"),
        ("Warfarin", "Chemical"),
        ("bleeding", "Disease"),
    ]


def test_one_folder_divided_by_seeded_document_fractions(tmp_path: Path) -> None:
    docs = [
        ExportDocument(
            f"doc{i:02d}",
            f"Title {i}",
            f"Aspirin number {i} was given.",
            ((len(f"Title {i}") + 1, len(f"Title {i}") + 8, "Drug"),),
        )
        for i in range(20)
    ]
    write_jsonl(docs, tmp_path / "all.jsonl")
    card = tmp_path / "card.yaml"
    card.write_text(
        "name: divided\nformat: jsonl\ntrain: all.jsonl\n"
        "split: {train: 0.6, dev: 0.2, test: 0.2, seed: 7}\n"
    )
    read = read_corpus(get_corpus(str(card)))
    ids = {split: {d.id for d in r.documents} for split, r in read.splits.items()}
    assert [len(ids[s]) for s in ("train", "dev", "test")] == [12, 4, 4]
    assert set().union(*ids.values()) == {d.id for d in docs}
    again = read_corpus(get_corpus(str(card)))
    assert {s: {d.id for d in r.documents} for s, r in again.splits.items()} == ids
    assert [s.id for s in load_split(str(card), "dev")] == [f"divided-dev-{i}" for i in range(4)]


def test_conll_with_spaces_comments_docstart_and_bioes(tmp_path: Path) -> None:
    (tmp_path / "train.conll").write_text(
        "-DOCSTART- -X- O O\n\n# text = IL-2 gene expression\n"
        "IL-2 NN S-protein\ngene NN O\nexpression NN O\n\n"
        "T NN B-cell_type\ncells NN E-cell_type\n# a comment\n#\tO\n\n"
    )
    card = tmp_path / "card.yaml"
    card.write_text("name: conll-test\nformat: conll\ntrain: train.conll\n")
    read = read_corpus(get_corpus(str(card)))
    sentences = read.splits["train"].sentences
    assert [s.mentions() for s in sentences] == [
        [("IL-2", "protein")],
        [("T cells", "cell_type")],
    ]
    assert sentences[1].tokens == ("T", "cells", "#")
    assert read.types == ("cell_type", "protein")


# -- problems: each kind at its file and line, the exit code ---------------------------
def _brat_card(tmp_path: Path, text: str, ann: str, extra: str = "") -> Path:
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    (folder / "x.txt").write_text(text, encoding="utf-8")
    (folder / "x.ann").write_text(ann, encoding="utf-8")
    card = tmp_path / "card.yaml"
    card.write_text(f"name: defects\nformat: brat\ntrain: docs\n{extra}")
    return card


TEXT = "Aspirin caused gastric bleeding in the patient."


@pytest.mark.parametrize(
    ("ann", "extra", "kind", "line", "blocks"),
    [
        ("T1\tDrug 0 7\tAspirin\nT2\tDrug 40 99\tpatient\n", "", "offset_out_of_range", 2, True),
        (
            "T1\tDrug 0 7\tAspirin\nT2\tDisease 15 31\tgastric bleding\n",
            "",
            "text_mismatch",
            2,
            True,
        ),
        (
            "T1\tDisease 15 31\tgastric bleeding\nT2\tDisease 23 31\tbleeding\n",
            "",
            "nested",
            2,
            False,  # blocks only where a format cannot write it (next test)
        ),
        (
            "T1\tDisease 8 22\tcaused gastric\nT2\tDisease 15 31\tgastric bleeding\n",
            "",
            "overlap",
            2,
            False,  # blocks only where a format cannot write it (next test)
        ),
        ("T1\tDrug 0 7\tAspirin\nT2\tDisease 15 22;23 31\tgastric bleeding\n", "", None, 0, False),
        (
            "T1\tDrug 0 7\tAspirin\nT2\tDisease 0 7;15 22\tAspirin gastric\n",
            "",
            "discontinuous",
            2,
            True,
        ),
        (
            "T1\tDrug 0 7\tAspirin\nT2\tSymptom 23 31\tbleeding\n",
            "entity_types: [Drug]\n",
            "undeclared_type",
            2,
            True,
        ),
        ("T1\tDrug 0 7\tAspirin\nT2\tDrug 0 7\tAspirin\n", "", "duplicate_mention", 2, False),
        ("T1\tDrug 0 4\tAspi\n", "", "inside_word", 1, False),
        ("T1\tDrug 0 8\tAspirin \n", "", "whitespace_edge", 1, False),
        (
            "T1\tDrug 0 7\tAspirin\nR1\tCause Arg1:T1 Arg2:T1\nA1\tNeg T1\n#1\tNote T1\tx\n",
            "",
            "not_entity",
            2,
            False,
        ),
        ("T1\tDrug zero 7\tAspirin\n", "", "unreadable", 1, True),
    ],
)
def test_each_problem_is_reported_at_its_file_and_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    ann: str,
    extra: str,
    kind: str | None,
    line: int,
    blocks: bool,
) -> None:
    card = _brat_card(tmp_path, TEXT, ann, extra)
    code = main(["corpora", "check", str(card), "--json"])
    problems = json.loads(capsys.readouterr().out)["problems"]
    if kind is None:  # brat's line-break fragments over spaces are one mention
        assert problems == [] and code == 0
        return
    found = [p for p in problems if p["kind"] == kind]
    assert found, problems
    assert found[0]["file"] == str(tmp_path / "docs" / "x.ann")
    assert found[0]["line"] == line
    assert code == (1 if blocks else 0)
    if blocks:  # accepted by name, the check passes; training refuses it otherwise
        assert main(["corpora", "check", str(card), "--accept", kind]) == 0
        capsys.readouterr()
        with pytest.raises(CorpusProblemError, match=kind):
            load_split(str(card), "train")


def test_document_problems_across_splits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = ExportDocument("a", "", "Aspirin helps.", ((0, 7, "Drug"),))
    b = ExportDocument("b", "", "Heparin helps.", ((0, 7, "Drug"),))
    empty = ExportDocument("e", "", "   ")
    write_jsonl([a, b, empty, b], tmp_path / "train.jsonl")
    write_jsonl([ExportDocument("c", "", a.body, a.mentions)], tmp_path / "test.jsonl")
    card = tmp_path / "card.yaml"
    card.write_text("name: leaky\nformat: jsonl\ntrain: train.jsonl\ntest: test.jsonl\n")
    assert main(["corpora", "check", str(card), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    where = {(p["kind"], Path(p["file"]).name, p["line"]) for p in problems}
    assert ("empty_document", "train.jsonl", 3) in where
    assert ("duplicate_document", "train.jsonl", 4) in where
    assert ("document_in_two_splits", "test.jsonl", 1) in where


def test_a_card_is_validated_with_its_file_and_field(tmp_path: Path) -> None:
    card = tmp_path / "bad.yaml"
    card.write_text("name: bad\nformat: brat-ish\ntrain: x\n")
    with pytest.raises(KeyError, match=r"bad.yaml: format"):
        get_corpus(str(card))
    card.write_text("name: NCBI-disease\nformat: brat\ntrain: x\n")
    with pytest.raises(KeyError, match="built-in corpus"):
        get_corpus(str(card))
    card.write_text(
        "name: two\nformat: brat\ntrain: x\ndev: y\nsplit: {train: 1, dev: 0, test: 0}\n"
    )
    with pytest.raises(KeyError, match="divides one file"):
        get_corpus(str(card))
    with pytest.raises(KeyError, match="not found"):
        get_corpus(str(tmp_path / "missing.yaml"))


def test_registered_cards_are_listed_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BIOGNER_HOME", str(tmp_path / "home"))
    card = write_corpus(tmp_path, "pubtator")
    assert main(["corpora", "register", str(card)]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path / "home")  # the registered copy still finds the files
    assert get_corpus("example-pubtator").types == ("Chemical", "Disease")
    assert len(load_split("EXAMPLE-pubtator", "test")) >= 2
    assert main(["corpora", "list"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("example-pubtator"))
    assert "Chemical,Disease" in line and "train,dev,test" in line
    assert any(x.startswith("NCBI-disease") for x in out.splitlines())


def test_hostile_records_are_reported_and_the_rest_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        '{"id": "ok", "text": "Aspirin helps.", "spans": '
        '[{"start": 0, "end": 7, "label": "Drug"}]}',
        '{"id": "sur", "text": "a\\ud800b aspirin", "spans": []}',
        '{"id": "pipe", "text": "Aspirin helps.", "spans": [{"start": 0, "end": 7, '
        '"label": "Drug|Chem"}]}',
        '{"id": "bad", "text": 5}',
        "not json",
        '{"id": "span", "text": "x", "spans": [{"start": "a", "end": 1, "label": "Drug"}]}',
        '{"id": "rej", "text": "Aspirin.", "answer": "reject"}',
        '{"id": "huge", "text": "Aspirin.", "spans": [{"start": 0, "end": 1e12, "label": "Drug"}]}',
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    card = tmp_path / "card.yaml"
    card.write_text("name: hostile\nformat: jsonl\ntrain: train.jsonl\n")
    assert main(["corpora", "check", str(card), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    kinds = {(p["kind"], p["line"]) for p in data["problems"]}
    assert {
        ("unreadable", 2),
        ("unusable_type", 3),
        ("unreadable", 4),
        ("unreadable", 5),
        ("unreadable", 6),
        ("rejected_record", 7),
        ("offset_out_of_range", 8),
    } <= kinds
    assert data["splits"]["train"]["mentions"] == {"Drug": 1}
    card.write_text("name: hostile\nformat: jsonl\ntrain: train.jsonl\nentity_types: ['A]B']\n")
    with pytest.raises(KeyError, match="entity_types"):
        get_corpus(str(card))


def test_the_shipped_example_is_clean_and_every_format_round_trips_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = Path(__file__).parents[1] / "jobs" / "examples" / "cdr-example"
    outputs = []
    for name in ("card.yaml", "card-pubtator.yaml"):
        assert main(["corpora", "check", str(root / name), "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] and outputs[0]["problems"] == []
    assert sum(s["documents"] for s in outputs[0]["splits"].values()) == 50
    code = main(["formats", "check", "--corpus", str(root / "card.yaml"), "--show", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "round-trip: " in out


def test_an_edited_file_is_read_again(tmp_path: Path) -> None:
    card = write_corpus(tmp_path, "brat")
    before = load_split(str(card), "test")
    ann = tmp_path / "brat" / "test" / "d5.ann"
    ann.write_text(ann.read_text().replace("\tChemical ", "\tDrug ", 1) + "\n")
    after = load_split(str(card), "test")
    assert {sp.label for s in before for sp in s.spans} == {"Chemical", "Disease"}
    assert {sp.label for s in after for sp in s.spans} == {"Chemical", "Disease", "Drug"}


def test_hostile_bioc_json_documents_are_reported_one_by_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {
        "id": "good",
        "passages": [
            {
                "offset": 0,
                "text": "Aspirin helps.",
                "annotations": [
                    {
                        "id": "1",
                        "infons": {"type": "Drug"},
                        "locations": [{"offset": 0, "length": 7}],
                    }
                ],
            }
        ],
    }
    hostile = [
        {"id": "offset-text", "passages": [{"offset": "abc", "text": "x"}]},
        {"id": "text-int", "passages": [{"offset": 0, "text": 5}]},
        {"id": "far", "passages": [{"offset": 10**12, "text": "x"}]},
        {"id": "ann-list", "passages": [{"offset": 0, "text": "x", "annotations": [[1, 2]]}]},
        "not a document",
        good,
    ]
    (tmp_path / "train.json").write_text(json.dumps({"documents": hostile}))
    (tmp_path / "dev.json").write_text(json.dumps({"documents": 5}))
    card = tmp_path / "card.yaml"
    card.write_text("name: hostile-bioc\nformat: bioc-json\ntrain: train.json\ndev: dev.json\n")
    assert main(["corpora", "check", str(card), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    unreadable = [p for p in data["problems"] if p["kind"] == "unreadable"]
    assert len(unreadable) == 6  # five bad documents and the file whose documents are no list
    assert data["splits"]["train"] == {"documents": 1, "sentences": 1, "mentions": {"Drug": 1}}


@pytest.mark.parametrize(
    ("ann", "holding", "losing"),
    [
        (
            "T1\tDisease 15 31\tgastric bleeding\nT2\tDisease 23 31\tbleeding\n",
            "multi_term",
            "multi_bio",
        ),
        (
            "T1\tDisease 8 22\tcaused gastric\nT2\tDisease 15 31\tgastric bleeding\n",
            "multi_triple",
            "multi_inline",
        ),
    ],
)
def test_nesting_and_crossing_block_only_a_format_that_cannot_write_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ann: str, holding: str, losing: str
) -> None:
    from biogner.formats.coverage import require_clean

    card = _brat_card(tmp_path, TEXT, ann)
    assert main(["corpora", "check", str(card), "--format", holding]) == 0
    assert main(["corpora", "check", str(card), "--format", losing, "--json"]) == 1
    out = capsys.readouterr().out
    losses = json.loads(out[out.index("{") :])["format_losses"]
    assert len(losses) == 1 and losses[0].startswith(f"format {losing} cannot write 1 sentence")
    require_clean(get_corpus(str(card)), formats=[holding])
    with pytest.raises(CorpusProblemError, match=f"format {losing}"):
        require_clean(get_corpus(str(card)), formats=[holding, losing])


def test_the_report_reads_a_card_s_ceiling_when_given_the_card(tmp_path: Path) -> None:
    from biogner.study.report import CeilingCache

    card = write_corpus(tmp_path, "jsonl")
    name = get_corpus(str(card)).name
    assert CeilingCache("test", None)("multi_triple", name) is None  # a name nobody registered
    ceiling = CeilingCache("test", None, {name: str(card)})("multi_triple", name)
    assert ceiling == 1.0  # an exact writing, every sentence written back


def test_the_example_builder_rejoins_tokens_with_exact_offsets() -> None:
    import runpy

    from biogner.types import Sentence, Span

    builder = runpy.run_path(
        str(Path(__file__).parents[1] / "jobs" / "examples" / "build_cdr_example.py")
    )
    tokens = [
        "A",
        "56",
        "-",
        "year",
        "-",
        "old",
        "(",
        "n",
        "=",
        "2",
        ".",
        "5",
        "mg",
        ")",
        "got",
        "5",
        "-",
        "FU",
        ",",
        "then",
        "Parkinson",
        "'",
        "s",
        "disease",
        ".",
    ]
    sent = Sentence.from_tokens("s", tokens)
    joined = sent.text
    spans = [
        Span(joined.index("5 - FU"), joined.index("5 - FU") + 6, "Chemical"),
        Span(joined.index("Parkinson"), joined.index("disease") + 7, "Disease"),
    ]
    text, offsets = builder["running_text"](Sentence.from_tokens("s", tokens, spans))
    assert text == "A 56-year-old (n = 2.5 mg) got 5-FU, then Parkinson's disease."
    assert [(text[s:e], label) for s, e, label in offsets] == [
        ("5-FU", "Chemical"),
        ("Parkinson's disease", "Disease"),
    ]


def test_a_type_absent_from_a_split_is_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(
        [ExportDocument("a", "", "Aspirin helps.", ((0, 7, "Drug"),))], tmp_path / "t.jsonl"
    )
    write_jsonl(
        [ExportDocument("b", "", "Heparin helps.", ((0, 7, "Drug"),))], tmp_path / "e.jsonl"
    )
    card = tmp_path / "card.yaml"
    card.write_text(
        "name: absent\nformat: jsonl\ntrain: t.jsonl\ntest: e.jsonl\n"
        "entity_types: [Drug, Disease]\n"
    )
    assert main(["corpora", "check", str(card), "--json"]) == 0  # a note, nothing lost
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert [(p["kind"], p["message"]) for p in problems] == [
        ("type_absent", "train: Disease"),
        ("type_absent", "test: Disease"),
    ]


def test_conversion_refuses_a_corpus_before_ray_starts(tmp_path: Path) -> None:
    from biogner.data import ConvertConfig, file_tasks

    card = _brat_card(tmp_path, TEXT, "T1\tDrug 0 7\tAspirin\nT2\tDrug 40 99\tpatient\n")
    cfg = ConvertConfig(corpora=[str(card)], formats=["multi_term"], splits=["train"]).resolved()
    assert cfg.corpora == [str(card.resolve())]  # absolute: a Ray worker reads it elsewhere
    with pytest.raises(CorpusProblemError, match=r"x\.ann:2: offset_out_of_range"):
        file_tasks(cfg)
    (tmp_path / "n").mkdir()
    nested = _brat_card(
        tmp_path / "n", TEXT, "T1\tDisease 15 31\tgastric bleeding\nT2\tDisease 23 31\tbleeding\n"
    )
    (task,) = file_tasks(cfg.model_copy(update={"corpora": [str(nested)]}))
    assert task.corpus == str(nested) and task.split == "train"
    with pytest.raises(CorpusProblemError, match="format multi_bio cannot write"):
        file_tasks(cfg.model_copy(update={"corpora": [str(nested)], "formats": ["multi_bio"]}))


def test_label_studio_doccano_and_spacy_exports_read_the_same_mentions(tmp_path: Path) -> None:
    text = "Aspirin caused gastric bleeding."
    label_studio = [
        {
            "id": 7,
            "data": {"text": text},
            "annotations": [
                {
                    "result": [
                        {
                            "type": "labels",
                            "value": {"start": 0, "end": 7, "text": "Aspirin", "labels": ["Drug"]},
                        },
                        {
                            "type": "labels",
                            "value": {
                                "start": 15,
                                "end": 31,
                                "text": "gastric bleeding",
                                "labels": ["AdverseEvent"],
                            },
                        },
                        {"type": "relation", "from_id": "a", "to_id": "b"},
                    ]
                }
            ],
        }
    ]
    (tmp_path / "ls.json").write_text(json.dumps(label_studio))
    doccano = {
        "id": 7,
        "text": text,
        "entities": [
            {"start_offset": 0, "end_offset": 7, "label": "Drug"},
            {"start_offset": 15, "end_offset": 31, "label": "AdverseEvent"},
        ],
    }
    spacy = {"id": 7, "text": text, "entities": [[0, 7, "Drug"], [15, 31, "AdverseEvent"]]}
    (tmp_path / "doccano.jsonl").write_text(json.dumps(doccano) + "\n")
    (tmp_path / "spacy.jsonl").write_text(json.dumps(spacy) + "\n")
    seen = []
    for name in ("ls.json", "doccano.jsonl", "spacy.jsonl"):
        card = tmp_path / f"{name}.yaml"
        card.write_text(f"name: x-{name.split('.')[0]}\nformat: jsonl\ntrain: {name}\n")
        read = read_corpus(get_corpus(str(card)))
        assert read.problems.items == [], name
        (sentence,) = read.splits["train"].sentences
        seen.append(sentence.mentions())
    assert seen == [[("Aspirin", "Drug"), ("gastric bleeding", "AdverseEvent")]] * 3
