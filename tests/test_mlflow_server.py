"""The cluster path over HTTP: a real `mlflow server` (SQLite backend, proxied local artifact
store, as infra/k8s/mlflow.yaml runs it with PostgreSQL and S3) on 127.0.0.1; tiny-llama is
trained against it on Ray, evaluated, selected as champion and loaded for serving from
`models:/...@champion`. Nothing touches the store except through the server's REST API.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
from mlflow.tracking import MlflowClient
from support import free_port

from biogner.annotate.assemble import assemble
from biogner.config import load_config
from biogner.evaluate.config import EvalConfig
from biogner.evaluate.runner import run_evaluation
from biogner.models.config import GenerationConfig
from biogner.serve.loaded import load
from biogner.serve.requests import check_texts, request_windows
from biogner.serve.schema import Limits
from biogner.study.select import select_champion
from biogner.tracking.config import TrackingConfig
from biogner.train.config import TrainConfig
from biogner.train.driver import run_training

TINY = Path(__file__).parents[1] / "jobs" / "configs" / "tiny.yaml"
EXPERIMENT = "mlflow-server-path"
START_TIMEOUT_S = 90.0
SENTENCE = "Germline mutations in the BRCA1 gene predispose women to breast and ovarian cancer."


@dataclass
class Server:
    uri: str
    artifacts: Path  # the server's --artifacts-destination (clients never write there directly)
    log: Path


def _mlflow_executable() -> str:
    """The `mlflow` console script of this interpreter's environment."""
    local = Path(sys.executable).with_name("mlflow")
    return str(local) if local.is_file() else (shutil.which("mlflow") or "mlflow")


@contextmanager
def running_server(
    root: Path, extra_args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None
) -> Iterator[Server]:
    """`mlflow server` as a subprocess; stopped (SIGTERM, then SIGKILL) on exit."""
    artifacts = root / "artifacts"
    log = root / "server.log"
    port = free_port()
    cmd = [
        _mlflow_executable(),
        "server",
        *extra_args,
        "--host=127.0.0.1",
        f"--port={port}",
        "--workers=1",
        f"--backend-store-uri=sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts",
        f"--artifacts-destination={artifacts.as_uri()}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(extra_env or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{uri}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up after {START_TIMEOUT_S}s:\n{log.read_text()}")
            time.sleep(0.5)
        yield Server(uri, artifacts, log)
    finally:
        # The server forks workers: signal its whole process group (its own session).
        for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("mlflow-server")) as running:
        yield running


def test_train_evaluate_select_serve_through_an_mlflow_server(
    server: Server,
    ray_session,
    data_dir: Path,
    small_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers_on_jemalloc: bool,
) -> None:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    cfg = load_config(
        TrainConfig,
        TINY,
        [
            "run_name=tiny-over-http",
            f"tracking.tracking_uri={server.uri}",
            f"tracking.experiment={EXPERIMENT}",
            f"scaling.storage_path={tmp_path}/ray",
            f"data.converted_dir={tmp_path}/converted",
            "optim.max_steps=4",
            "optim.checkpoint_every_steps=4",
            "data.limit=32",
            "scaling.num_workers=1",  # the distributed path is tests/test_train.py's
        ],
    )
    # A remote server owns the artifact root: the client must not impose a local one.
    assert cfg.tracking.artifact_root is None

    trained = run_training(cfg)
    assert trained.status == "FINISHED" and trained.steps == 4
    client = MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    run = client.get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied by the server
    assert sorted(m.step for m in client.get_metric_history(trained.run_id, "loss")) == [1, 2, 3, 4]
    # The model went over HTTP into the server's artifact destination, not a client path.
    assert list(server.artifacts.rglob("biogner_model.json")), f"no model in {server.artifacts}"

    tracking_cfg = TrackingConfig(tracking_uri=server.uri, experiment=EXPERIMENT)
    evaluated = run_evaluation(
        EvalConfig(
            model=f"runs:/{trained.run_id}/model",
            corpus="NCBI-disease",
            split="dev",  # the whole dev split of a 40-sentence copy: selectable
            data_dir=str(small_data_dir),
            generation=GenerationConfig(batch_size=20, max_new_tokens_cap=32, device="cpu"),
            tracking=tracking_cfg,
        )
    )
    assert evaluated.parent_run_id == trained.run_id and len(evaluated.predictions) == 40
    assert evaluated.run_id is not None
    nested = client.get_run(evaluated.run_id)
    assert nested.data.tags["mlflow.parentRunId"] == trained.run_id
    assert "dev_f1" in client.get_run(trained.run_id).data.metrics
    assert nested.data.metrics["dev_worker_niceness"] == 0  # not Ray's default 15
    assert nested.data.metrics["dev_worker_jemalloc"] == float(workers_on_jemalloc)

    selection = select_champion(tracking_cfg, EXPERIMENT)  # by dev_f1
    assert selection.champion.run_id == trained.run_id and selection.registered
    mv = client.get_model_version_by_alias(selection.model_name, "champion")
    assert mv.run_id == trained.run_id and str(mv.version) == selection.version
    assert mv.tags["format"] == "conv_term"

    loaded = load(
        f"models:/{selection.model_name}@champion",
        TrackingConfig(tracking_uri=server.uri),
        GenerationConfig(batch_size=4, max_new_tokens_cap=32, device="cpu"),
    )
    try:
        assert loaded.ref.version == selection.version and loaded.ref.run_id == trained.run_id
        assert loaded.format == "conv_term" and loaded.entity_types == ["Disease"]
        limits = Limits()
        check_texts([SENTENCE], limits)
        windows = request_windows([SENTENCE], limits)
        generations = loaded.generator.extract(
            [w.sentence for w in windows[0]], loaded.format, loaded.entity_types
        )
        (result,) = assemble([SENTENCE], windows, generations)
    finally:
        loaded.close()
    assert loaded.download_dir is None
    # An untrained tiny model finds little; what it finds must index the text as sent.
    for ent in result.entities:
        assert SENTENCE[ent.start : ent.end] == ent.text and ent.label == "Disease"
    assert all(len(g.answers) == 1 for g in generations)  # conv_term: one turn per type


