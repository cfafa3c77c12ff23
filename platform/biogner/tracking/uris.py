"""`models:/` and `runs:/` URIs, parsed in one place (no MLflow: serve configs read them).

`models:/<name>@<alias>` (the registry's moving pointer, e.g. the served champion),
`models:/<name>/<version>` (pinned), `runs:/<run id>/<path>` (a run's logged model); anything
else is a local directory or another MLflow artifact URI, downloaded as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

MODELS_SCHEME = "models:/"
RUNS_SCHEME = "runs:/"


@dataclass(frozen=True)
class ModelUri:
    uri: str
    name: str | None = None  # registered model (models:/)
    alias: str | None = None
    version: str | None = None
    run_id: str | None = None  # runs:/


def parse_model_uri(uri: str) -> ModelUri:
    """What `uri` names; ValueError for a malformed `models:/` or `runs:/` URI."""
    if uri.startswith(RUNS_SCHEME):
        run_id = uri[len(RUNS_SCHEME) :].strip("/").split("/", 1)[0]
        if not run_id:
            raise ValueError(f"{uri!r}: expected runs:/<run id>/<path>")
        return ModelUri(uri, run_id=run_id)
    if uri.startswith(MODELS_SCHEME):
        ref = uri[len(MODELS_SCHEME) :].strip("/")
        name, sep, alias = ref.partition("@")
        if sep and name and alias:
            return ModelUri(uri, name=name, alias=alias)
        name, _, version = ref.rpartition("/")
        if sep or not name or not version:
            raise ValueError(
                f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>"
            )
        return ModelUri(uri, name=name, version=version)
    return ModelUri(uri)


def alias_of(uri: str) -> tuple[str, str] | None:
    """(name, alias) of a `models:/<name>@<alias>` URI; None for a pinned version, a run, a
    directory or a malformed URI (nothing that the registry can move)."""
    try:
        parsed = parse_model_uri(uri)
    except ValueError:
        return None
    if parsed.name is None or parsed.alias is None:
        return None
    return parsed.name, parsed.alias


def alias_uri(name: str, alias: str) -> str:
    """`models:/<name>@<alias>`: URIs are built here only, beside their parser."""
    return f"{MODELS_SCHEME}{name}@{alias}"


def version_uri(name: str, version: str) -> str:
    """`models:/<name>/<version>`: one version, pinned."""
    return f"{MODELS_SCHEME}{name}/{version}"


def logged_model_uri(model_id: str) -> str:
    """`models:/<model id>`: an MLflow 3 logged model, as the registry links a version to it."""
    return f"{MODELS_SCHEME}{model_id}"
