"""What a request must satisfy before it costs model work, and the model inputs it becomes.

Why apart from `engine`: the HTTP ingress runs these checks on every request, and it must not
load torch or a model to do it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from biogner.annotate.text import Window
from biogner.annotate.windows import TooManyWindows, text_windows
from biogner.serve.schema import ExtractRequest, Limits


class RequestError(ValueError):
    """A request the service refuses; carries the HTTP status and the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "field": self.field,
        }


def parse_request(body: bytes, limits: Limits) -> ExtractRequest:
    """The body as an ExtractRequest, at a cost bounded by the limits whatever its shape.

    Why not `ExtractRequest.model_validate_json` alone: it validates every element and builds
    every error, so a 2 MB body of a million integers in `texts` cost seconds and ~1 GB
    (990,000 errors, one of them used). The JSON is parsed by the C parser, a list longer than
    its limit is refused by its length, and only then is the small rest validated."""
    try:
        raw = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            400, "not_utf8", f"body is not UTF-8 (byte {exc.start})", "body"
        ) from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestError(400, "not_json", f"body is not JSON: {exc.msg}", "body") from None
    except RecursionError:
        raise RequestError(400, "not_json", "body is not JSON: nested too deeply", "body") from None
    if not isinstance(data, dict):
        raise RequestError(422, "invalid", "body must be a JSON object with `texts`", "body")
    for key, cap, code in (
        ("texts", limits.max_texts, "too_many_texts"),
        ("entity_types", limits.max_entity_types, "too_many_entity_types"),
    ):
        value = data.get(key)
        if isinstance(value, list) and len(value) > cap:
            raise RequestError(422, code, f"{len(value)} {key}; at most {cap} per request", key)
    try:
        return ExtractRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = _field(tuple(err["loc"]))
        raise RequestError(
            422, "invalid", f"{err['msg']} (got {err.get('input')!r:.80})", where
        ) from None


def _field(loc: tuple[Any, ...]) -> str:
    """`("texts", 1)` -> `texts[1]`: the field a client should look at."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def check_texts(texts: Sequence[str], limits: Limits) -> None:
    """Refuse an empty list, oversized or non-encodable texts, naming the first one at fault.

    A blank text is no fault: it has no window (`iter_windows`) and gets no entities, so one
    blank document does not fail its batch."""
    if not texts:
        raise RequestError(422, "empty", "texts must hold at least one text", "texts")
    if len(texts) > limits.max_texts:
        raise RequestError(
            422,
            "too_many_texts",
            f"{len(texts)} texts; at most {limits.max_texts} per request",
            "texts",
        )
    for i, text in enumerate(texts):
        where = f"texts[{i}]"
        if len(text) > limits.max_chars_per_text:
            raise RequestError(
                422,
                "text_too_long",
                f"{len(text)} characters; at most {limits.max_chars_per_text} per text",
                where,
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RequestError(
                422, "invalid_text", f"not valid Unicode (lone surrogate at {exc.start})", where
            ) from None


def check_entity_types(requested: Sequence[str] | None, limits: Limits) -> None:
    """Refuse an oversized entity_types list before it reaches the model."""
    if requested is not None and len(requested) > limits.max_entity_types:
        raise RequestError(
            422,
            "too_many_entity_types",
            f"{len(requested)} entity types; at most {limits.max_entity_types} per request",
            "entity_types",
        )


def request_windows(texts: Sequence[str], limits: Limits) -> list[list[Window]]:
    """Model inputs (sentence windows) for each text; the texts must have passed check_texts.

    A request over `limits.max_windows` is refused (413) as soon as the count passes it, so
    that refusing a huge request costs at most that many windows of work."""
    cap = limits.max_windows
    try:
        return text_windows(texts, limits.window_tokens, limits.window_chars, cap)
    except TooManyWindows as exc:
        raise RequestError(
            413,
            "too_many_windows",
            f"more than {cap} model inputs (sentences, or pieces of long ones): "
            f"{exc.count} counted by texts[{exc.text}]; limits.max_windows is {cap} per request",
            "texts",
        ) from None


def check_request(
    texts: Sequence[str], entity_types: Sequence[str] | None, limits: Limits
) -> list[list[Window]]:
    """Every check the ingress makes before a request costs model work; its windows."""
    check_entity_types(entity_types, limits)
    check_texts(texts, limits)
    return request_windows(texts, limits)
