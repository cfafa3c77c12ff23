"""`biogner extract` over documents in every input format, for real: a local Ray, the shared
Generator under the grammar (a noise model whose constrained answers mark entities), blocks
written whole, a job stopped half way and rerun, bad documents reported and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_noise_model
from mlflow.tracking import MlflowClient

from biogner.cli import main
from biogner.corpora import load_split
from biogner.extract.config import ExtractConfig
from biogner.extract.job import ERRORS, MANIFEST, run_extract
from biogner.models.config import METADATA_FILE

CARD = {"format": "multi_term", "entity_types": ["Chemical", "Disease"], "base_model": "noise"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = write_noise_model(tmp_path_factory.mktemp("extract-model"), seed=5)
    (out / METADATA_FILE).write_text(json.dumps(CARD))
    return out


@pytest.fixture(scope="module")
def documents(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """36 well-formed documents of corpus sentences in JSONL, .txt and PubTator, and 5 bad."""
    sentences = [s.text for s in load_split("BC5CDR", "dev", data_dir, limit=80)]
    root = tmp_path_factory.mktemp("docs")
    texts: dict[str, str] = {}
    lines = []
    for i in range(20):
        title, body = sentences[2 * i], sentences[2 * i + 1]
        record = {"id": f"j{i}", "text": body} | ({"title": title} if i % 2 else {})
        lines.append(json.dumps(record))
        texts[f"j{i}"] = f"{title} {body}" if i % 2 else body
    lines.insert(3, "{not json")
    lines.insert(7, json.dumps({"id": "empty", "text": "   "}))
    (root / "a.jsonl").write_bytes(
        ("\n".join(lines) + "\n").encode() + b'{"id": "x", "text": "caf\xe9"}\n'
    )
    for i in range(2):
        (root / f"note{i}.txt").write_text(f"{sentences[40 + i]}\n\n{sentences[42 + i]}\n")
        texts[f"note{i}"] = (root / f"note{i}.txt").read_text()
    pub = []
    for i in range(14):
        doc_id = f"{1000 + i}"
        pub += [f"{doc_id}|t|{sentences[44 + 2 * i]}", f"{doc_id}|a|{sentences[45 + 2 * i]}"]
        pub += [f"{doc_id}\t0\t3\txyz\tChemical\tD1", ""]
        texts[doc_id] = f"{sentences[44 + 2 * i]} {sentences[45 + 2 * i]}"
    pub += ["2000|x|what is this", "", "3000|t|a title alone", ""]
    (root / "c.pubtator").write_text("\n".join(pub))
    return root, texts


def read_jsonl_blocks(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(out.glob("part-*.jsonl")) for line in p.open()]


def test_a_stopped_job_reruns_to_every_document_exactly_once(
    ray_session, model_dir: Path, documents: tuple[Path, dict], tmp_path: Path
) -> None:
    root, texts = documents
    tracking = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    cfg = ExtractConfig(
        model=str(model_dir),
        inputs=[str(root)],
        output=str(tmp_path / "out"),
        docs_per_block=8,
        generation={"max_new_tokens_cap": 24},
        tracking=tracking,
        stop_after_blocks=2,
    )
    first = run_extract(cfg)  # "killed" after two blocks
    assert (first.blocks, first.blocks_written, first.complete) == (5, 2, False)
    assert first.documents == 36 and first.bad_documents == 5
    second = run_extract(cfg.model_copy(update={"stop_after_blocks": None}))
    assert (second.blocks_done_before, second.blocks_written, second.complete) == (2, 3, True)
    rows = read_jsonl_blocks(tmp_path / "out")
    assert sorted(r["id"] for r in rows) == sorted(texts)  # each document exactly once
    found = 0
    for row in rows:
        assert row["text"] == texts[row["id"]]
        for e in row["entities"]:
            assert row["text"][e["start"] : e["end"]] == e["text"]  # offsets into the document
            assert e["label"] in CARD["entity_types"]
            assert 0.0 <= e["score"] <= 1.0
            found += 1
    assert found > 0
    errors = {e["id"]: e for e in map(json.loads, (tmp_path / "out" / ERRORS).open())}
    reasons = {e["reason"].split(" (")[0].split(":")[0] for e in errors.values()}
    assert {"no text", "not JSON", "not valid UTF-8", "a title without its abstract"} <= reasons
    assert any(e["source"].endswith("c.pubtator:57") for e in errors.values())
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert sorted(manifest["blocks"]) == ["0", "1", "2", "3", "4"]
    run = MlflowClient(tracking["tracking_uri"]).get_run(second.run_id)
    assert run.data.metrics["blocks_skipped"] == 2 and run.data.metrics["documents"] == 36
    assert run.data.tags["biogner.kind"] == "extract"
    (dataset_input,) = run.inputs.dataset_inputs  # mlflow.log_input's record: what it read
    assert manifest["inputs_digest"].startswith(dataset_input.dataset.digest)
    assert json.loads(dataset_input.dataset.profile)["documents"] == 36
    assert str(root.resolve()) in dataset_input.dataset.source
    # the same output from other inputs is refused, not mixed
    with pytest.raises(ValueError, match="holds the output of another job"):
        run_extract(cfg.model_copy(update={"inputs": [str(root / "a.jsonl")]}))


def test_pubtator_and_parquet_outputs_read_back(
    ray_session, model_dir: Path, documents: tuple[Path, dict], tmp_path: Path, capsys
) -> None:
    import pyarrow.parquet as pq

    root, texts = documents
    common = ["--model", str(model_dir), "--input", str(root / "c.pubtator"), str(root / "a.jsonl")]
    extra = ["generation.max_new_tokens_cap=24", f"tracking.tracking_uri=sqlite:///{tmp_path}/m.db"]
    assert (
        main(
            [
                "extract",
                *common,
                "--output",
                str(tmp_path / "pt"),
                "--output-format",
                "pubtator",
                *extra,
            ]
        )
        == 0
    )
    assert "34 documents (5 bad: errors.jsonl)" in capsys.readouterr().out
    text = "".join(p.read_text() for p in sorted((tmp_path / "pt").glob("part-*.pubtator")))
    docs = [d for d in text.split("\n\n") if d.strip()]
    assert len(docs) == 34
    for doc in docs:
        title, abstract, *entities = doc.splitlines()
        doc_id = title.split("|", 1)[0]
        full = f"{title.split('|', 2)[2]} {abstract.split('|', 2)[2]}"  # PubTator's offsets
        original = texts[doc_id].replace("\n", " ")
        assert full in (original, original + " ")  # a title-less document is all title
        for line in entities:
            _, start, end, mention, label, _ = line.split("\t")
            assert full[int(start) : int(end)] == mention and label in CARD["entity_types"]
    assert (
        main(
            [
                "extract",
                *common,
                "--output",
                str(tmp_path / "pq"),
                "--output-format",
                "parquet",
                *extra,
            ]
        )
        == 0
    )
    table = pq.read_table(sorted((tmp_path / "pq").glob("part-*.parquet"))[0]).to_pylist()
    assert table and {"id", "text", "entities"} <= set(table[0])


def test_bioc_in_and_out_keeps_passages_and_offsets(
    ray_session, model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """BioC XML and JSON read (passages at their own offsets) and written back with one
    annotation per entity, which the `bioc` package reads with offsets into its passages."""
    from bioc import BioCCollection, BioCDocument, BioCPassage, biocjson, biocxml

    sentences = [s.text for s in load_split("NCBI-disease", "dev", data_dir, limit=24)]
    texts = {}
    for name, module in (("in.xml", biocxml), ("in.json", biocjson)):
        collection = BioCCollection()
        for i in range(6):
            doc = BioCDocument()
            doc.id = f"{name}-{i}"
            title, abstract = sentences[2 * i], sentences[2 * i + 1]
            for offset, text, kind in ((0, title, "title"), (len(title) + 1, abstract, "abstract")):
                p = BioCPassage()
                p.offset, p.text = offset, text
                p.infons["type"] = kind
                doc.add_passage(p)
            collection.add_document(doc)
            texts[doc.id] = f"{title} {abstract}"
        (tmp_path / name).write_text(module.dumps(collection))
    cfg = ExtractConfig(
        model=str(model_dir),
        inputs=[str(tmp_path / "in.xml"), str(tmp_path / "in.json")],
        output=str(tmp_path / "out"),
        output_format="bioc-xml",
        generation={"max_new_tokens_cap": 24},
        tracking={"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
    )
    summary = run_extract(cfg)
    assert summary.complete and summary.documents == 12 and summary.bad_documents == 0
    back = [
        d
        for p in sorted((tmp_path / "out").glob("part-*.xml"))
        for d in biocxml.loads(p.read_text()).documents
    ]
    assert sorted(d.id for d in back) == sorted(texts)
    annotations = 0
    for doc in back:
        assert [p.infons["type"] for p in doc.passages] == ["title", "abstract"]
        for passage in doc.passages:
            assert (
                texts[doc.id][passage.offset : passage.offset + len(passage.text)] == passage.text
            )
            for ann in passage.annotations:
                loc = ann.locations[0]
                assert passage.offset <= loc.offset and loc.end <= passage.offset + len(
                    passage.text
                )
                assert texts[doc.id][loc.offset : loc.end] == ann.text
                annotations += 1
    assert annotations > 0


def test_a_bioc_passage_offset_far_past_the_text_is_one_bad_document(tmp_path: Path) -> None:
    """`"offset": 1e12` built a string of 10^12 spaces (MemoryError, or the job killed) before
    the size check: it is now a bad document with its reason, and the next one is read."""
    from biogner.extract.documents import BadDocument, Document, read_documents

    def document(doc_id: str, offset: int) -> dict:
        passage = {"offset": offset, "text": "Aspirin.", "infons": {}, "annotations": []}
        passage |= {"relations": [], "sentences": []}
        return {"id": doc_id, "infons": {}, "relations": [], "passages": [passage]}

    far, good = document("far", 10**12), document("good", 0)
    collection = {"source": "", "date": "", "key": "", "infons": {}, "documents": [far, good]}
    path = tmp_path / "in.json"
    path.write_text(json.dumps(collection))
    bad, ok = list(read_documents(path, "bioc-json", max_chars=100_000))
    assert isinstance(bad, BadDocument) and bad.id == "far"
    assert "characters past the text before it" in bad.reason
    assert isinstance(ok, Document) and ok.text == "Aspirin."


@pytest.mark.parametrize(
    ("asked", "why"), [([], "must not be empty"), (["Gene"], r"unknown entity types \['Gene'\]")]
)
def test_types_the_model_cannot_be_asked_fail_before_any_work(
    model_dir: Path, tmp_path: Path, asked: list[str], why: str
) -> None:
    """The job checks the types against the card as the actors' Annotator does (one rule):
    an empty list passed the job's own check and failed in every actor."""
    (tmp_path / "in.txt").write_text("Aspirin relieves fever.\n")
    out = tmp_path / "out"
    cfg = ExtractConfig(
        model=str(model_dir), inputs=[str(tmp_path / "in.txt")], output=str(out), entity_types=asked
    )
    with pytest.raises(ValueError, match=why):
        run_extract(cfg)
    assert not out.exists()  # nothing written, no Ray started
