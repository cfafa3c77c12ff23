"""A logged biogner model as an MLflow pyfunc: `contract` (what is logged beside the weights:
the models-from-code entry, the signature, the artifact key; MLflow only) and `model`
(`BiognerHFModel`, which extracts through `annotate.Annotator`). Nothing is imported here:
logging a model must not load torch."""
