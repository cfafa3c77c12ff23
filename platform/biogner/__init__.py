"""biogner: generative biomedical NER with lightweight causal LMs on Ray.

    import biogner
    model = biogner.load("models:/biogner@champion")   # or runs:/<id>/model, or a folder
    model.extract(["Cisplatin induced nephrotoxicity in rats."])  # per text, its entities

`load` and `Annotator` are loaded on first use (PEP 562): `import biogner.types` in the HTTP
ingress or a Ray worker must not load torch, transformers and MLflow."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from biogner.types import Sentence, Span

if TYPE_CHECKING:
    from biogner.annotate.annotator import Annotator
    from biogner.annotate.entities import Entity
    from biogner.api import load

_LAZY = {
    "load": "biogner.api",
    "Annotator": "biogner.annotate.annotator",
    "Entity": "biogner.annotate.entities",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'biogner' has no attribute {name!r}")


__all__ = ["Annotator", "Entity", "Sentence", "Span", "load"]
__version__ = "0.1.0"
