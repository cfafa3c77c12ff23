"""Serving: a Ray Serve HTTP endpoint for batched NER (`biogner.serve.app:build_app`).

Submodules: `text` (raw text -> corpus-like sentence windows and back), `schema` (config and
HTTP schema), `engine` (model loading and result assembly, no Ray), `app` (Serve deployments),
`cli` (`biogner serve`). Import `biogner.serve.app` only where Ray Serve is wanted.
"""
