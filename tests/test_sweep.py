"""A small study end to end on a local Ray: sweep -> evaluate -> select -> report."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from biogner.cli import main
from biogner.study.config import load_sweep
from biogner.study.sweep import run_sweep
from biogner.tracking.registry import get_alias_version
from biogner.tracking.tags import DECODING_TAG, EVALUATE_KIND, KIND_TAG, SPLIT_TAG

TINY = Path(__file__).parents[1] / "jobs" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def study(ray_session, small_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    cfg = load_sweep(
        None,
        [
            "experiment=tiny-study",
            f"base={TINY}",
            "models=[tiny-llama]",
            "formats=[conv_term,multi_triple]",
            "corpora=[NCBI-disease]",
            "overrides=[optim.max_steps=6,data.limit=48]",
            "evaluate.free_splits=[test]",
            f"tracking.tracking_uri=sqlite:///{root}/mlflow.db",
            f"tracking.artifact_root={root}/artifacts",
        ],
    )
    # Cells write Ray results and conversions under these paths.
    cfg.overrides += [f"scaling.storage_path={root}/ray", f"data.converted_dir={root}/conv"]
    cfg.overrides += [f"data.data_dir={small_data_dir}"]  # whole splits of 40 sentences
    return root, cfg, run_sweep(cfg, progress=False)


def test_both_cells_are_scored_on_whole_dev_and_test_splits(study):
    root, cfg, outcomes = study
    assert [o.status for o in outcomes] == ["FINISHED", "FINISHED"]
    client = MlflowClient(cfg.tracking.uri)
    for o in outcomes:
        run = client.get_run(o.run_id)
        assert run.info.status == "FINISHED"
        for split in ("dev", "test"):
            m = run.data.metrics
            assert 0.0 <= m[f"{split}_f1_low"] <= m[f"{split}_f1"] <= m[f"{split}_f1_high"] <= 1
            assert m[f"{split}_sentences"] == 40 and m[f"{split}_gold_mentions"] > 0
        children = client.search_runs(
            [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{o.run_id}'"
        )
        decoded = sorted((c.data.tags[SPLIT_TAG], c.data.tags[DECODING_TAG]) for c in children)
        assert decoded == [("dev", "constrained"), ("test", "constrained"), ("test", "free")]
        # the free decoding of the same checkpoint has its own names: it never replaces the
        # constrained score that selection reads and serving delivers
        m = run.data.metrics
        assert 0.0 <= m["test_free_f1_low"] <= m["test_free_f1"] <= m["test_free_f1_high"] <= 1
        assert m["test_free_sentences"] == 40 and "dev_free_f1" not in m
        free_child = next(c for c in children if c.data.tags["decoding"] == "free")
        assert free_child.data.metrics["test_free_f1"] == m["test_free_f1"]
        assert "test_f1" not in free_child.data.metrics
        assert free_child.info.run_name.endswith("-free")
        for child in children:
            assert child.data.tags[KIND_TAG] == EVALUATE_KIND
            assert child.data.tags["subset"] == "false"
            arts = {a.path for a in client.list_artifacts(child.info.run_id)}
            assert {"predictions.jsonl", "errors.md"} <= arts


def test_rerun_skips_finished_cells(study):
    root, cfg, _ = study
    again = run_sweep(cfg, progress=False)
    assert [o.status for o in again] == ["SKIPPED", "SKIPPED"]


def test_a_rerun_asking_for_more_evaluations_runs_only_those(study):
    """A stopped or widened study does not redo the evaluations it already has."""
    root, cfg, _ = study
    client = MlflowClient(cfg.tracking.uri)

    def children(run_id):
        run = client.get_run(run_id)
        query = f"tags.`mlflow.parentRunId` = '{run_id}'"
        return client.search_runs([run.info.experiment_id], query)

    before = {o.run_id: {c.info.run_id for c in children(o.run_id)} for o in study[2]}
    wider = cfg.model_copy(deep=True)
    wider.evaluate.free_splits = ["test", "dev"]
    again = run_sweep(wider, progress=False)
    assert [o.status for o in again] == ["FINISHED", "FINISHED"]
    for o in again:
        new = [c for c in children(o.run_id) if c.info.run_id not in before[o.run_id]]
        assert [(c.data.tags["split"], c.data.tags["decoding"]) for c in new] == [("dev", "free")]
        assert {"dev_f1", "test_f1", "test_free_f1", "dev_free_f1"} <= set(o.metrics)


def test_rerun_with_another_budget_refuses_to_reuse_the_finished_cell(study):
    """Same run name, different training config: reporting the old result would be wrong."""
    root, cfg, _ = study
    changed = cfg.model_copy(
        update={"formats": ["conv_term"], "overrides": [*cfg.overrides, "optim.max_steps=7"]}
    )
    (outcome,) = run_sweep(changed, progress=False)
    assert outcome.status == "FAILED"
    assert "optim.max_steps" in (outcome.error or "") and "new experiment" in (outcome.error or "")


def test_failed_cell_does_not_stop_the_others(study):
    root, cfg, _ = study
    broken = cfg.model_copy(
        update={"formats": ["conv_term"], "models": ["tiny-llama", "/no/such/model"]}
    )
    outcomes = run_sweep(broken, progress=False)
    assert [o.status for o in outcomes] == ["SKIPPED", "FAILED"]
    assert "/no/such/model" in (outcomes[1].error or "")


def test_select_champion_and_report(study, small_data_dir, tmp_path, capsys):
    root, cfg, outcomes = study
    from biogner.study.report import build_report
    from biogner.study.select import select_champion

    selection = select_champion(cfg.tracking, cfg.experiment, model_name="tiny-ner")  # dev_f1
    assert selection.metric == "dev_f1" and selection.comparison is not None
    best = max(o.metrics["dev_f1"] for o in outcomes)
    if selection.comparison.cheaper_preferred:  # a statistical tie went to the cheaper format
        assert selection.ranking[1].value == pytest.approx(best)
    else:
        assert selection.ranking[0].value == pytest.approx(best)
    version = get_alias_version(cfg.tracking, "tiny-ner", "champion")
    assert version is not None
    assert version.run_id == selection.ranking[0].run_id

    paths = build_report(cfg.tracking, cfg.experiment, tmp_path / "report")
    assert list(paths.heatmaps) == ["tiny-llama"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths.heatmaps.values())
    table = paths.markdown.read_text()
    assert "conv_term" in table and "multi_triple" in table

    # Evaluating the registered champion on the whole test split reproduces its logged F1.
    uri = "models:/tiny-ner@champion"
    common = [
        "--tracking-uri",
        cfg.tracking.uri,
        f"tracking.artifact_root={cfg.tracking.artifact_root}",
    ]
    code = main(
        ["evaluate", "--model", uri, *common, f"data_dir={small_data_dir}", "log_to_parent=false"]
    )
    assert code == 0
    out = capsys.readouterr().out
    client = MlflowClient(cfg.tracking.uri)
    logged = client.get_run(version.run_id).data.metrics["test_f1"]
    assert f"F1 {logged:.4f}" in out and "40 sentences" in out
    exp = client.get_experiment_by_name(cfg.experiment)
    # the evaluation records the version the alias pointed to (resolved once, pinned)
    pinned = f"models:/tiny-ner/{version.version}"
    (again,) = client.search_runs([exp.experiment_id], f"tags.model_uri = '{pinned}'")
    assert again.data.metrics["test_f1"] == logged  # exactly, not approximately

    # A quick look at the first 5 sentences is tagged a subset and leaves the run's F1 alone.
    code = main(["evaluate", "--model", uri, "--limit", "5", *common, f"data_dir={small_data_dir}"])
    assert code == 0 and "a subset, not selectable" in capsys.readouterr().out
    assert client.get_run(version.run_id).data.metrics["test_f1"] == logged
    (quick,) = client.search_runs([exp.experiment_id], "tags.subset = 'true'")
    assert quick.data.metrics["test_sentences"] == 5
    again_selected = select_champion(cfg.tracking, cfg.experiment, "test_f1", model_name="tiny-ner")
    assert quick.info.run_id not in {r.evaluation_run_id for r in again_selected.ranking}


def test_a_stopped_mix_finishes_its_other_formats_without_redoing_any(study):
    """A mix is evaluated in each of its formats, and only the first one's scores land on the
    training run: a sweep stopped after that first evaluation must not call the mix done
    (it did: SKIPPED), and a rerun evaluates only the formats still missing."""
    root, cfg, _ = study
    mix_cfg = cfg.model_copy(
        update={
            "experiment": "tiny-study-mix",
            "formats": [],
            "mixes": [["conv_term", "multi_triple"]],
            "evaluate": cfg.evaluate.model_copy(update={"splits": ["test"], "free_splits": []}),
        }
    )
    (outcome,) = run_sweep(mix_cfg, progress=False)
    assert outcome.status == "FINISHED", outcome.error
    client = MlflowClient(cfg.tracking.uri)

    def evaluations():
        run = client.get_run(outcome.run_id)
        query = f"tags.`mlflow.parentRunId` = '{outcome.run_id}'"
        return {
            c.data.tags["format"]: c for c in client.search_runs([run.info.experiment_id], query)
        }

    first = evaluations()
    assert sorted(first) == ["conv_term", "multi_triple"]
    assert (
        client.get_run(outcome.run_id).data.metrics["test_f1"]
        == (first["conv_term"].data.metrics["test_f1"])
    )
    client.delete_run(first["multi_triple"].info.run_id)  # as if stopped before that one

    (again,) = run_sweep(mix_cfg, progress=False)
    assert again.status == "FINISHED" and again.run_id == outcome.run_id
    second = evaluations()
    assert second["conv_term"].info.run_id == first["conv_term"].info.run_id  # not redone
    assert second["multi_triple"].info.run_id != first["multi_triple"].info.run_id
    assert second["multi_triple"].data.metrics["test_f1"] == pytest.approx(
        first["multi_triple"].data.metrics["test_f1"]
    )
    assert again.metrics["test_f1"] == first["conv_term"].data.metrics["test_f1"]
    (done,) = run_sweep(mix_cfg, progress=False)
    assert done.status == "SKIPPED"
