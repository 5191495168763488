"""SGLang 0.5.23's own code as the test oracle for its wire contract: the pydantic request and
response models of ``sglang/srt/entrypoints/openai/protocol.py`` and the metric names declared in
its source, read from the pinned wheel in ``.cache/engines/`` (``make engine-wheels``, or the
``sglang_wheel`` fixture on first use). Nothing here is a copy of SGLang: it is imported or parsed.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tests.conftest import load_script

PROTOCOL = "sglang.srt.entrypoints.openai.protocol"
_KINDS = {"Gauge", "Counter", "Histogram", "Summary", "GaugeHistogram"}


@dataclass
class SGLang:
    """What SGLang accepts and emits, asked of SGLang's code."""

    root: Path
    protocol: Any = field(init=False, repr=False)
    _metrics: dict[str, str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.protocol = load_script("engine_wheels").stubbed_import(self.root, PROTOCOL)

    def _model(self, path: str, kind: str) -> Any:
        chat = path.endswith("/chat/completions")
        names = {
            "request": ("ChatCompletionRequest", "CompletionRequest"),
            "response": ("ChatCompletionResponse", "CompletionResponse"),
            "chunk": ("ChatCompletionStreamResponse", "CompletionStreamResponse"),
        }[kind]
        return getattr(self.protocol, names[0] if chat else names[1])

    def request_error(self, path: str, body: Any) -> str | None:
        """Why SGLang's request model refuses ``body`` for ``path``; None if it accepts it."""
        if not isinstance(body, dict):
            return "not a JSON object"
        try:
            # SGLang's validators rewrite the dict they are given: hand them a copy.
            self._model(path, "request").model_validate(json.loads(json.dumps(body)))
            self._response_format(body.get("response_format"))
        except ValidationError as e:
            return str(e)
        except (AttributeError, TypeError, KeyError) as e:
            # Some of SGLang's "before" validators assume a shape (``response_format.get``) and raise
            # on anything else: SGLang does not accept the body either.
            return f"{type(e).__name__} in SGLang's validators: {e}"
        return None

    def _response_format(self, value: Any) -> None:
        """``response_format`` is SGLang's ``ResponseFormat | LegacyStructuralTagResponseFormat |
        xgrammar.StructuralTag``; xgrammar is not installed, so its alternative is a stand-in that
        accepts anything. Every xgrammar form has ``type: "structural_tag"``: anything else must be
        SGLang's own ``ResponseFormat``, and a structural tag is checked in SGLang's legacy form."""
        if not isinstance(value, dict):
            return
        p = self.protocol
        model = p.LegacyStructuralTagResponseFormat if value.get("type") == "structural_tag" else p.ResponseFormat
        model.model_validate(json.loads(json.dumps(value)))

    def check_response(self, path: str, body: dict[str, Any]) -> None:
        """Raise unless ``body`` validates as SGLang's non-streaming response for ``path``."""
        self._model(path, "response").model_validate(body)

    def check_chunk(self, path: str, chunk: dict[str, Any]) -> None:
        """Raise unless ``chunk`` validates as one of SGLang's stream chunks for ``path``."""
        self._model(path, "chunk").model_validate(chunk)

    def chunk_as_sglang_writes_it(self, path: str, data: str) -> str:
        """The ``data:`` line SGLang itself would write for what the chunk ``data`` carries: parsed
        by its stream model and serialized as its streaming code does (``model_dump_json()``),
        every field in SGLang's order, nulls included."""
        return str(self._model(path, "chunk").model_validate_json(data).model_dump_json())

    def metric_names(self) -> dict[str, str]:
        """Every ``sglang:*`` series name SGLang exposes → its kind, from the
        ``Gauge/Counter/Histogram(name="sglang:…")`` calls in the wheel's source, expanded the way
        prometheus_client exposes them (``_total`` for counters; ``_bucket``/``_count``/``_sum``;
        ``_created``)."""
        if self._metrics is not None:
            return self._metrics
        out: dict[str, str] = {}
        for path in (self.root / "sglang" / "srt").rglob("*.py"):
            text = path.read_text(encoding="utf-8", errors="replace")
            if '"sglang:' not in text:
                continue  # parse only the files that declare a metric (a few of ~2,000)
            try:
                tree = ast.parse(text)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                kind = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if kind not in _KINDS:
                    continue
                for kw in node.keywords:
                    v = kw.value
                    if kw.arg == "name" and isinstance(v, ast.Constant) and str(v.value).startswith("sglang:"):
                        for exposed in _exposed(str(v.value), kind):
                            out[exposed] = kind
        self._metrics = out
        return out


def _exposed(name: str, kind: str) -> list[str]:
    if kind == "Counter":
        base = name.removesuffix("_total")
        return [f"{base}_total", f"{base}_created"]
    if kind == "Histogram":
        return [name, f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"]
    if kind == "GaugeHistogram":
        return [name, f"{name}_bucket", f"{name}_gcount", f"{name}_gsum"]
    if kind == "Summary":
        return [name, f"{name}_count", f"{name}_sum", f"{name}_created"]
    return [name]
