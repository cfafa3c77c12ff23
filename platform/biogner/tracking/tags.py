"""The MLflow tag vocabulary: what biogner writes on runs, and what selection and reports read.

One place, so a writer and its readers cannot drift apart (tests build their runs from it too).
"""

from __future__ import annotations

KIND_TAG = "biogner.kind"  # what a run is:
TRAIN_KIND = "train"
EVALUATE_KIND = "evaluate"
REPORT_KIND = "report"
EXTRACT_KIND = "extract"
INPUTS_DIGEST_TAG = "inputs_digest"  # what an extraction job read (extract.job.inputs_digest)

# On training runs (comma-joined lists) and evaluation runs (one value each).
MODEL_TAG = "model"  # the base model spec
FORMAT_TAG = "format"
CORPORA_TAG = "corpora"
CORPUS_TAG = "corpus"
SPLIT_TAG = "split"
MODEL_URI_TAG = "model_uri"  # the model an evaluation scored
SENTENCES_TAG = "sentences"
# An evaluation of the first N sentences of a split ("true"): shown, never selected.
SUBSET_TAG = "subset"
# "constrained" or "free" (generation.constrained): which decoding an evaluation used.
DECODING_TAG = "decoding"
ERROR_TAG = "error"  # a FAILED run's error, one line
CHANGED_PARAMS_TAG = "biogner.changed_params_on_resume"

# MLflow's own system tags (documented names; `mlflow.utils.mlflow_tags` is internal)
MLFLOW_RUN_NAME = "mlflow.runName"
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
