"""biogner.tracking against a real SQLite MLflow store in a temporary directory (no mocks)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow_store import make_cfg
from transformers import AutoModelForCausalLM, LlamaConfig

from biogner.models.config import METADATA_FILE
from biogner.pyfunc.contract import ENTRY_CODE, HF_ARTIFACT_KEY
from biogner.pyfunc.model import BiognerHFModel
from biogner.tracking.config import TrackingConfig
from biogner.tracking.models import download_model_dir, log_hf_model
from biogner.tracking.registry import check_model_version, get_alias_version, register_champion
from biogner.tracking.runs import (
    client_for,
    log_metrics_from_worker,
    resume_run_id,
    setup,
    tracked_run,
)

METADATA = {
    "base": "tiny-llama",
    "format": "conv_term",
    "entity_types": ["Disease", "Chemical"],
    "corpus": "BC5CDR",
}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=100,
    )
    model = AutoModelForCausalLM.from_config(config)
    out = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model.save_pretrained(out, safe_serialization=True)
    return out


def state_dict_of(model_dir: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(model_dir).state_dict()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_config_defaults_follow_biogner_home_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIOGNER_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = TrackingConfig()
    assert cfg.tracking_uri == f"sqlite:///{tmp_path / '.biogner' / 'mlflow.db'}"
    assert cfg.artifact_root == (tmp_path / ".biogner" / "artifacts").as_uri()
    assert cfg.experiment == "biogner"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    remote = TrackingConfig()
    assert remote.tracking_uri == "http://127.0.0.1:5000"
    assert remote.artifact_root is None  # the server's own artifact root applies


def test_experiment_has_explicit_artifact_location_and_setup_is_race_safe(store: Path) -> None:
    cfg = make_cfg(store, "exp-location")
    client_for(cfg)  # the store exists; the threads race on the experiment only
    ids: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            ids.append(setup(cfg))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1
    exp = client_for(cfg).get_experiment(ids[0])
    assert exp.name == "exp-location"
    assert exp.artifact_location == f"{(store / 'artifacts').as_uri()}/exp-location"
    assert setup(cfg) == ids[0]


def test_failed_run_ends_failed_with_error_tag_and_no_model(
    store: Path, tiny_model_dir: Path
) -> None:
    cfg = make_cfg(store, "exp-failed")
    run_ids: list[str] = []
    with (
        pytest.raises(RuntimeError, match="boom"),
        tracked_run(cfg, "doomed", params={"lr": 0.1}) as run_id,
    ):
        run_ids.append(run_id)
        log_metrics_from_worker(run_id, {"loss": 2.0}, step=0, tracking_uri=cfg.uri)
        raise RuntimeError("boom in fit()")

    client = client_for(cfg)
    run = client.get_run(run_ids[0])
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: boom in fit()"
    assert run.data.metrics["loss"] == 2.0
    artifacts = {a.path for a in client.list_artifacts(run_ids[0])}
    assert "error_traceback.txt" in artifacts
    assert "model" not in artifacts
    traceback_file = mlflow.artifacts.download_artifacts(
        run_id=run_ids[0], artifact_path="error_traceback.txt", tracking_uri=cfg.uri
    )
    assert "boom in fit()" in Path(traceback_file).read_text()
    assert not (run.outputs and run.outputs.model_outputs)
    with pytest.raises(LookupError, match="no model logged"):
        register_champion(cfg, run_ids[0], "never-registered")
    with pytest.raises(MlflowException):
        download_model_dir(f"runs:/{run_ids[0]}/model")


def test_successful_run_has_flattened_params_and_config_yaml(store: Path) -> None:
    cfg = make_cfg(store, "exp-ok")
    config = {
        "model": {"spec": "tiny-llama", "lora": {"r": 8, "alpha": 16.0}},
        "train": {"lr": 0.001, "formats": ["conv_term", "multi_triple"], "notes": "x" * 7000},
        "seed": 13,
        "bad key!": True,
    }
    yaml_text = "model:\n  spec: tiny-llama\nseed: 13\n"
    with tracked_run(
        cfg, "ok", tags={"study": "formats"}, params=config, config_yaml=yaml_text
    ) as run_id:
        pass

    client = client_for(cfg)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "ok"
    assert run.data.tags["study"] == "formats"
    params = run.data.params
    assert params["model.spec"] == "tiny-llama"
    assert params["model.lora.r"] == "8"
    assert params["model.lora.alpha"] == "16.0"
    assert params["train.lr"] == "0.001"
    assert params["train.formats"] == '["conv_term", "multi_triple"]'
    assert params["seed"] == "13"
    assert params["bad key_"] == "true"
    assert 1000 < len(params["train.notes"]) <= 6000
    assert params["train.notes"].endswith("[truncated]")
    yaml_file = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="config.yaml", tracking_uri=cfg.uri
    )
    assert Path(yaml_file).read_text() == yaml_text


def test_metrics_from_another_process_land_in_the_same_run(store: Path) -> None:
    cfg = make_cfg(store, "exp-worker")
    with tracked_run(cfg, "distributed") as run_id:
        log_metrics_from_worker(run_id, {"loss": 3.0}, step=0, tracking_uri=cfg.uri)
        code = textwrap.dedent(
            f"""
            from biogner.tracking.runs import log_metrics_from_worker
            for step in (1, 2):
                log_metrics_from_worker(
                    {run_id!r}, {{"loss": 3.0 - step, "tokens_per_s": 10.0 * step}}, step,
                    tracking_uri={cfg.uri!r},
                )
            """
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

    client = client_for(cfg)
    history = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 3.0), (1, 2.0), (2, 1.0)]
    assert client.get_run(run_id).data.metrics["tokens_per_s"] == 20.0


def test_rerun_resumes_unfinished_run_but_not_finished_one(store: Path) -> None:
    cfg = make_cfg(store, "exp-resume")
    first: list[str] = []
    with pytest.raises(KeyboardInterrupt), tracked_run(cfg, "job", resume=True) as rid:
        first.append(rid)
        raise KeyboardInterrupt
    client = client_for(cfg)
    assert client.get_run(first[0]).info.status == "KILLED"
    assert resume_run_id(cfg, "job") == first[0]

    with tracked_run(cfg, "job", params={"epochs": 2}, resume=True) as again:
        assert again == first[0]
    resumed = client.get_run(again)
    assert resumed.info.status == "FINISHED"
    assert "error" not in resumed.data.tags
    assert resumed.data.params["epochs"] == "2"

    assert resume_run_id(cfg, "job") is None
    with tracked_run(cfg, "job", resume=True) as fresh:
        assert fresh != first[0]


@pytest.fixture(scope="module")
def champion(store: Path, tiny_model_dir: Path) -> tuple[TrackingConfig, str, str]:
    """A run with the tiny model logged and registered as champion of `tiny-ner`."""
    cfg = make_cfg(store, "exp-models")
    with tracked_run(cfg, "train-tiny") as run_id:
        uri = log_hf_model(run_id, tiny_model_dir, metadata=METADATA, cfg=cfg)
    assert uri == f"runs:/{run_id}/model"
    version = register_champion(cfg, run_id, "tiny-ner")
    return cfg, run_id, version


def test_logged_model_round_trips_weights_without_pickles(
    champion: tuple[TrackingConfig, str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    cfg, run_id, version = champion
    expected = state_dict_of(tiny_model_dir)
    assert not (tiny_model_dir / METADATA_FILE).exists()  # source left untouched

    for uri in (
        f"runs:/{run_id}/model",
        "models:/tiny-ner@champion",
        f"models:/tiny-ner/{version}",
    ):
        hf_dir = download_model_dir(uri, dst_path=tmp_path / uri.replace("/", "_"))
        assert (hf_dir / "model.safetensors").is_file(), uri
        assert json.loads((hf_dir / METADATA_FILE).read_text()) == METADATA
        assert_same_weights(expected, state_dict_of(hf_dir))
        model_root = hf_dir.parents[1]
        assert (model_root / "MLmodel").is_file()
        files = [p for p in model_root.rglob("*") if p.is_file()]
        assert not [p for p in files if p.suffix in {".pkl", ".pickle", ".bin", ".pt"}], files

    # A local directory resolves in place, whether the HF dir or the MLflow model root.
    assert download_model_dir(str(hf_dir)) == hf_dir
    assert download_model_dir(str(model_root)) == hf_dir


def test_pyfunc_loads_offline_and_exposes_hf_dir(champion: tuple[TrackingConfig, str, str]) -> None:
    cfg, run_id, _ = champion
    setup(cfg)
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    inner = loaded.unwrap_python_model()
    assert isinstance(inner, BiognerHFModel)
    assert inner.hf_dir is not None and (inner.hf_dir / "config.json").is_file()
    assert inner.metadata == METADATA
    assert loaded.metadata.metadata["biogner"] == METADATA


def test_mlflows_own_pyfunc_predicts_entities_with_offsets(store: Path, tmp_path: Path) -> None:
    """`mlflow.pyfunc.load_model(uri).predict` (what `mlflow models serve` and `spark_udf`
    call) runs the model: one JSON list of entities per text, offsets into that text."""
    import pandas as pd
    from conftest import write_noise_model

    cfg = make_cfg(store, "pyfunc")
    model_dir = write_noise_model(tmp_path / "noise", seed=5)
    card = {"format": "multi_term", "entity_types": ["Chemical", "Disease"], "base_model": "t"}
    with tracked_run(cfg, "pyfunc") as run_id:
        log_hf_model(run_id, model_dir, metadata=card, cfg=cfg)
    setup(cfg)
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    signature = loaded.metadata.signature
    assert signature is not None and signature.inputs.input_names() == ["text", "entity_types"]
    assert {p.name for p in signature.params.params} == {
        "entity_types",
        "batch_size",
        "max_new_tokens_cap",
        "min_score",
    }
    assert "entity_types" in [c.name for c in signature.inputs.inputs]  # optional column
    texts = [
        "Aspirin and ibuprofen relieve fever in patients with arthritis.",
        "Cisplatin caused renal failure.",
        "",
    ]
    out = loaded.predict(pd.DataFrame({"text": texts}))
    rows = [json.loads(r) for r in out]
    assert len(rows) == 3 and rows[2] == []
    # a dict of columns, as `{"inputs": {"text": [...]}}` sends it (MLflow packs it in a row)
    assert len(loaded.predict({"text": texts[:2]})) == 2
    found = [e for row in rows for e in row]
    assert found, "the noise model marks something under the grammar"
    for text, row in zip(texts, rows, strict=True):
        for e in row:
            assert text[e["start"] : e["end"]] == e["text"] and e["label"] in card["entity_types"]
    only = [
        json.loads(r)
        for r in loaded.predict(
            pd.DataFrame({"text": texts[:2]}), params={"entity_types": ["Chemical"]}
        )
    ]
    assert {e["label"] for row in only for e in row} <= {"Chemical"}
    # each row its own types (a column), rows without any get the default (every type)
    frame = pd.DataFrame(
        {"text": texts[:2] * 2, "entity_types": [["Chemical"], ["Disease"], None, []]}
    )
    per_row = [json.loads(r) for r in loaded.predict(frame)]
    assert {e["label"] for e in per_row[0]} <= {"Chemical"}
    assert {e["label"] for e in per_row[1]} <= {"Disease"}
    assert {e["label"] for row in per_row[2:] for e in row} <= set(card["entity_types"])
    for text, row in zip(texts[:2] * 2, per_row, strict=True):
        assert all(text[e["start"] : e["end"]] == e["text"] for e in row)
    with pytest.raises(Exception, match="unknown entity types \\['Gene'\\]"):
        loaded.predict(pd.DataFrame({"text": texts[:1]}), params={"entity_types": ["Gene"]})


@pytest.mark.parametrize("old_import", ["from biogner.tracking", "from biogner.tracking.models"])
def test_a_model_logged_with_an_older_entry_still_loads(
    store: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, old_import: str
) -> None:
    """Logged models carry their pyfunc entry as code; older ones import the class from
    `biogner.tracking` (before it was a package) or `biogner.tracking.models` (before
    `biogner.pyfunc`), and stores keep such models: both still load (forwarded)."""
    import biogner.tracking.models as models

    old_entry = ENTRY_CODE.replace("from biogner.pyfunc.model", old_import)
    assert f"{old_import} import BiognerHFModel" in old_entry
    monkeypatch.setattr(models, "ENTRY_CODE", old_entry)
    cfg = make_cfg(store, f"exp-old-entry-{old_import.count('.')}")
    with tracked_run(cfg, "old-entry") as run_id:
        log_hf_model(run_id, tiny_model_dir, metadata=METADATA, cfg=cfg)
    setup(cfg)
    inner = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").unwrap_python_model()
    assert isinstance(inner, BiognerHFModel) and inner.metadata == METADATA


def test_champion_alias_moves_to_the_new_version(
    champion: tuple[TrackingConfig, str, str], tiny_model_dir: Path
) -> None:
    cfg, first_run, first_version = champion
    current = get_alias_version(cfg, "tiny-ner", "champion")
    assert current is not None and str(current.version) == first_version

    with tracked_run(cfg, "train-tiny-2") as second_run:
        log_hf_model(second_run, tiny_model_dir, metadata=METADATA, cfg=cfg)
    second_version = register_champion(cfg, second_run, "tiny-ner")

    assert int(second_version) == int(first_version) + 1
    moved = get_alias_version(cfg, "tiny-ner", "champion")
    assert moved is not None
    assert str(moved.version) == second_version
    assert moved.run_id == second_run != first_run
    assert get_alias_version(cfg, "tiny-ner", "no-such-alias") is None
    assert get_alias_version(cfg, "no-such-model", "champion") is None


def test_only_a_ready_version_is_servable(
    store: Path, tiny_model_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cfg = make_cfg(store, "exp-ready")
    with tracked_run(cfg, "train-ready") as run_id:
        log_hf_model(run_id, tiny_model_dir, metadata=METADATA, cfg=cfg)
    capfd.readouterr()
    version = register_champion(cfg, run_id, "ready-ner")
    printed = capfd.readouterr()
    # mlflow.register_model printed "Successfully registered model ..." on the demo's console
    assert "registered" not in printed.err + printed.out
    assert "Created version" not in printed.err + printed.out
    check_model_version(cfg, "ready-ner", version)  # READY with its files

    def set_status(status: str, message: str | None = None) -> None:
        with contextlib.closing(sqlite3.connect(cfg.uri.removeprefix("sqlite:///"))) as db, db:
            db.execute(
                "UPDATE model_versions SET status = ?, status_message = ? WHERE name = ?",
                (status, message, "ready-ner"),
            )

    set_status("FAILED_REGISTRATION", "copy failed")
    with pytest.raises(
        LookupError,
        match=rf"ready-ner version {version} \(run train-ready {run_id}, source models:/m-\w+\) "
        r"is not servable: status FAILED_REGISTRATION, not READY \(copy failed\)",
    ):
        check_model_version(cfg, "ready-ner", version)
    set_status("PENDING_REGISTRATION")
    with pytest.raises(LookupError, match="status PENDING_REGISTRATION, not READY"):
        check_model_version(cfg, "ready-ner", version, ready_timeout_s=0.3)
    later = threading.Timer(0.5, set_status, ("READY",))
    later.start()
    check_model_version(cfg, "ready-ner", version, ready_timeout_s=30)  # polled
    later.join()


def test_log_hf_model_refuses_pickled_weights(store: Path, tmp_path: Path) -> None:
    cfg = make_cfg(store, "exp-pickles")
    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    torch.save({"w": torch.zeros(2)}, model_dir / "pytorch_model.bin")
    with tracked_run(cfg, "pickled") as run_id:
        with pytest.raises(ValueError, match=r"pickle files \['pytorch_model.bin'\]"):
            log_hf_model(run_id, model_dir, metadata=METADATA, cfg=cfg)
        with pytest.raises(ValueError, match="not a HF model directory"):
            log_hf_model(run_id, tmp_path, metadata=METADATA, cfg=cfg)


def test_an_alias_lookup_writes_nothing_and_keeps_mlflows_uri(
    champion: tuple[TrackingConfig, str, str], tmp_path: Path
) -> None:
    """Replicas look the alias up every `follow_alias_s` from a thread: a lookup restored a
    deleted experiment within a minute and moved MLflow's process-wide URI under downloads."""
    cfg, _, version = champion
    client = client_for(cfg)
    experiment = client.get_experiment_by_name(cfg.experiment)
    assert experiment is not None
    elsewhere = f"sqlite:///{tmp_path / 'other.db'}"
    mlflow.set_tracking_uri(elsewhere)
    client.delete_experiment(experiment.experiment_id)
    try:
        found = get_alias_version(cfg, "tiny-ner", "champion")
        assert found is not None and int(found.version) >= int(version)
        assert client.get_experiment(experiment.experiment_id).lifecycle_stage == "deleted"
        assert mlflow.get_tracking_uri() == elsewhere
    finally:
        client.restore_experiment(experiment.experiment_id)
        mlflow.set_tracking_uri(cfg.uri)


@pytest.mark.parametrize("escape", ["../outside", "/etc", ".", "hf/../../outside"])
def test_a_model_whose_mlmodel_points_outside_itself_is_refused(tmp_path: Path, escape: str):
    """The MLmodel's artifact path is data from the store: never a way to any directory."""
    from biogner.tracking.models import hf_dir_in

    root = tmp_path / "model"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (root / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: x\n    artifacts:\n"
        f"      {HF_ARTIFACT_KEY}:\n        path: {escape}\n"
    )
    with pytest.raises(ValueError, match="not inside the model"):
        hf_dir_in(root)
    (root / "MLmodel").write_text(
        (root / "MLmodel").read_text().replace(f"path: {escape}", "path: artifacts/hf")
    )
    assert hf_dir_in(root) == (root / "artifacts" / "hf").resolve()
