"""Serving: a Ray Serve HTTP endpoint for batched NER (`biogner.serve.app:build_app`).

Modules, no Ray: `schema` (config and HTTP schema), `requests` (a request's checks and its
windows), `loaded` (the served model: an `annotate.Annotator` and where it came from),
`scheduling` (requests' windows on the model, a slice at a time), `follow` (when an alias
follower loads a new version), `errors` (the JSON error shape), `auth`. With Ray Serve:
`batcher` (`AdaptiveBatcher`), `swaps` (the model swapped in place), `replica` (the model
deployment `NERModel`), `http` (the HTTP ingress), `application` (the builder), `app` (the
stable import path), `local` (start/stop on a local Ray), `demo`. The command line's
`biogner serve` is `biogner.cli.serve`.
"""
