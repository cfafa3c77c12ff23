"""The import path Serve config files, `serve run` and KubeRay name:
`biogner.serve.app:build_app` (kept stable; the code lives in modules with one job each).

- `replica`: the model replica `NERModel` (batching; `swaps`: in-place swaps, alias following);
- `http`: the HTTP ingress `Ingress` and its FastAPI `api` (auth, limits, JSON errors);
- `errors`: the JSON error shape both use;
- `application`: the builder (`parse_config`, `build_application`, `build_app`);
- `local`: starting and stopping the application on a local Ray (`biogner serve`, the demo).

Start it with `serve run biogner.serve.app:build_app model_uri=...`, a config file under
`serve_configs/`, or `biogner serve`.
"""

from biogner.serve.application import (
    build_app,
    build_application,
    parse_config,
    resolve_locations,
)

__all__ = ["build_app", "build_application", "parse_config", "resolve_locations"]
