"""Config modules stay import-light: reading a config (the CLI's checks, the HTTP ingress, a
Serve config) must not load torch, MLflow or Ray (#13). Checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "mlflow", "ray", "deepspeed", "matplotlib")
CONFIG_MODULES = (
    "biogner.config",
    "biogner.models.config",
    "biogner.tracking.config",
    "biogner.tracking.tags",
    "biogner.tracking.uris",
    "biogner.train.config",
    "biogner.study.config",
    "biogner.serve.schema",
)


def loaded_after_import(module: str) -> list[str]:
    code = (
        f"import json, sys, {module}\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", CONFIG_MODULES)
def test_a_config_module_imports_no_heavy_library(module: str) -> None:
    assert loaded_after_import(module) == []


def test_the_command_line_starts_without_heavy_libraries() -> None:
    """`biogner --help` and every command's parsing: the stages load when a command runs."""
    assert loaded_after_import("biogner.cli") == []


def test_the_http_ingress_loads_no_model_library() -> None:
    """It runs on every request and holds no model: Ray Serve and FastAPI only."""
    loaded = loaded_after_import("biogner.serve.http")
    assert "ray" in loaded  # the check can see what a module pulls in
    assert not {"torch", "transformers", "mlflow"} & set(loaded)
