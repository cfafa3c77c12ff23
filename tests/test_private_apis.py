"""The private framework APIs biogner still leans on (DESIGN-NOTES.md, "Private framework
APIs"), checked against the installed libraries: an upgrade that renames or reshapes one
fails here, by name, instead of silently costing speed or breaking a run later.

Fast: no model, no Ray, no DeepSpeed import (DeepSpeed's source is read, not run).
"""

from __future__ import annotations

import ast
import importlib.util
import mmap
from pathlib import Path

import pytest
import torch

from biogner.generation import packed
from biogner.runtime import STARTUP_CONCURRENCY_ENV
from biogner.tracking import registry, runs, tags
from biogner.train.loop import SHM_COMM_BUILDER, SHM_COMM_MODULE


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def test_deepspeed_still_builds_its_cpu_shm_op_through_the_function_we_replace() -> None:
    """train.loop.import_deepspeed replaces `deepspeed.comm.torch.build_shm_op` (no
    arguments) so a CPU run skips a ~30 s compile; the backend must still call it by name."""
    package, _, module = SHM_COMM_MODULE.partition(".")
    source = (_package_dir(package) / (module.replace(".", "/") + ".py")).read_text()
    tree = ast.parse(source)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert SHM_COMM_BUILDER in functions, f"{SHM_COMM_MODULE}.{SHM_COMM_BUILDER} is gone"
    builder = functions[SHM_COMM_BUILDER]
    assert not builder.args.args and not builder.args.kwonlyargs, "its signature changed"
    backend = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TorchBackend")
    init = next(n for n in backend.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    called = [n.func for n in ast.walk(init) if isinstance(n, ast.Call)]
    calls = {f.id for f in called if isinstance(f, ast.Name)}
    assert SHM_COMM_BUILDER in calls, "TorchBackend builds its shm op another way now"


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch without oneDNN")
def test_onednn_packed_linear_ops_keep_their_schemas() -> None:
    """generation.packed calls `_reorder_linear_weight(weight, 64)` and
    `_linear_pointwise(x, packed, bias, "none", [], "")`; `packed.available()` would turn
    packing off silently (a one-row pass ~1.5x slower) if they went."""
    assert packed.available()
    reorder = str(torch.ops.mkldnn._reorder_linear_weight.default._schema)
    assert reorder.startswith("mkldnn::_reorder_linear_weight(Tensor self, int? batch_size")
    pointwise = str(torch.ops.mkldnn._linear_pointwise.default._schema)
    assert pointwise.startswith(
        "mkldnn::_linear_pointwise(Tensor X, Tensor W, Tensor? B, str attr, Scalar?[] scalars, "
        "str? algorithm"
    )
    linear = torch.nn.Linear(8, 4).to(torch.bfloat16)
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    assert torch.equal(packed.PackedLinear(linear)(x), linear(x))


def test_transformers_config_still_names_its_attention_implementation() -> None:
    """generation.attention reads `config._attn_implementation` (no public getter) to switch
    an `sdpa` model to the grouped-query kernel."""
    from transformers import LlamaConfig

    assert LlamaConfig(attn_implementation="sdpa")._attn_implementation == "sdpa"
    assert LlamaConfig(attn_implementation="eager")._attn_implementation == "eager"


def test_mlflow_names_we_spell_ourselves_are_still_mlflows() -> None:
    """Error codes, model version statuses and system tags are written as strings in
    tracking/ (MLflow's modules for them are internal): they must stay MLflow's."""
    from mlflow.entities.model_registry.model_version_status import ModelVersionStatus
    from mlflow.protos import databricks_pb2 as codes
    from mlflow.utils import mlflow_tags

    assert codes.ErrorCode.Name(codes.RESOURCE_ALREADY_EXISTS) == runs.ALREADY_EXISTS
    assert codes.ErrorCode.Name(codes.RESOURCE_DOES_NOT_EXIST) == runs.DOES_NOT_EXIST
    assert codes.ErrorCode.Name(codes.INVALID_PARAMETER_VALUE) == runs.INVALID_PARAMETER
    assert ModelVersionStatus.to_string(ModelVersionStatus.READY) == registry._READY
    pending = ModelVersionStatus.PENDING_REGISTRATION
    assert ModelVersionStatus.to_string(pending) == registry._PENDING
    assert tags.MLFLOW_RUN_NAME == mlflow_tags.MLFLOW_RUN_NAME
    assert tags.MLFLOW_PARENT_RUN_ID == mlflow_tags.MLFLOW_PARENT_RUN_ID


def test_mlflow_store_limits_are_still_exported() -> None:
    """tracking.runs truncates params and tags and batches metrics by the store's own
    limits, imported from `mlflow.utils.validation` so they follow the installed MLflow."""
    from mlflow.utils import validation

    for name in (
        "MAX_ENTITY_KEY_LENGTH",
        "MAX_METRICS_PER_BATCH",
        "MAX_PARAM_VAL_LENGTH",
        "MAX_PARAMS_TAGS_PER_BATCH",
        "MAX_TAG_VAL_LENGTH",
    ):
        value = getattr(validation, name, None)
        assert isinstance(value, int) and value > 0, name


@pytest.mark.parametrize("env", ["RAY_worker_niceness", STARTUP_CONCURRENCY_ENV])
def test_ray_still_reads_its_internal_settings_from_the_environment(env: str) -> None:
    """runtime.py sets two of Ray's internal config entries through `RAY_<name>` variables
    (no public option exists): workers at nice 0, not 15, and the raylet's startup
    concurrency. Ray's core library lists every variable it reads; a renamed entry would
    be ignored without a word."""
    (core,) = _package_dir("ray").glob("_raylet*.so")
    with core.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as image:
        assert image.find(env.encode() + b"\0") >= 0, f"Ray no longer reads {env}"
