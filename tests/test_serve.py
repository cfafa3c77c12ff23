"""The Ray Serve NER endpoint, for real: Serve on 127.0.0.1, HTTP with httpx, a tiny model
built from config, a SQLite MLflow registry for the champion swap. Nothing is mocked.

The tiny random model rarely finds entities, so no test depends on how many it finds; the
offset mapping is proven with real formats in test_serve_text.py, and here every entity the
service returns must index its text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import write_noise_model
from serve_support import (
    API_KEY,
    META,
    app_config,
    log_version,
    save_tiny_model,
    tracking_args,
)
from support import free_port, wait_until

from biogner.cli.serve import add_serve_command
from biogner.config import ConfigError
from biogner.models.config import GenerationConfig
from biogner.runtime import compute_runtime_env
from biogner.serve.app import build_application, parse_config

ROOT = Path(__file__).parents[1]
APP = "biogner-test"


# --------------------------------------------------------------------------- config (no Ray)


def test_config_refuses_batches_that_can_never_fill() -> None:
    with pytest.raises(ConfigError, match=r"max_ongoing_requests \(8\) must be >= .* = 16"):
        parse_config({"batching": {"max_batch_size": 16}, "model": {"max_ongoing_requests": 8}})
    with pytest.raises(ConfigError, match="= 32"):
        parse_config(
            {
                "batching.max_batch_size": "16",
                "batching.max_concurrent_batches": "2",
                "model.max_ongoing_requests": "20",
            }
        )
    with pytest.raises(ConfigError, match="ingress.max_ongoing_requests"):
        parse_config({"ingress": {"max_ongoing_requests": 4}})


def test_config_refuses_autoscaling_target_at_or_above_the_cap() -> None:
    with pytest.raises(ConfigError, match="target_ongoing_requests"):
        parse_config(
            {"model": {"max_ongoing_requests": 16, "autoscaling": {"target_ongoing_requests": 16}}}
        )
    with pytest.raises(ConfigError, match="model.nmu_replicas"):
        parse_config({"model": {"nmu_replicas": 2}})


def test_serve_run_style_args_are_parsed() -> None:
    cfg = parse_config({"model_uri": "runs:/abc/model", "batching.max_batch_size": "4"})
    assert cfg.model_uri == "runs:/abc/model" and cfg.batching.max_batch_size == 4


def test_replicas_get_the_compute_env_under_the_users_runtime_env(monkeypatch) -> None:
    from biogner.serve.application import with_compute_env

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    ours = compute_runtime_env()["env_vars"]
    assert with_compute_env({"num_cpus": 1}) == {"num_cpus": 1, "runtime_env": {"env_vars": ours}}
    user = {"env_vars": {"RAY_worker_niceness": "5", "MY_VAR": "x"}, "working_dir": "/srv"}
    merged = with_compute_env({"num_cpus": 2, "runtime_env": user})
    assert merged["num_cpus"] == 2 and merged["runtime_env"]["working_dir"] == "/srv"
    assert merged["runtime_env"]["env_vars"] == {**ours, "RAY_worker_niceness": "5", "MY_VAR": "x"}
    assert user["env_vars"] == {"RAY_worker_niceness": "5", "MY_VAR": "x"}  # not modified


@pytest.mark.parametrize("name", ["local.yaml", "gpu.yaml"])
def test_config_files_are_valid_serve_configs(name: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    data = yaml.safe_load((ROOT / "serve_configs" / name).read_text())
    schema = ServeDeploySchema.model_validate(data)
    app = data["applications"][0]
    # Local binds loopback only; in a cluster the proxies listen on the pod network (KubeRay's
    # Service reaches them at the pod IP) and the API key is read from the environment.
    expected_host = "127.0.0.1" if name == "local.yaml" else "0.0.0.0"
    assert schema.http_options.host == expected_host
    assert app["args"]["api_key_env"] == "BIOGNER_API_KEY"
    assert app["import_path"] == "biogner.serve.app:build_app"
    cfg = parse_config(app["args"])
    build_application(cfg)  # binds deployments with their options: nothing starts
    if name == "gpu.yaml":
        assert cfg.model.ray_actor_options["num_gpus"] == 1
        auto = cfg.model.autoscaling
        assert auto is not None and auto.min_replicas == 1 and auto.max_replicas > 1
        assert auto.target_ongoing_requests < cfg.model.max_ongoing_requests
    else:
        assert cfg.generation.device == "cpu" and cfg.model.num_replicas == 1


def test_cli_check_prints_the_resolved_config(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BIOGNER_HOME", str(tmp_path))
    # mlflow.set_tracking_uri (any earlier test that evaluated) exports this variable
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    parser = argparse.ArgumentParser()
    add_serve_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "serve",
            "--config",
            str(ROOT / "serve_configs" / "local.yaml"),
            "--model",
            "models:/x@champion",
            "--set",
            "batching.max_batch_size=8",
            "--check",
        ]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["host"] == "127.0.0.1" and out["model_uri"] == "models:/x@champion"
    assert out["batching"]["max_batch_size"] == 8
    assert out["tracking"]["tracking_uri"] == f"sqlite:///{tmp_path}/.biogner/mlflow.db"
    store = f"sqlite:///{tmp_path}/other.db"
    args = parser.parse_args(["serve", "--tracking-uri", store, "--check"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["tracking"]["tracking_uri"] == store
    bad = parser.parse_args(["serve", "--set", "model.max_ongoing_requests=1", "--check"])
    assert bad.func(bad) == 2


# --------------------------------------------------------------------------- live service


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("served") / "tiny")


@pytest.fixture(scope="module")
def service(ray_session, model_dir, tmp_path_factory):
    from ray import serve

    store = tmp_path_factory.mktemp("serve-store")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = app_config(str(model_dir), store)
    serve.run(build_application(cfg), name=APP, route_prefix="/")
    yield {"url": f"http://127.0.0.1:{port}", "store": store, "model_dir": model_dir}
    serve.shutdown()


@pytest.fixture
def client(service):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=service["url"], headers=headers, timeout=60) as c:
        yield c


def assert_entities_index_texts(texts: list[str], body: dict[str, Any]) -> None:
    assert len(body["results"]) == len(texts)
    for text, result in zip(texts, body["results"], strict=True):
        assert isinstance(result["truncated"], bool)
        for ent in result["entities"]:
            assert 0 <= ent["start"] < ent["end"] <= len(text)
            assert text[ent["start"] : ent["end"]] == ent["text"]
            assert ent["label"] in body["entity_types"]
            assert 0.0 <= ent["score"] <= 1.0  # every entity is scored


async def post_many(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as c:
        return list(await asyncio.gather(*(c.post("/v1/extract", json=b) for b in bodies)))


def test_demo_refuses_a_busy_port_with_a_clear_error(tmp_path) -> None:
    from biogner.serve.demo import serve_and_query
    from biogner.serve.local import ServeStartError
    from biogner.tracking.config import TrackingConfig

    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeStartError, match=f"127.0.0.1:{port} is already in use"):
            serve_and_query("models:/x@champion", tracking, port, "text")


def test_health_readiness_model_and_openapi(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["model"]["name"] == "tiny"  # details with the key, none without:
    assert httpx.get(client.base_url.join("/readyz")).json() == {"status": "ready"}
    info = client.get("/v1/model").json()
    assert info["format"] == "conv_term" and info["entity_types"] == ["Disease"]
    assert info["base_model"] == "tiny-llama" and info["model"]["name"] == "tiny"
    assert info["constrained"] is True  # the default, and conv_term has a grammar
    assert info["overruled"] == GenerationConfig().overruled
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/extract"]["post"]
    assert "texts" in json.dumps(post["requestBody"]) and "422" in post["responses"]
    assert {"/healthz", "/readyz", "/v1/model", "/v1/stats"} <= set(spec["paths"])


def test_the_replica_runs_at_full_priority_on_the_chosen_allocator(
    client, workers_on_jemalloc: bool
) -> None:
    """Ray starts actors at nice 15 on glibc's allocator; a model replica gets nice 0 and
    jemalloc where the machine has it, and says so in /v1/stats."""
    stats = client.get("/v1/stats").json()
    assert stats["process"] == {"niceness": 0, "jemalloc": workers_on_jemalloc}


def test_api_key_is_required_when_set(service) -> None:
    with httpx.Client(base_url=service["url"], timeout=30) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
            r = c.post("/v1/extract", json={"texts": ["x"]}, headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"]["field"] == "authorization"
            assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/model").status_code == 401
        assert c.get("/healthz").status_code == 200  # probes stay open


BAD_REQUESTS: list[tuple[str, bytes, int, str]] = [
    ("empty body", b"", 400, "body"),
    ("not JSON", b'{"texts": [', 400, "body"),
    ("not UTF-8", b'{"texts": ["caf\xe9"]}', 400, "body"),
    ("not an object", b'["a"]', 422, "body"),
    ("missing texts", b'{"text": ["a"]}', 422, "texts"),
    ("texts not a list", b'{"texts": "a"}', 422, "texts"),
    ("text not a string", b'{"texts": ["a", 3]}', 422, "texts[1]"),
    ("types not a list", b'{"texts": ["a"], "entity_types": "Disease"}', 422, "entity_types"),
    ("no texts", b'{"texts": []}', 422, "texts"),
    ("too many texts", json.dumps({"texts": ["a"] * 5}).encode(), 422, "texts"),
    ("text too long", json.dumps({"texts": ["a", "b " * 1001]}).encode(), 422, "texts[1]"),
    ("body too big", json.dumps({"texts": ["a" * 30000]}).encode(), 413, "body"),
    ("too many windows", json.dumps({"texts": ["Ab. " * 500] * 4}).encode(), 413, "texts"),
    ("no types", b'{"texts": ["a"], "entity_types": []}', 422, "entity_types"),
    (
        "too many types",
        json.dumps({"texts": ["a"], "entity_types": ["D"] * 4}).encode(),
        422,
        "entity_types",
    ),
]


def test_bad_requests_get_a_json_4xx_naming_the_field(client) -> None:
    for what, body, status, field in BAD_REQUESTS:
        r = client.post("/v1/extract", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, (what, r.text)
        err = r.json()["error"]
        assert err["field"] == field, (what, err)
        assert err["message"] and err["code"], what
    r = client.post("/v1/extract", json={"texts": ["a"], "entity_types": ["Gene", "Disease", "X"]})
    assert r.status_code == 422
    assert "['Gene', 'X']" in r.json()["error"]["message"]
    assert client.get("/v1/nope").json()["error"]["code"] == "http_error"
    flood = client.post("/v1/extract", json={"texts": ["Ab. " * 500] * 4}).json()["error"]
    assert flood["code"] == "too_many_windows" and "more than 16" in flood["message"]
    assert "limits.max_windows" in flood["message"]
    # nothing crashed: the service still answers
    ok = client.post("/v1/extract", json={"texts": ["Colon cancer."]})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 1


def test_extraction_offsets_index_the_texts(client) -> None:
    texts = [
        "Patients with Parkinson's disease (PD) got 5-FU. The APC gene, e.g. APC2, was mutated!",
        "Naïve T-cells\tand β-blockers:\n\nno   ataxia-telangiectasia 😀 in 2 of 3 cases.",
        "x" * 300 + " tail",  # one token longer than window_chars: cut, flagged
        " ".join(["word"] * 60),  # longer than window_tokens: several windows
    ]
    r = client.post("/v1/extract", json={"texts": texts, "entity_types": ["Disease"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_entities_index_texts(texts, body)
    assert [res["truncated"] for res in body["results"]] == [False, False, True, False]
    assert body["format"] == "conv_term" and body["entity_types"] == ["Disease"]
    assert body["model"]["uri"].endswith("tiny") and body["batch"]["windows"] >= 7


def test_concurrent_requests_are_batched(client, service) -> None:
    before = client.get("/v1/stats").json()
    bodies = [{"texts": [f"Case {i}: colon cancer and fever."]} for i in range(24)]
    responses = asyncio.run(post_many(service["url"], bodies))
    assert [r.status_code for r in responses] == [200] * 24
    after = client.get("/v1/stats").json()
    batches = after["batches"] - before["batches"]
    requests = after["requests"] - before["requests"]
    assert requests == 24 and batches < 24
    assert requests / batches > 1.0, after
    assert max(r.json()["batch"]["requests"] for r in responses) > 1


def test_a_burst_over_the_queue_gets_503_with_retry_after(client, service) -> None:
    async def burst() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(
            base_url=service["url"], headers=headers, timeout=120, limits=limits
        ) as c:
            bodies = [{"texts": [f"Burst {i}: fever."]} for i in range(150)]
            return list(await asyncio.gather(*(c.post("/v1/extract", json=b) for b in bodies)))

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 503 in codes and 200 in codes, codes
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "5" and r.json()["error"]["code"] == "unavailable"
            assert "max_queued_requests" not in r.text  # Serve's own message stays in the log
    assert client.post("/v1/extract", json={"texts": ["Fever."]}).status_code == 200


GROUPS = [["Disease", "Chemical"], ["Species"]]


def register_champion(store: Path) -> str:
    """Log another model as champion: a multi-corpus card (three types learned in two groups,
    another format), noise weights whose constrained answers do mark entities."""
    model_dir = write_noise_model(store / "noise-model", seed=5)
    meta = {
        **META,
        "format": "multi_term",
        "entity_types": ["Disease", "Chemical", "Species"],
        "type_groups": GROUPS,
        "corpora": ["BC5CDR", "s800"],
    }
    return log_version(store, model_dir, "ner-tiny", meta)[0]


def test_a_redeploy_with_another_model_drops_no_request(client, service) -> None:
    """`serve.run` with another model replaces the replica (Serve gives every `serve.run` a
    new code version); requests in flight finish, later ones wait for the new replica. The
    in-place swaps (alias moves, user_config updates) are in test_serve_follow.py."""
    from ray import serve

    version = register_champion(service["store"])
    old = client.get("/v1/model").json()
    cfg = app_config("models:/ner-tiny@champion", service["store"])
    swapped = threading.Event()

    def swap() -> None:
        serve.run(build_application(cfg), name=APP, route_prefix="/")
        swapped.set()

    async def traffic() -> list[httpx.Response]:
        out: list[httpx.Response] = []
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=service["url"], headers=headers, timeout=120) as c:
            while not swapped.is_set() or len(out) < 16:
                wave = [
                    c.post("/v1/extract", json={"texts": [f"Wave {len(out)}: cancer {k}."]})
                    for k in range(8)
                ]
                out += await asyncio.gather(*wave)
        return out

    thread = threading.Thread(target=swap)
    thread.start()
    responses = asyncio.run(traffic())
    thread.join(timeout=120)
    assert swapped.is_set()
    assert [r.status_code for r in responses] == [200] * len(responses)  # none dropped
    uris = [r.json()["model"]["uri"] for r in responses]
    assert uris[-1] == "models:/ner-tiny@champion"
    info = client.get("/v1/model").json()
    assert info["model"] == {
        "name": "ner-tiny",
        "version": version,
        "uri": "models:/ner-tiny@champion",
        "run_id": info["model"]["run_id"],
    }
    assert info["model"]["run_id"] and info["format"] == "multi_term"
    assert info["replica"] != old["replica"]
    r = client.post(
        "/v1/extract", json={"texts": ["Aspirin for fever."], "entity_types": ["Chemical"]}
    )
    assert r.status_code == 200 and r.json()["entity_types"] == ["Chemical"]


TYPED_TEXTS = [
    "Aspirin and ibuprofen relieve fever in mice with arthritis.",
    "Cisplatin caused renal failure in rats and in patients with cancer.",
    "Escherichia coli infection was treated with penicillin in children.",
    "Zebrafish embryos exposed to ethanol developed cardiac edema.",
]


def labels_of(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {e["label"] for res in response.json()["results"] for e in res["entities"]}


def test_a_multi_corpus_model_routes_the_requested_types(client, service) -> None:
    """After the redeploy above: a model that learned (Disease, Chemical) and (Species)."""
    info = client.get("/v1/model").json()
    assert info["entity_types"] == ["Disease", "Chemical", "Species"]
    assert info["type_groups"] == GROUPS and info["corpora"] == ["BC5CDR", "s800"]
    every = labels_of(client.post("/v1/extract", json={"texts": TYPED_TEXTS}))
    assert {"Chemical", "Species"} <= every  # both groups asked, both answer
    for wanted in (["Chemical"], ["Species"], ["Species", "Disease"]):
        r = client.post("/v1/extract", json={"texts": TYPED_TEXTS, "entity_types": wanted})
        found = labels_of(r)
        assert found and found <= set(wanted)
        assert r.json()["entity_types"] == [t for t in info["entity_types"] if t in wanted]
        assert_entities_index_texts(TYPED_TEXTS, r.json())
    # min_score keeps the surer entities of the same answers
    every = client.post("/v1/extract", json={"texts": TYPED_TEXTS}).json()["results"]
    scores = sorted(e["score"] for res in every for e in res["entities"])
    cut = scores[len(scores) // 2]
    r = client.post("/v1/extract", json={"texts": TYPED_TEXTS, "min_score": cut})
    kept = [e for res in r.json()["results"] for e in res["entities"]]
    assert kept == [e for res in every for e in res["entities"] if e["score"] >= cut]
    bad = client.post("/v1/extract", json={"texts": TYPED_TEXTS, "min_score": 2})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "min_score"
    r = client.post("/v1/extract", json={"texts": ["Fever."], "entity_types": ["Species", "GENE"]})
    error = r.json()["error"]
    assert r.status_code == 422 and error["field"] == "entity_types" and "GENE" in error["message"]


FRESH_PROCESS_PREDICT = """
import json, sys
import mlflow, pandas as pd
import biogner
from biogner.models.config import GenerationConfig
texts, types, cap = json.loads(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/ner-tiny@champion")
frame = pd.DataFrame({"text": texts, "entity_types": [types] * len(texts)})
pyfunc = [json.loads(r) for r in model.predict(frame, params={"max_new_tokens_cap": cap})]
m = biogner.load("models:/ner-tiny@champion", generation=GenerationConfig(max_new_tokens_cap=cap))
api = [[e.model_dump() for e in row] for row in m.extract(texts, entity_types=types)]
print(json.dumps({"pyfunc": pyfunc, "api": api}))
"""


def test_the_python_api_and_mlflows_pyfunc_answer_as_the_endpoint(client, service) -> None:
    """After the redeploy above, the champion through `biogner.load(...).extract` and through
    MLflow's own loader, in a new Python process that has biogner installed, gives the
    endpoint's entities (offsets, labels, scores) for the same texts."""
    info = client.get("/v1/model").json()
    assert info["model"]["uri"] == "models:/ner-tiny@champion"
    cap = 16  # the endpoint's generation.max_new_tokens_cap (serve_support.app_config)
    for types in (["Chemical", "Disease"], ["Species"]):
        r = client.post("/v1/extract", json={"texts": TYPED_TEXTS, "entity_types": types})
        assert r.status_code == 200, r.text
        served = [res["entities"] for res in r.json()["results"]]
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_args(service["store"])["tracking_uri"]}
        env.pop("MLFLOW_REGISTRY_URI", None)
        done = subprocess.run(
            [sys.executable, "-c", FRESH_PROCESS_PREDICT, json.dumps([TYPED_TEXTS, types, cap])],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        predicted = json.loads(done.stdout.strip().splitlines()[-1])
        assert predicted["pyfunc"] == served, types
        assert predicted["api"] == served, types
        assert any(served), "the noise champion marks something"


def test_killed_replica_is_replaced(client, service) -> None:
    import ray

    before = client.get("/v1/model").json()
    old = before["replica"]
    actors = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if f"{APP}#NERModel#" in a["name"] and old in a["name"]
    ]
    assert len(actors) == 1, actors
    replica = ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"])

    async def load_then_kill() -> list[httpx.Response]:
        bodies = [{"texts": [f"Sentence {i} on asthma."] * 4} for i in range(12)]
        pending = asyncio.ensure_future(post_many(service["url"], bodies))
        await asyncio.sleep(0.05)
        ray.kill(replica, no_restart=True)
        return await pending

    responses = asyncio.run(load_then_kill())
    for r in responses:  # answered or refused as JSON, never a dropped connection
        assert r.status_code in (200, 500, 503), r.text
        if r.status_code != 200:
            assert r.json()["error"]["code"] in ("unavailable", "internal", "model_error")
    wait_until(lambda: client.get("/readyz").status_code == 200, 120, "a replacement replica", 0.5)
    info = client.get("/v1/model").json()
    assert info["replica"] != old
    assert info["model"] == before["model"]  # the new replica loads the current user_config
    after = asyncio.run(post_many(service["url"], [{"texts": ["Fever."]}] * 8))
    assert [r.status_code for r in after] == [200] * 8
