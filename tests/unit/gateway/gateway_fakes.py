"""A fake OpenAI-compatible engine served in-process (httpx transport, no sockets), and a gateway
app built with the real factory in front of it."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from serving.config import Settings, load_settings
from serving.gateway import create_app
from serving.observability.tracing import make_tracer_provider
from serving.registry import Endpoint, StaticEndpoints

MODEL = "smollm2-135m"


@dataclass
class FakeEngine:
    """Answers like an engine; ``behaviour`` picks: ok | reject400 | error503 | die_midstream."""

    name: str
    reasoning_field: str = "reasoning_content"
    behaviour: str = "ok"
    tokens: int = 3
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        obj = {"id": "c1", "object": "chat.completion.chunk", "model": MODEL,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": None}  # fmt: skip
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    async def _stream(self, include_usage: bool) -> AsyncIterator[bytes]:
        yield self._chunk({"role": "assistant", self.reasoning_field: "hmm"})
        for i in range(self.tokens):
            if self.behaviour == "die_midstream" and i == 1:
                raise httpx.ReadError("engine died")
            yield self._chunk({"content": f"t{i} "})
        yield self._chunk({}, "stop")
        if include_usage:
            usage = {"prompt_tokens": 7, "completion_tokens": self.tokens, "total_tokens": 7 + self.tokens}
            obj = {"id": "c1", "object": "chat.completion.chunk", "model": MODEL, "choices": [], "usage": usage}
            yield b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.behaviour == "reject400":
            err = {"error": {"message": "This model's maximum context length is 4096 tokens", "type": "BadRequest"}}
            return httpx.Response(400, json=err)
        if self.behaviour == "error503":
            return httpx.Response(503, json={"error": {"message": "overloaded"}})
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  stream=_AsyncBytes(self._stream(include)))  # fmt: skip
        msg = {"role": "assistant", "content": "hello", self.reasoning_field: "hmm"}
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "model": MODEL,
            "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
        })  # fmt: skip


class _AsyncBytes(httpx.AsyncByteStream):
    def __init__(self, it: AsyncIterator[bytes]) -> None:
        self.it = it

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for b in self.it:
            yield b


class EngineTransport(httpx.AsyncBaseTransport):
    """Dispatches by host to fake engines; unknown hosts refuse the connection."""

    def __init__(self, engines: dict[str, FakeEngine]) -> None:
        self.engines = engines

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        engine = self.engines.get(request.url.host)
        if engine is None:
            raise httpx.ConnectError("connection refused", request=request)
        return await engine.handle(request)


@dataclass
class Rig:
    client: httpx.AsyncClient
    engines: dict[str, FakeEngine]
    spans: InMemorySpanExporter
    app: Any


def endpoint(host: str, engine: str = "sglang", model: str = MODEL) -> Endpoint:
    """The record a replica of ``engine`` would publish (its engine facts included)."""
    from serving.engines import get_engine

    e = get_engine(engine)
    return Endpoint(replica_id=host, url=f"http://{host}:30000", model=model, engine=engine,
                    reasoning_field=e.reasoning_field, abort_needs_stream=e.abort_needs_stream)  # fmt: skip


@pytest.fixture
def make_rig() -> Callable[..., Any]:
    async def build(
        overrides: dict[str, Any] | None = None,
        engines: list[FakeEngine] | None = None,
        endpoints: list[Endpoint] | None = None,
        env: dict[str, str] | None = None,
        exporting: bool = True,
    ) -> Rig:
        """``exporting`` False: the provider the app builds itself with nowhere to export."""
        settings: Settings = load_settings(overrides=overrides or {}, env=env or {})
        engines = engines if engines is not None else [FakeEngine("engine-a")]
        eps = endpoints if endpoints is not None else [endpoint(e.name) for e in engines]
        spans = InMemorySpanExporter()
        provider = TracerProvider() if exporting else make_tracer_provider(settings.telemetry)
        provider.add_span_processor(SimpleSpanProcessor(spans))
        app = create_app(settings, StaticEndpoints(eps), transport=EngineTransport({e.name: e for e in engines}),
                         tracer_provider=provider, rng=random.Random(7))  # fmt: skip
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
        return Rig(client, {e.name: e for e in engines}, spans, app)

    return build


BAD_INPUTS = __import__("pathlib").Path(__file__).resolve().parents[2] / "data" / "bad_inputs.yaml"


def bad_input_cases() -> list[dict[str, Any]]:
    import yaml

    return list(yaml.safe_load(BAD_INPUTS.read_text(encoding="utf-8"))["cases"])


def bad_input_request(case: dict[str, Any]) -> tuple[str, str, bytes]:
    """(method, path, body bytes) for one corpus case."""
    import base64

    method, path = case.get("method", "POST"), case.get("path", "/v1/chat/completions")
    if "raw" in case:
        return method, path, case["raw"].encode()
    if "raw_b64" in case:
        return method, path, base64.b64decode(case["raw_b64"])
    if "huge_body_bytes" in case:
        pad = "x" * case["huge_body_bytes"]
        return method, path, json.dumps({"model": MODEL, "messages": [{"role": "user", "content": pad}]}).encode()
    if "many_messages" in case:
        msgs = [{"role": "user", "content": "hi"}] * case["many_messages"]
        return method, path, json.dumps({"model": MODEL, "messages": msgs}).encode()
    return method, path, json.dumps(case["json"]).encode()
