"""Serving: a Ray Serve HTTP endpoint for batched NER (`biogner.serve.app:build_app`).

Submodules: `schema` (config and
HTTP schema), `engine` (model loading and result assembly, no Ray), `follow` (when an alias
follower loads a new version, no Ray), `errors` (the JSON error shape), `replica` (the model
deployment), `ingress` (the HTTP deployment), `application` (the builder), `app` (the stable
import path), `local` (start/stop on a local Ray), `auth`, `cli` (`biogner serve`), `demo`.
Import the Serve modules only where Ray Serve is wanted.
"""
