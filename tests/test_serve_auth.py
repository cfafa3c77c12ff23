"""The endpoint's API-key rules without Ray: the key is stripped, `require_auth` refuses to start
without one (naming the variable), the cluster config requires it and the local one does not,
and the Ingress deployment applies all of that (its class constructed directly, no replica)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.requests import Request

from biogner.serve.auth import MissingAPIKeyError, api_key_from_env
from biogner.serve.schema import ServeConfig

ROOT = Path(__file__).resolve().parents[1]
ENV = "BIOGNER_TEST_API_KEY"


def serve_args(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "serve_configs" / name).read_text(encoding="utf-8"))
    args: dict[str, Any] = data["applications"][0]["args"]
    return args


@pytest.mark.parametrize("raw", ["s3cret", "s3cret\n", "  s3cret\r\n", "\ts3cret "])
def test_key_is_stripped_of_surrounding_whitespace(raw: str) -> None:
    assert api_key_from_env(ENV, require=False, environ={ENV: raw}) == "s3cret"
    assert api_key_from_env(ENV, require=True, environ={ENV: raw}) == "s3cret"


@pytest.mark.parametrize("environ", [{}, {ENV: ""}, {ENV: " \n"}])
def test_no_key_means_no_auth_unless_required(environ: dict[str, str]) -> None:
    assert api_key_from_env(ENV, require=False, environ=environ) is None
    state = "unset" if ENV not in environ else "blank"
    with pytest.raises(MissingAPIKeyError, match=rf"{ENV} is {state}.*will not start"):
        api_key_from_env(ENV, require=True, environ=environ)


def test_require_auth_is_off_locally_and_on_in_the_cluster_config() -> None:
    assert ServeConfig().require_auth is False  # `biogner serve` without a config
    assert ServeConfig.model_validate(serve_args("local.yaml")).require_auth is False
    gpu = ServeConfig.model_validate(serve_args("gpu.yaml"))
    assert gpu.require_auth is True and gpu.api_key_env == "BIOGNER_API_KEY"
    with pytest.raises(ValueError, match="api_key_env"):
        ServeConfig.model_validate({"api_key_env": ""})


def _ingress_class() -> Any:
    """The user class under Serve's deployment and ASGI wrappers (their constructor is async
    and belongs to a replica)."""
    from biogner.serve.http import Ingress

    wrapper = Ingress.func_or_class  # type: ignore[attr-defined]
    return next(c for c in wrapper.__mro__ if "_authorized" in vars(c))


def _ingress(require_auth: bool) -> Any:
    cls = _ingress_class()
    ingress = object.__new__(cls)
    cls.__init__(ingress, None, {}, ENV, require_auth)
    return ingress


def _request(authorization: str | None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


def test_ingress_strips_the_key_and_checks_bearer_tokens(monkeypatch) -> None:
    monkeypatch.setenv(ENV, "s3cret\n")  # a key file ending in a newline
    ingress = _ingress(require_auth=True)
    assert ingress.api_key == "s3cret"
    assert ingress._authorized(_request("Bearer s3cret"))
    assert ingress._authorized(_request("bearer  s3cret "))
    for header in (None, "", "Bearer s3cret\n-x", "Bearer wrong", "s3cret", "Basic s3cret"):
        assert not ingress._authorized(_request(header)), header


def test_ingress_refuses_to_start_without_a_required_key(monkeypatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(MissingAPIKeyError, match=ENV):
        _ingress(require_auth=True)
    open_ingress = _ingress(require_auth=False)  # local default: no key, no check
    assert open_ingress.api_key is None and open_ingress._authorized(_request(None))


def test_build_application_passes_require_auth_to_the_ingress() -> None:
    from biogner.serve.app import build_application, parse_config

    for name, expected in (("gpu.yaml", True), ("local.yaml", False)):
        app = build_application(parse_config(serve_args(name)))
        init_args = app._bound_deployment.init_args  # the Ingress's constructor arguments
        assert init_args[2:] == ("BIOGNER_API_KEY", expected), name
