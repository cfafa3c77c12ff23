"""`biogner.load`: a trained model from wherever it is kept, ready to extract entities.

    import biogner
    model = biogner.load("models:/biogner@champion")
    model.extract(["Cisplatin induced nephrotoxicity in rats."])

Why here, above `annotate` and `tracking`: resolving a registry alias or a run URI needs
MLflow, extracting does not; the `Annotator` it returns is the same object the extraction
job, the pyfunc and the endpoint use, so the three ways give the same entities."""

from __future__ import annotations

from pathlib import Path

from biogner.annotate.annotator import Annotator
from biogner.annotate.windows import WINDOW_CHARS, WINDOW_TOKENS
from biogner.models.config import GenerationConfig
from biogner.tracking.config import TrackingConfig
from biogner.tracking.open import open_model


def load(
    model: str | Path,
    *,
    format: str | None = None,
    device: str = "auto",
    tracking: TrackingConfig | None = None,
    generation: GenerationConfig | None = None,
    window_tokens: int = WINDOW_TOKENS,
    window_chars: int = WINDOW_CHARS,
) -> Annotator:
    """Load `model` to extract entities: `models:/<name>@<alias>` (pinned to the version the
    alias names now), `models:/<name>/<version>`, `runs:/<id>/model`, another MLflow
    artifact URI, or a local model folder. `format`: answer in another format the model was
    trained in; `device`: auto, cpu or cuda (`generation` sets every generation option);
    `tracking`: the MLflow store (default: `MLFLOW_TRACKING_URI`, else biogner's local one).
    """
    gen = generation or GenerationConfig(device=device)
    resolved = open_model(str(model), tracking or TrackingConfig(), temporary=True)
    try:  # the weights are in memory once loaded: the downloaded copy goes
        return Annotator.from_dir(resolved.dir, gen, format, window_tokens, window_chars)
    finally:
        resolved.close()


__all__ = ["load"]
