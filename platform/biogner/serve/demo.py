"""Stage 5 of `biogner demo`: serve a model for real, send one text over HTTP, stop serving.

Goes through the same path as `biogner serve` (config validation, Serve on 127.0.0.1, the
/readyz probe, the public /v1/extract endpoint) so that the demo proves the service works,
not just the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from biogner.config import deep_merge
from biogner.serve.app import parse_config, resolve_locations
from biogner.serve.local import check_port_free, start_app, stop_app, wait_ready
from biogner.tracking.config import TrackingConfig

DEMO_APP = "biogner-demo"
DEMO_HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 300.0
# An answer budget as in serve_configs/local.yaml: a briefly trained demo model may never
# write its end token, and the default budget (sized for long `bio` answers) would make it
# generate for minutes.
DEMO_DEFAULTS: dict[str, Any] = {"generation": {"max_new_tokens_cap": 256}}


def serve_and_query(
    model_uri: str,
    tracking: TrackingConfig,
    port: int,
    text: str,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Deploy `model_uri` on 127.0.0.1:`port` (Ray already initialised), POST `text` to
    /v1/extract and return the JSON answer; the application is deleted afterwards.
    `overrides` are ServeConfig fields (nested mappings), e.g. a smaller answer budget.

    Raises ServeStartError (port busy, model not ready) or RuntimeError (a non-200 answer).
    """
    store = {"tracking_uri": tracking.tracking_uri, "artifact_root": tracking.artifact_root}
    args: dict[str, Any] = {"model_uri": model_uri, "tracking": store}
    args = deep_merge(deep_merge(args, DEMO_DEFAULTS), dict(overrides or {}))
    cfg = resolve_locations(parse_config(args))
    check_port_free(DEMO_HOST, port)
    base = start_app(cfg, DEMO_HOST, port, DEMO_APP)
    try:
        wait_ready(base)
        r = httpx.post(f"{base}/v1/extract", json={"texts": [text]}, timeout=REQUEST_TIMEOUT_S)
        if r.status_code != 200:
            raise RuntimeError(f"POST {base}/v1/extract: HTTP {r.status_code}: {r.text[:500]}")
        answer: dict[str, Any] = r.json()
        return answer
    finally:
        stop_app(DEMO_APP)


__all__ = ["DEMO_APP", "serve_and_query"]
