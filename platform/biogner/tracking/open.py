"""`open_model`: the one way evaluation, serving, the sweep, the demo and extraction get a
model: its URI resolved once (a registry alias pinned to the version it points to now),
downloaded once, its card read.

Why one place: the URI used to be parsed twice in serving and resolved twice in evaluation
(an alias moved in between mixed two versions), and three rules told a path from a URI.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from biogner.models.card import ModelCard, read_card
from biogner.tracking.config import TrackingConfig
from biogner.tracking.models import download_model_dir, is_artifact_uri
from biogner.tracking.registry import model_version
from biogner.tracking.runs import setup
from biogner.tracking.uris import parse_model_uri, version_uri


@dataclass
class ResolvedModel:
    """A model on local disk, what it is, and which store entry it came from."""

    dir: Path  # the Hugging Face directory holding the weights and the card
    card: ModelCard
    uri: str  # as the caller named it
    pinned: str  # what was loaded: models:/<name>/<version>, runs:/..., or the directory
    name: str | None = None  # registered model
    version: str | None = None
    run_id: str | None = None  # the training run that logged it
    download_dir: Path | None = None  # a temporary copy `close` deletes

    def close(self) -> None:
        """Delete the temporary download (a model already in memory keeps working)."""
        if self.download_dir is not None:
            shutil.rmtree(self.download_dir, ignore_errors=True)
            self.download_dir = None


def pin(uri: str, tracking: TrackingConfig) -> tuple[str, str | None, str | None, str | None]:
    """(pinned URI, registered name, version, run id) of a model URI, the registry read once;
    a directory or another artifact URI is returned as it is."""
    parsed = parse_model_uri(uri)
    if parsed.run_id is not None:
        return uri, None, None, parsed.run_id
    if parsed.name is None:
        return uri, None, None, None
    mv = model_version(tracking, parsed)
    version = str(mv.version)
    return version_uri(parsed.name, version), parsed.name, version, mv.run_id or None


def open_model(uri: str, tracking: TrackingConfig, temporary: bool = False) -> ResolvedModel:
    """Resolve, download and read a model: `models:/<name>@<alias>` (pinned first),
    `models:/<name>/<version>`, `runs:/<id>/model`, another MLflow artifact URI, or a local
    directory (read in place). `temporary`: download into a folder `close()` deletes (a
    serving replica), else into MLflow's own cache location."""
    if not is_artifact_uri(uri):
        path = Path(uri).expanduser().resolve()
        model_dir = download_model_dir(str(path))
        return ResolvedModel(model_dir, read_card(model_dir), uri, str(path), name=path.name)
    pinned, name, version, run_id = pin(uri, tracking)
    setup(tracking)  # MLflow downloads runs:/ and models:/ from its process-wide store
    download_dir = Path(tempfile.mkdtemp(prefix="biogner-model-")) if temporary else None
    try:
        model_dir = download_model_dir(pinned, download_dir)
        card = read_card(model_dir)
    except BaseException:
        if download_dir is not None:
            shutil.rmtree(download_dir, ignore_errors=True)
        raise
    return ResolvedModel(model_dir, card, uri, pinned, name, version, run_id, download_dir)