# --------------------------------------------------------------------------- basic auth

INFRA_MLFLOW = Path(__file__).parents[1] / "infra" / "k8s" / "mlflow.yaml"
ADMIN_PASSWORD = "admin-pass-for-tests-only"


def _auth_env(root: Path) -> dict[str, str]:
    """The auth settings of infra/k8s/mlflow.yaml's server container: the ini its init
    container writes (its own script, run here; the auth database on SQLite instead of the
    cluster's PostgreSQL), and a test value for each key it reads from the Secret mlflow-auth."""
    import yaml

    (deployment,) = [
        d
        for d in yaml.safe_load_all(INFRA_MLFLOW.read_text(encoding="utf-8"))
        if d and d["kind"] == "Deployment"
    ]
    pod = deployment["spec"]["template"]["spec"]
    secrets = {"admin-username": "admin", "admin-password": ADMIN_PASSWORD}
    env = {}
    for var in pod["containers"][0]["env"]:
        ref = var.get("valueFrom", {}).get("secretKeyRef", {})
        if ref.get("name") == "mlflow-auth":
            env[var["name"]] = secrets.get(ref["key"], f"test-{ref['key']}")
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(_auth_ini(root, pod))
    return env


def _auth_ini(root: Path, pod: dict[str, Any]) -> Path:
    import configparser

    (init,) = pod["initContainers"]
    (mount,) = init["volumeMounts"]
    script = init["args"][0].replace(mount["mountPath"], str(root))
    env = {"DB_USER": "u", "DB_PASSWORD": "p", "DB_NAME": "d"}
    subprocess.run([*init["command"], script], env=env, check=True)
    (ini,) = root.glob("*.ini")
    config = configparser.ConfigParser()
    config.read(ini)
    config["mlflow"]["database_uri"] = f"sqlite:///{root / 'auth.db'}"
    with ini.open("w") as f:
        config.write(f)
    return ini


@pytest.mark.slow  # a real `mlflow server` (its workers, a model logged over HTTP): minutes
def test_basic_auth_keeps_the_champion_alias_to_its_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cluster's MLflow (infra/k8s/mlflow.yaml: basic auth, NO_PERMISSIONS by default): no
    request without an account; biogner's own code, logged in through its environment, logs,
    registers and moves the alias; another account can neither read nor move it."""
    from serve_support import META, log_version, save_tiny_model

    from biogner.tracking.registry import get_alias_version

    root = tmp_path / "server"
    root.mkdir()
    with running_server(root, ("--app-name=basic-auth",), _auth_env(root)) as srv:
        # (the first request of a basic-auth server sets up its users' store: seconds on a
        # busy 2-core box, past httpx's 5 s default once, 2026-12-06)
        unauthenticated = httpx.get(f"{srv.uri}/api/2.0/mlflow/experiments/search", timeout=60)
        assert unauthenticated.status_code == 401
        for user in ("biogner", "intruder"):  # as infra/README.md creates the pods' account
            created = httpx.post(
                f"{srv.uri}/api/2.0/mlflow/users/create",
                json={"username": user, "password": f"{user}-password"},
                auth=("admin", ADMIN_PASSWORD),
                timeout=60,
            )
            assert created.status_code == 200, created.text
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "biogner")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "biogner-password")
        store = tmp_path / "unused-store"
        monkeypatch.setattr("serve_support.tracking_args", lambda _: {"tracking_uri": srv.uri})
        version, run_id = log_version(store, save_tiny_model(tmp_path / "m"), "biogner", META)
        cfg = TrackingConfig(tracking_uri=srv.uri)
        champion = get_alias_version(cfg, "biogner", "champion")
        assert champion is not None and str(champion.version) == version

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "intruder")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "intruder-password")
        intruder = MlflowClient(tracking_uri=srv.uri, registry_uri=srv.uri)
        with pytest.raises(mlflow.exceptions.MlflowException, match="Permission denied"):
            intruder.set_registered_model_alias("biogner", "champion", version)
        with pytest.raises(mlflow.exceptions.MlflowException, match="Permission denied"):
            intruder.get_run(run_id)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(mlflow.exceptions.MlflowException, match="401|nauthorized"):
            MlflowClient(tracking_uri=srv.uri).search_experiments()
