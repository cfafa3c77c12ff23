"""A model trained on several corpora: sampled per corpus, asked each corpus's own types,
scored per corpus under names the report reads (real Ray, real MLflow store, tiny-llama)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_small_corpus
from mlflow.tracking import MlflowClient

from biogner.config import load_config
from biogner.evaluate.config import EvalConfig
from biogner.evaluate.runner import run_evaluations
from biogner.models.config import METADATA_FILE
from biogner.study.anchors import load_anchors
from biogner.study.report import build_report
from biogner.tracking.models import download_model_dir
from biogner.tracking.registry import logged_model_id
from biogner.train.config import TrainConfig
from biogner.train.dataset import sample_indices
from biogner.train.driver import run_training

ROOT = Path(__file__).parents[1]
CORPORA = ["NCBI-disease", "BC5CDR", "s800"]


def test_a_corpus_sample_is_seeded_stable_and_grows_by_adding() -> None:
    small = sample_indices("BC2GM", 1000, 50, seed=42)
    assert small is not None and len(small) == 50 and max(small) < 1000
    assert sample_indices("BC2GM", 1000, 50, seed=42) == small
    assert sample_indices("BC2GM", 1000, 50, seed=7) != small
    larger = sample_indices("BC2GM", 1000, 80, seed=42)
    assert larger is not None and small < larger  # resuming with a larger N adds sentences
    assert sample_indices("BC2GM", 40, 50, seed=42) is None  # all of a small corpus


@pytest.fixture(scope="module")
def trained(ray_session, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("multi")
    small = tmp_path_factory.mktemp("multi-data")
    for corpus in CORPORA:
        write_small_corpus(data_dir, small, corpus, 24)
    cfg = load_config(
        TrainConfig,
        ROOT / "jobs" / "configs" / "tiny.yaml",
        [
            "run_name=tiny-multi-corpus",
            f"data.corpora=[{','.join(CORPORA)}]",
            "data.formats=[multi_term]",
            "data.limit=null",
            "data.sentences_per_corpus=16",
            f"data.data_dir={small}",
            f"data.converted_dir={store}/converted",
            "optim.max_steps=2",
            "scaling.num_workers=1",
            "deepspeed.zero_stage=0",
            f"scaling.storage_path={store}/ray",
            f"tracking.tracking_uri=sqlite:///{store}/mlflow.db",
            f"tracking.artifact_root={store}/artifacts",
            "tracking.experiment=multi-corpus",
        ],
    )
    outcome = run_training(cfg)
    assert outcome.status == "FINISHED"
    return cfg, outcome, small, store


def test_each_corpus_trains_its_sample_and_the_card_keeps_its_type_groups(
    trained, tmp_path: Path
) -> None:
    cfg, outcome, _, _ = trained
    run = MlflowClient(cfg.tracking.uri).get_run(outcome.run_id)
    assert run.data.metrics["train_rows"] == 16 * len(CORPORA)
    card = json.loads(
        (download_model_dir(f"runs:/{outcome.run_id}/model", tmp_path) / METADATA_FILE).read_text()
    )
    assert card["type_groups"] == [["Disease"], ["Chemical", "Disease"], ["Species"]]
    assert card["entity_types"] == ["Disease", "Chemical", "Species"]


def test_scored_per_corpus_under_names_the_report_reads(trained, tmp_path: Path) -> None:
    cfg, outcome, small, _ = trained
    eval_cfg = EvalConfig(
        model=f"runs:/{outcome.run_id}/model",
        split="dev",
        data_dir=str(small),
        tracking=cfg.tracking,
        generation={"max_new_tokens_cap": 12, "batch_size": 16},
    )
    results = run_evaluations(eval_cfg, ["all"])
    assert [r.corpus for r in results] == CORPORA
    metrics = MlflowClient(cfg.tracking.uri).get_run(outcome.run_id).data.metrics
    per_corpus = [metrics[f"{c}/dev_f1"] for c in CORPORA]
    assert per_corpus == [r.metrics["dev_f1"] for r in results]
    assert metrics["dev_f1"] == pytest.approx(sum(per_corpus) / 3)  # the macro F1 select ranks
    assert metrics["dev_macro_corpora"] == 3
    assert {"BC5CDR/dev_f1_low_Chemical", "BC5CDR/dev_gold_mentions_Disease"} <= set(metrics)
    # linked to the logged model too: the MLflow UI's model page shows the scores
    client = MlflowClient(cfg.tracking.uri)
    logged = client.get_logged_model(logged_model_id(cfg.tracking, outcome.run_id))
    assert {"dev_f1", "BC5CDR/dev_f1", "s800/dev_f1"} <= {m.key for m in logged.metrics or []}
    # an unknown corpus fails before any work
    with pytest.raises(KeyError):
        run_evaluations(eval_cfg, ["NCBI-disease", "no-such-corpus"])

    paths = build_report(
        cfg.tracking,
        "multi-corpus",
        tmp_path / "report",
        "dev_f1",
        small,
        log_run=False,
        anchors=load_anchors(ROOT / "jobs" / "anchors" / "published.yaml"),
    )
    text = paths.markdown.read_text()
    section = text[text.index("# Per corpus") :]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if "|" in line}
    assert {"NCBI-disease", "BC5CDR", "BC5CDR-chem", "BC5CDR-disease", "s800"} <= set(rows)
    bc5 = next(r for r in results if r.corpus == "BC5CDR")
    gold = bc5.scores.per_label["Chemical"].tp + bc5.scores.per_label["Chemical"].fn
    assert f"| {gold} |" in rows["BC5CDR-chem"]
    assert "0.933 (" in rows["BC5CDR-chem"]  # the PubMedBERT anchor and the difference to it
    assert rows["s800"].rstrip(" |").endswith("-")  # no anchor for s800
