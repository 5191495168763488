"""Every failure becomes one OpenAI-shaped error: ``{"error": {"message", "type", "param", "code"}}``.

One place decides status, type and code; handlers raise :class:`ApiError` (or let pydantic /
httpx errors through to the mapping below) and never build error bodies themselves.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

# HTTP status → OpenAI error ``type``.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    500: "internal_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after_s = retry_after_s

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        err: dict[str, Any] = {
            "message": self.message,
            "type": ERROR_TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "internal_error"),
            "param": self.param,
            "code": self.code,
        }
        if request_id:
            err["request_id"] = request_id
        return {"error": err}

    def sse_event(self, request_id: str | None = None) -> bytes:
        """The error as one SSE ``data:`` event (mid-stream failures; no ``[DONE]`` follows)."""
        return b"data: " + json.dumps(self.body(request_id)).encode() + b"\n\n"

    def response(self, request_id: str | None = None) -> JSONResponse:
        headers = {}
        if request_id:
            headers["x-request-id"] = request_id
        if self.retry_after_s is not None:
            headers["retry-after"] = str(max(1, int(self.retry_after_s + 0.999)))
        return JSONResponse(self.body(request_id), status_code=self.status, headers=headers)


def _field_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A pydantic loc without its type tags (``str``, ``list[int]``, ``function-after[...]``)."""
    tags = {"str", "int", "float", "bool", "list", "dict", "none", "constrained-str", "constrained-int"}
    return tuple(p for p in loc if not (isinstance(p, str) and (p in tags or "[" in p or p.startswith("json-"))))


def from_validation(exc: ValidationError) -> ApiError:
    """The first invalid field → 400 naming it (``messages.0.role``). The alternatives of a union
    (``stop``: a string or a list of strings) are reported together under the field's name."""
    errs = exc.errors(include_url=False)
    if not errs:
        return ApiError(400, "invalid request", code="invalid_value")
    if errs[0]["type"] == "json_invalid":
        return ApiError(400, f"request body is not valid JSON: {errs[0]['msg']}", code="invalid_json")
    if errs[0]["type"] == "model_type" and not errs[0]["loc"]:
        return ApiError(400, "request body must be a JSON object", code="invalid_value")
    first = _field_path(errs[0]["loc"])
    head = first[:1]
    same = [e for e in errs if _field_path(e["loc"])[:1] == head]
    path = first
    for e in same[1:]:  # common prefix: the field all the union's alternatives belong to
        other = _field_path(e["loc"])
        n = 0
        while n < min(len(path), len(other)) and path[n] == other[n]:
            n += 1
        path = path[:n]
    param = ".".join(str(p) for p in path) or None
    msgs = list(dict.fromkeys(e["msg"] for e in same))
    detail = msgs[0] if len(msgs) == 1 else "; or ".join(msgs[:3])
    return ApiError(400, f"{param or 'body'}: {detail}", code="invalid_value", param=param)


def from_upstream(status: int, body: bytes) -> ApiError:
    """An engine's error answer → ours. 4xx keep their status (context too long stays a 400);
    503 (starting, overloaded, a rank lost) stays 503 with Retry-After, so clients back off and
    retry; other 5xx become 502 so clients can tell an engine failure from a gateway bug."""
    message, code, param = f"engine answered HTTP {status}", None, None
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else {}
        if isinstance(err, dict):
            message = str(err.get("message") or err.get("detail") or message)
            code = err.get("code") if isinstance(err.get("code"), str) else None
            param = err.get("param") if isinstance(err.get("param"), str) else None
        elif isinstance(err, str):
            message = err
    except ValueError:
        text = body[:500].decode("utf-8", "replace").strip()
        message = text or message
    if 400 <= status < 500:
        if "context" in message.lower() and ("length" in message.lower() or "exceed" in message.lower()):
            code = code or "context_length_exceeded"
        return ApiError(status if status != 422 else 400, message, code=code or "engine_rejected", param=param)
    if status == 503:
        return ApiError(503, f"engine unavailable: {message}", code="engine_unavailable", retry_after_s=2)
    return ApiError(502, f"engine error: {message}", code="engine_error")
