"""A user's own corpus end to end (real local Ray, real MLflow store, tiny-llama): trained from
its card with the unchanged `biogner train` command beside a built-in corpus, the card and the
data's digest logged, scored on its whole test split by `biogner evaluate --corpus CARD`,
served with both corpora's types, swept over; a defective corpus is refused before any run."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from corpus_support import adverse_event_docs, write_ade_card
from mlflow.tracking import MlflowClient
from serve_support import API_KEY, app_config
from support import free_port

from biogner.cli import main
from biogner.corpora import get_corpus, load_split
from biogner.corpora.export import write_brat

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ade_card(tmp_path_factory.mktemp("ade"))


@pytest.fixture(scope="module")
def mixed(ray_session, small_data_dir: Path, card: Path, tmp_path_factory):
    """`biogner train` on [NCBI-disease, the card], as a user types it."""
    store = tmp_path_factory.mktemp("your-corpus")
    tracking = [
        f"tracking.tracking_uri=sqlite:///{store}/mlflow.db",
        f"tracking.artifact_root={store}/artifacts",
        "tracking.experiment=your-corpus",
    ]
    code = main(
        [
            "train",
            "--config",
            str(ROOT / "jobs" / "configs" / "tiny.yaml"),
            f"data.corpora=[NCBI-disease, {card}]",
            "data.formats=[multi_term]",
            "run_name=tiny-mixed-card",
            f"data.data_dir={small_data_dir}",
            f"data.converted_dir={store}/converted",
            "optim.max_steps=2",
            "scaling.num_workers=1",
            "deepspeed.zero_stage=0",
            f"scaling.storage_path={store}/ray",
            *tracking,
        ]
    )
    assert code == 0
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("your-corpus").experiment_id],
        "attributes.run_name = 'tiny-mixed-card'",
    )
    return {"store": store, "run": run, "client": client, "tracking": tracking}


def test_the_run_logs_the_card_and_the_data_it_learned_from(
    mixed, card: Path, tmp_path: Path
) -> None:
    from biogner.models.config import METADATA_FILE
    from biogner.tracking.models import download_model_dir

    run = mixed["run"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["corpora"] == "NCBI-disease,ade-reports"
    artifacts = [f.path for f in mixed["client"].list_artifacts(run.info.run_id, "corpora")]
    assert sorted(artifacts) == ["corpora/NCBI-disease.yaml", "corpora/ade-reports.yaml"]
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    ade = inputs["ade-reports"]
    profile = json.loads(ade.profile)
    assert profile["documents"] == 8 and profile["mentions"] == 8 * 6
    assert json.loads(ade.source)["card"] == str(card)
    assert len(ade.digest) == 16 and ade.digest != inputs["NCBI-disease"].digest
    model_dir = download_model_dir(f"runs:/{run.info.run_id}/model", tmp_path)
    model_card = json.loads((model_dir / METADATA_FILE).read_text())
    assert model_card["corpora"] == ["NCBI-disease", "ade-reports"]
    assert model_card["corpus_refs"] == ["NCBI-disease", str(card)]  # `evaluate --corpus all`


def test_evaluate_scores_the_whole_test_split_of_the_card(
    mixed, card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = mixed["run"].info.run_id
    code = main(
        [
            "evaluate",
            "--model",
            f"runs:/{run_id}/model",
            "--corpus",
            str(card),
            "--split",
            "test",
            "--tracking-uri",
            mixed["tracking"][0].split("=", 1)[1],
            "generation.max_new_tokens=24",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    whole = load_split(str(card), "test")
    assert f"on ade-reports/test, {len(whole)} sentences, {3 * 6} gold mentions" in out
    parent = mixed["client"].get_run(run_id).data.metrics
    assert parent["ade-reports/test_sentences"] == len(whole)


def test_the_mixed_model_serves_both_corpora_s_types(ray_session, mixed) -> None:
    from ray import serve

    from biogner.serve.application import build_application

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = app_config(f"runs:/{mixed['run'].info.run_id}/model", mixed["store"])
    try:
        serve.run(build_application(cfg), name="your-corpus", route_prefix="/")
        headers = {"Authorization": f"Bearer {API_KEY}"}
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
            info = c.get("/v1/model").json()
            assert info["entity_types"] == ["Disease", "Drug", "AdverseEvent"]
            assert info["type_groups"] == [["Disease"], ["Drug", "AdverseEvent"]]
            assert info["corpora"] == ["NCBI-disease", "ade-reports"]
            text = "Rash developed after amoxicillin in a patient with diabetes."
            for wanted in (["Drug"], ["AdverseEvent", "Disease"]):
                r = c.post("/v1/extract", json={"texts": [text], "entity_types": wanted})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["entity_types"] == [t for t in info["entity_types"] if t in wanted]
                for ent in body["results"][0]["entities"]:
                    assert ent["label"] in wanted and text[ent["start"] : ent["end"]] == ent["text"]
    finally:
        serve.shutdown()


def test_a_sweep_runs_over_a_card(ray_session, small_data_dir: Path, card: Path, tmp_path) -> None:
    from biogner.study.config import load_sweep
    from biogner.study.sweep import run_sweep

    store = tmp_path / "sweep"
    cfg = load_sweep(
        None,
        [
            "experiment=your-corpus-study",
            f"base={ROOT / 'jobs' / 'configs' / 'tiny.yaml'}",
            "formats=[conv_term]",
            "models=[tiny-llama]",
            f"corpora=[{card}]",
            "overrides=[optim.max_steps=2, scaling.num_workers=1, deepspeed.zero_stage=0, "
            f"'data.converted_dir={store}/converted', 'scaling.storage_path={store}/ray']",
            "evaluate.splits=[dev]",
            "evaluate.generation.max_new_tokens=16",
            f"tracking.tracking_uri=sqlite:///{store}/mlflow.db",
            f"tracking.artifact_root={store}/artifacts",
        ],
    )
    (outcome,) = run_sweep(cfg)
    assert outcome.status == "FINISHED", outcome.error
    assert (
        outcome.cell.run_name(cfg.experiment)
        == "your-corpus-study-tiny-llama-ade-reports-conv_term"
    )
    assert outcome.metrics["dev_sentences"] == len(load_split(str(card), "dev"))


def test_a_corpus_that_would_lose_mentions_is_refused_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "export"
    write_brat(adverse_event_docs(2, 5, "bad"), folder)
    ann = folder / "bad00.ann"
    ann.write_text(ann.read_text() + "T99\tDrug 10 9999\tnothing\n")
    bad = tmp_path / "card.yaml"
    bad.write_text("name: bad-ade\nformat: brat\ntrain: export\n")
    store = tmp_path / "store"
    code = main(
        [
            "train",
            "--config",
            str(ROOT / "jobs" / "configs" / "tiny.yaml"),
            f"data.corpora=[{bad}]",
            f"tracking.tracking_uri=sqlite:///{store}/mlflow.db",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"{ann}:7: offset_out_of_range" in err and "accept: [offset_out_of_range]" in err
    assert not (store / "mlflow.db").exists()  # refused before a run was made
    assert get_corpus(str(bad)).types == ("AdverseEvent", "Drug")  # found, sorted
