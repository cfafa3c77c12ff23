"""Kubernetes manifests validated as a strict API server would (`kubectl --validate=strict`).

The Ray kinds against KubeRay's own CRD schemas (the `openAPIV3Schema` of each CRD, vendored
in tests/data/kuberay-<version>/ with the script that extracted them); every other kind, and
the metadata of all, against Kubernetes' own API types: the models of the official Python
client, generated from Kubernetes' OpenAPI (their field maps, types and required fields).
Unknown fields are errors, as under strict validation, where a lenient API server would drop
them without a word (a typo in a securityContext would silently leave a pod unguarded).
"""

from __future__ import annotations

import gzip
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes.client.models as k8s_models
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError
from pydantic import ValidationError as PydanticError

KUBERAY_VERSION = "v1.7.0"
CRD_DIR = Path(__file__).resolve().parent / "data" / f"kuberay-{KUBERAY_VERSION}"
RAY_KINDS = ("RayCluster", "RayJob", "RayService")


def _strict(schema: Any) -> Any:
    """The schema with every closed object closed for real: additionalProperties false where
    the CRD lists properties and neither allows extra keys nor preserves unknown fields."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(kind: str) -> Draft7Validator:
    with gzip.open(CRD_DIR / f"{kind}.schema.json.gz", "rt", encoding="utf-8") as f:
        schema = json.load(f)
    return Draft7Validator(_strict(schema))


def _where(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _describe(error: ValidationError) -> list[str]:
    where = _where(error.absolute_path)
    if error.validator == "additionalProperties":
        unexpected = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return [f"{where}.{key}: unknown field" for key in unexpected]
    if error.validator == "required":
        name = re.match(r"'([^']+)'", error.message)
        return [f"{where}: missing required field {name.group(0) if name else error.message}"]
    if error.validator == "type":
        return [f"{where}: expected {error.validator_value}, got {error.instance!r}"]
    if error.validator == "enum":
        return [f"{where}: expected one of {error.validator_value}, got {error.instance!r}"]
    return [f"{where}: {error.message}"]


def validate_crd(doc: dict[str, Any]) -> list[str]:
    body = {k: v for k, v in doc.items() if k != "metadata"}
    errors = sorted(crd_validator(doc["kind"]).iter_errors(body), key=lambda e: list(e.path))
    return [line for e in errors for line in _describe(e)]


# --------------------------------------------------------------- Kubernetes' own types

QUANTITY_MAPS = {"limits", "requests", "capacity", "hard"}


def validate_model(value: Any, type_name: str, path: str) -> list[str]:
    """Where `value` leaves the Kubernetes type `type_name` ('V1Deployment', 'V1ObjectMeta'):
    the client's models are pydantic, strict about types and closed to unknown fields."""
    try:
        getattr(k8s_models, type_name).model_validate(value)
    except PydanticError as exc:
        errors = []
        for e in exc.errors():
            loc = [path] if path else []
            where = _where([*loc, *e["loc"]])
            # a resource quantity is a string in the types; YAML's numbers are accepted too
            number = isinstance(e["input"], int | float) and not isinstance(e["input"], bool)
            if e["type"] == "string_type" and number and QUANTITY_MAPS & set(map(str, e["loc"])):
                continue
            if e["type"] == "extra_forbidden":
                errors.append(f"{where}: unknown field")
            elif e["type"] == "missing":
                errors.append(
                    f"{_where([*loc, *e['loc'][:-1]])}: missing required field {e['loc'][-1]!r}"
                )
            else:
                errors.append(f"{where}: {e['msg']}, got {e['input']!r}")
        return errors
    return []


def model_name(api_version: str, kind: str) -> str:
    """`apps/v1` + `Deployment` -> `V1Deployment`, as the client names its types."""
    version = api_version.rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + kind


# --------------------------------------------------------------- one manifest


def validate_manifest(doc: Any) -> list[str]:
    """Every schema error of one Kubernetes object, as 'dotted.path: problem'."""
    if not isinstance(doc, dict):
        return [f"document is not a mapping: {doc!r}"]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    meta = doc.get("metadata")
    errors: list[str] = []
    if not isinstance(meta, dict):
        return ["metadata: missing or not a mapping"]
    named = [k for k in ("name", "generateName") if k in meta]
    if len(named) != 1:
        errors.append(f"metadata: needs exactly one of name, generateName (has {named})")
    elif named == ["generateName"] and not str(meta["generateName"]).endswith("-"):
        errors.append("metadata.generateName: end it with '-' (a random suffix follows)")
    if api_version == "ray.io/v1" and kind in RAY_KINDS:
        errors += validate_model(meta, "V1ObjectMeta", "metadata")
        if "spec" not in doc:
            errors.append("<root>: missing required field 'spec'")
        return errors + validate_crd(doc)
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return errors + [f"unknown apiVersion/kind {(api_version, kind)}"]
    name = model_name(api_version, kind)
    if not hasattr(k8s_models, name):
        return errors + [f"unknown apiVersion/kind {(api_version, kind)}"]
    return errors + validate_model(doc, name, "")
