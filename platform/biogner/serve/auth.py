"""The endpoint's Bearer key, read from the environment once when the ingress starts.

Kept apart from the Serve application so that the rules can be checked without Ray:
- the key is stripped of surrounding whitespace (a key file or `kubectl create secret
  --from-file` value usually ends in a newline, which no client sends);
- an unset or blank variable means no key: requests are not checked, unless the config says
  `require_auth: true`, in which case the ingress refuses to start (`MissingAPIKeyError`,
  naming the variable) instead of serving an open endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


class MissingAPIKeyError(RuntimeError):
    """`require_auth` is on and the key's environment variable is unset or blank."""


def api_key_from_env(
    env_var: str, require: bool, environ: Mapping[str, str] | None = None
) -> str | None:
    """The Bearer key held by `env_var` (stripped), or None when it is unset or blank.

    With `require`, a missing key raises `MissingAPIKeyError` naming `env_var`.
    """
    env = os.environ if environ is None else environ
    key = env.get(env_var, "").strip()
    if key:
        return key
    if require:
        state = "blank" if env_var in env else "unset"
        raise MissingAPIKeyError(
            f"require_auth is true but the API key variable {env_var} is {state}: the endpoint "
            f"will not start without a key. Set {env_var} where the ingress runs (on KubeRay: "
            "the Secret biogner-serve, key api-key; see infra/README.md) or set "
            "require_auth: false in the serve config"
        )
    return None


__all__ = ["MissingAPIKeyError", "api_key_from_env"]
