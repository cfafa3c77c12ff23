"""The one shape of every error the endpoint answers: `{"error": {code, message, field,
request_id}}` (schema.ErrorResponse).

The model replica cannot answer HTTP itself: it returns a refusal as data (`refusal`), and the
ingress turns it into the same JSON response as its own refusals (`error`,
`outcome_error`). Server errors name the request, never the exception: the details are logged
under the request id.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi.responses import JSONResponse

from biogner.serve.schema import ErrorResponse

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 408, 413, 415, 422, 500, 503, 504)
}
# an absolute path (POSIX `/a/b`, `~/a`, Windows `C:\a`) or a quoted one (spaces and all), and
# the path of a `sqlite:///` or `file:///` URI; not the `/x` of a `models:/x/1` URI
_QUOTED_PATH = re.compile(r"""(['"])(?:~|[A-Za-z]:\\|/)[^'"]*\1""")
_PATH = re.compile(r"(?<![\w:/.~-])(?:~|[A-Za-z]:\\|/)[^\s'\"<>|,;)]*|(?<=:///)[^\s'\"<>|,;)]+")


def without_paths(text: str) -> str:
    """`text` with every absolute local path replaced by `<path>`."""
    text = _QUOTED_PATH.sub(lambda m: f"{m.group(1)}<path>{m.group(1)}", text)
    return _PATH.sub("<path>", text)


def error(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    request_id: str | None = None,
    retry_after_s: int | None = None,
) -> JSONResponse:
    """A JSON error response; a 401 says which scheme to use, a 503 when to retry."""
    detail: dict[str, Any] = {"code": code, "message": message, "field": field}
    if request_id is not None:
        detail["request_id"] = request_id
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return JSONResponse({"error": detail}, status_code=status, headers=headers or None)


def refusal(status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
    """A model-side outcome that the ingress turns into a JSON error (`outcome_error`)."""
    return {
        "ok": False,
        "status": status,
        "code": code,
        "message": message,
        "field": None,
        "request_id": request_id,
    }


def outcome_error(outcome: dict[str, Any]) -> JSONResponse:
    """The response for a refused model outcome (`refusal`, or a RequestError's dict)."""
    o = outcome
    return error(o["status"], o["code"], o["message"], o["field"], o.get("request_id"))


__all__ = ["ERROR_RESPONSES", "error", "outcome_error", "refusal"]
