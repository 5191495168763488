"""Structured JSON logs carrying the current request id; secrets scrubbed on the way out.

The request id lives in a context variable set by the gateway's middleware, so every log line
emitted while a request is handled (ours, httpx's, uvicorn's) carries it without being passed
around. Keys never reach a log line: the gateway logs only key digests' prefixes, and the
formatter also scrubs anything that looks like a bearer token, as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("qwen_serve_request_id", default=None)

_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s\"',]+"),
    re.compile(r"(?i)((?:api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',]+"),
)
_STD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    """``text`` with bearer tokens and ``api_key=...`` values replaced by ``**********``."""
    for pat in _SECRET_PATTERNS:
        text = pat.sub(r"\1**********", text)
    return text


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (or None) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, plus any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and k not in out:
                out[k] = v
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str = "INFO", *, json_logs: bool = True, stream: Any = None) -> logging.Handler:
    """Install one handler on the root logger (idempotent: replaces the one it installed before)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_qwen_serve", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._qwen_serve = True  # type: ignore[attr-defined]  # marks the handler this function owns
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if json_logs else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    return handler
