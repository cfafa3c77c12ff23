"""What a logged biogner model holds beside its weights: the models-from-code entry MLflow
runs to load it, the input/output signature, an input example, and the artifact key of its
Hugging Face folder.

Why apart from `model`: logging a model (training, the sweep) needs these, not torch; the
entry only names `BiognerHFModel` by import, so nothing is pickled and a model loads
wherever biogner is installed."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

HF_ARTIFACT_KEY = "hf_dir"

# The models-from-code entry point written next to each logged model. (Models logged before
# this package existed import the class from `biogner.tracking.models` or `biogner.tracking`,
# which still forward it.)
ENTRY_CODE = '''"""MLflow models-from-code entry for a biogner HF model directory."""

import mlflow

from biogner.pyfunc.model import BiognerHFModel

mlflow.models.set_model(BiognerHFModel())
'''


def _signature() -> Any:
    return ModelSignature(
        inputs=Schema(
            [ColSpec("string", "text"), ColSpec(Array("string"), "entity_types", required=False)]
        ),
        outputs=Schema([ColSpec("string", "entities")]),
        params=ParamSchema(
            [
                ParamSpec("entity_types", "string", [], shape=(-1,)),
                ParamSpec("batch_size", "long", 64),
                ParamSpec("max_new_tokens_cap", "long", 0),
                ParamSpec("min_score", "double", 0.0),
            ]
        ),
    )


PYFUNC_SIGNATURE = _signature()
PYFUNC_INPUT_EXAMPLE = pd.DataFrame({"text": ["Cisplatin induced nephrotoxicity in rats."]})


__all__ = ["ENTRY_CODE", "HF_ARTIFACT_KEY", "PYFUNC_INPUT_EXAMPLE", "PYFUNC_SIGNATURE"]
