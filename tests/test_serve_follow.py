"""The endpoint follows the registry alias (`follow_alias_s`), and the serving code's parts.

A real SQLite MLflow registry holds three versions of a tiny model: 1 and 2 load (2 with other
metadata, so that the served version shows), 3 lost its weights after registration (the
alias is moved onto it directly, as the MLflow UI allows). The replica class is exercised
directly (no Serve) for the swap rules, then a real Serve endpoint follows the alias while a
client sends requests throughout: none may fail.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml
from serve_support import API_KEY, META, app_config, log_version, save_tiny_model
from serve_support import tracking_args as store_args
from support import free_port, wait_until

from biogner.config import ConfigError
from biogner.serve.application import build_application, check_overrides, parse_config
from biogner.serve.follow import RETRY_CAP_S, AliasFollower
from biogner.serve.schema import ModelSource

ROOT = Path(__file__).parents[1]
SERVE_DIR = ROOT / "platform" / "biogner" / "serve"
NAME = "ner-follow"
APP = "biogner-follow"
META2 = {**META, "format": "multi_term", "entity_types": ["Disease", "Chemical"]}


# --------------------------------------------------------------------------- no Ray, no store


def test_serving_code_uses_no_private_ray_api() -> None:
    private = re.compile(r"\b_internal\s*=|\._deployment_config\b")
    for path in sorted(SERVE_DIR.glob("*.py")):
        assert not private.search(path.read_text()), path


def test_the_import_path_of_the_config_files_still_builds() -> None:
    import importlib

    module, _, attr = "biogner.serve.app:build_app".partition(":")
    build_app = getattr(importlib.import_module(module), attr)
    app = build_app({"model_uri": "models:/x@champion", "follow_alias_s": "5"})
    model = app._bound_deployment.init_args[0]._bound_deployment
    assert model.user_config["follow_alias_s"] == 5.0


def test_follower_takes_a_new_version_and_backs_off_a_broken_one() -> None:
    f = AliasFollower(1.0)
    assert not f.wants("2", served="2", now=0.0)
    assert f.wants("3", served="2", now=0.0)
    assert f.record_failure("3", now=0.0).retry_at == 2.0
    assert not f.wants("3", "2", now=1.9) and f.wants("3", "2", now=2.0)
    assert f.wants("4", "2", now=0.5)  # the alias moved on: tried at once
    assert f.record_failure("3", now=2.0).retry_at == 6.0  # doubled
    for _ in range(20):
        f.record_failure("3", now=10.0)
    assert f.failed is not None and f.failed.retry_at == 10.0 + RETRY_CAP_S
    assert f.record_failure("4", now=10.0).failures == 1  # another version starts over
    f.record_success()
    assert f.failed is None and f.wants("4", "2", now=10.0)
    with pytest.raises(ValueError):
        AliasFollower(0)


def test_follow_alias_s_applies_to_registry_aliases_only() -> None:
    for uri in ("models:/ner/3", "runs:/abc/model", "/models/tiny", "models:/ner@"):
        assert ModelSource(model_uri=uri, follow_alias_s=5).follow_period_s is None, uri
    alias = "models:/ner@champion"
    assert ModelSource(model_uri=alias, follow_alias_s=5).follow_period_s == 5
    assert ModelSource(model_uri=alias, follow_alias_s=0).follow_period_s is None
    assert ModelSource(model_uri=alias).follow_period_s is None  # off unless asked for
    cfg = parse_config({"model_uri": alias, "follow_alias_s": 2})
    assert cfg.model_user_config()["follow_alias_s"] == 2.0
    with pytest.raises(ConfigError, match="follow_alias_s"):
        parse_config({"follow_alias_s": -1})


def test_deployments_options_of_a_config_file_are_checked(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("BIOGNER_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = parse_config({})
    with pytest.raises(ConfigError, match=r"f\.yaml .*max_ongoing_requests \(4\) must be >="):
        check_overrides(cfg, [{"name": "NERModel", "max_ongoing_requests": 4}], "f.yaml")
    auto = {"name": "NERModel", "autoscaling_config": {"target_ongoing_requests": 64}}
    with pytest.raises(ConfigError, match="target_ongoing_requests"):
        check_overrides(cfg, [auto], "f.yaml")
    swap = {"model_uri": "models:/a@b", "follow_alias_s": -1}
    with pytest.raises(ConfigError, match=r"NERModel\.user_config: follow_alias_s"):
        check_overrides(cfg, [{"name": "NERModel", "user_config": swap}], "f.yaml")
    fine = [
        {
            "name": "NERModel",
            "max_ongoing_requests": 32,
            "user_config": {**swap, "follow_alias_s": 30},
        },
        {"name": "Ingress", "max_ongoing_requests": 64},
        {"name": "Other", "max_ongoing_requests": 1},
    ]
    check_overrides(cfg, fine, "f.yaml")

    import argparse

    from biogner.cli.serve import add_serve_command

    data = yaml.safe_load((ROOT / "serve_configs" / "local.yaml").read_text())
    data["applications"][0]["deployments"] = [{"name": "NERModel", "max_ongoing_requests": 4}]
    path = tmp_path / "starved.yaml"
    path.write_text(yaml.safe_dump(data))
    parser = argparse.ArgumentParser()
    add_serve_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--config", str(path), "--check"])
    assert args.func(args) == 2
    assert "max_ongoing_requests (4)" in capsys.readouterr().err


# --------------------------------------------------------------------------- a real registry


def set_alias(store: Path, version: str) -> None:
    """Move `champion`, as a user does in the MLflow UI (no check that it loads)."""
    from biogner.tracking.config import TrackingConfig
    from biogner.tracking.runs import client_for

    cfg = TrackingConfig(**store_args(store))
    client_for(cfg).set_registered_model_alias(NAME, "champion", version)


@pytest.fixture(scope="module")
def registry(store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from biogner.tracking.config import TrackingConfig
    from biogner.tracking.registry import logged_model_id
    from biogner.tracking.runs import client_for

    model_dir = save_tiny_model(tmp_path_factory.mktemp("follow") / "tiny")
    v1, _ = log_version(store, model_dir, NAME)
    v2, _ = log_version(store, model_dir, NAME, META2, alias="next")
    v3, run3 = log_version(store, model_dir, NAME, alias="lost")
    cfg = TrackingConfig(**store_args(store), experiment="serve-test")
    client = client_for(cfg)
    location = client.get_logged_model(logged_model_id(cfg, run3)).artifact_location
    (weights,) = Path(urlparse(location).path).rglob("model.safetensors")
    weights.unlink()  # a cleaned-up artifact store: version 3 no longer loads
    set_alias(store, v1)
    return {"store": store, "versions": (v1, v2, v3)}


def test_replica_swaps_to_the_alias_target_and_keeps_its_model_on_a_broken_one(
    registry: dict[str, Any],
) -> None:
    from biogner.serve.replica import NERModel
    from biogner.serve.requests import check_request
    from biogner.serve.scheduling import Job
    from biogner.serve.schema import Limits

    store, (v1, v2, v3) = registry["store"], registry["versions"]
    set_alias(store, v1)
    replica = NERModel.func_or_class({}, {}, {"device": "cpu", "max_new_tokens_cap": 8})  # type: ignore[attr-defined]
    source = {
        "model_uri": f"models:/{NAME}@champion",
        "tracking": store_args(store),
        "follow_alias_s": 60,
    }
    texts = ["Colon cancer."]

    async def scenario() -> None:
        await replica.reconfigure(source)
        first = replica.current
        assert first.ref.version == v1 and replica.follower.period_s == 60
        check = await replica.check_alias()
        assert check.ok and check.version == v1 and replica.current is first  # nothing new
        pinned = Job(first, texts, check_request(texts, None, Limits()), ["Disease"], 1e12, "p")

        set_alias(store, v2)
        check = await replica.check_alias()
        assert check.version == v2 and replica.current.ref.version == v2
        assert replica.current.format == "multi_term"
        assert replica.last_reload.ok and replica.last_reload.version == v2
        [outcome] = await replica._run_batch([pinned])  # validated before the swap
        assert outcome["ok"] and outcome["response"]["model"]["version"] == v1
        second = replica.current

        set_alias(store, v3)
        check = await replica.check_alias()
        assert check.ok and check.version == v3
        assert replica.current is second  # the broken version never served
        failed = replica.last_reload
        assert not failed.ok and failed.version == v3 and failed.error
        await replica.check_alias()  # within its backoff: not loaded again
        assert replica.last_reload is failed and replica.follower.failed.version == v3
        info = replica.info()
        assert info["model"]["version"] == v2 and info["last_reload"]["version"] == v3
        assert info["last_check"]["version"] == v3 and info["follow_alias_s"] == 60

        await replica.reconfigure({**source, "follow_alias_s": 30})  # the period only
        assert replica.current is second and replica.follower.period_s == 30
        await replica.reconfigure({**source, "follow_alias_s": None})
        assert replica.current is second and replica.follower is None
        assert await replica.check_alias() is None and replica.info()["follow_alias_s"] is None

    asyncio.run(scenario())


# --------------------------------------------------------------------------- a real endpoint


@pytest.fixture(scope="module")
def followed(ray_session, registry):
    from ray import serve

    set_alias(registry["store"], registry["versions"][0])
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = app_config(f"models:/{NAME}@champion", registry["store"], follow_alias_s=1)
    serve.run(build_application(cfg), name=APP, route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def wait_for(
    client: httpx.Client, done: Callable[[dict[str, Any]], bool], timeout_s: float
) -> dict[str, Any]:
    """GET /v1/model until `done(info)` (fails after `timeout_s`); the info that did it."""
    seen: list[dict[str, Any]] = []

    def check() -> bool:
        seen[:] = [client.get("/v1/model").json()]
        return done(seen[0])

    wait_until(check, timeout_s, "the endpoint's /v1/model", poll_s=0.2)
    return seen[0]


def test_the_endpoint_follows_the_alias_and_no_request_fails(followed, registry) -> None:
    store, (v1, v2, v3) = registry["store"], registry["versions"]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    served: Counter[str] = Counter()
    failures: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=followed, headers=headers, timeout=60) as c:
            while not stop.is_set():
                r = c.post("/v1/extract", json={"texts": ["Colon cancer and fever."]})
                if r.status_code == 200:
                    served[r.json()["model"]["version"]] += 1
                else:
                    failures.append((r.status_code, r.text))

    with httpx.Client(base_url=followed, headers=headers, timeout=60) as client:
        info = client.get("/v1/model").json()
        assert info["model"]["version"] == v1 and info["follow_alias_s"] == 1
        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            wait_until(lambda: served[v1] >= 2 or failures or not sender.is_alive())
            set_alias(store, v2)
            # follow_alias_s=1: it checks every second (a restart would never get there)
            info = wait_for(client, lambda i: i["model"]["version"] == v2, 20)
            assert info["format"] == "multi_term" and info["last_reload"]["ok"]
            assert info["last_check"]["ok"] and info["last_check"]["version"] == v2

            set_alias(store, v3)
            info = wait_for(client, lambda i: (i["last_reload"] or {}).get("version") == v3, 30)
            assert info["model"]["version"] == v2 and info["last_check"]["version"] == v3
            assert info["last_reload"]["ok"] is False and info["last_reload"]["error"]
            seen = served[v2]
            # still served after it
            wait_until(lambda: served[v2] >= seen + 2 or not sender.is_alive())
        finally:
            stop.set()
            sender.join(timeout=60)
        ready = client.get("/readyz").json()
        assert ready["last_reload"]["ok"] is False
    assert failures == []
    assert served[v1] >= 2 and served[v2] >= 2 and v3 not in served
