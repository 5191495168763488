"""The OpenAI-compatible gateway as a plain ASGI app: ``create_app(settings, endpoints)``.

Per request: request id → auth → body size → validate (schema + limits) → model lookup → rate
limit → presets → route → open on an engine (one retry before the first byte) → relay bytes.
Routes are the table ``ROUTES``; errors of every kind become the OpenAI error shape in
:mod:`serving.gateway.errors`; nothing lives at module level but definitions.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.config.settings import Settings
from serving.engines import get_engine
from serving.gateway.auth import KeyStore, RateLimiter, estimate_prompt_tokens, key_id
from serving.gateway.engine_client import AiohttpEngineClient, EngineClient, EngineConnectionError, HttpxEngineClient
from serving.gateway.errors import ApiError, from_upstream, from_validation
from serving.gateway.presets import apply_presets
from serving.gateway.relay import SSE_HEADERS, Relay, SseRewriter, StreamStats, Upstream, Usage
from serving.gateway.routing import Outstanding, RequestContext, affinity_prefix, make_router
from serving.gateway.schemas import ChatCompletionRequest, CompletionRequest, check_limits, forwarded_body
from serving.observability.logging import REQUEST_ID
from serving.observability.metrics import GatewayMetrics
from serving.observability.tracing import PROPAGATOR, inject_headers, make_tracer_provider
from serving.registry import Endpoint, EndpointSource

log = logging.getLogger("serving.gateway")
access_log = logging.getLogger("serving.gateway.access")

RETRYABLE_UPSTREAM_STATUS = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    handler: str  # name of the Gateway method
    summary: str
    request_model: type[BaseModel] | None = None


ROUTES: tuple[Route, ...] = (
    Route("/v1/chat/completions", "POST", "chat_completions", "Chat completion (stream or not)", ChatCompletionRequest),
    Route("/v1/completions", "POST", "completions", "Text completion (stream or not)", CompletionRequest),
    Route("/v1/models", "GET", "models", "Models served behind this gateway"),
    Route("/health", "GET", "health", "Liveness: the gateway process answers"),
    Route("/ready", "GET", "ready", "Readiness: at least one engine serves the configured model"),
    Route("/metrics", "GET", "prometheus", "Prometheus metrics of this gateway"),
)


GENERATION_HANDLERS = frozenset({"chat_completions", "completions"})


def loads(raw: bytes) -> Any:
    """JSON → Python; orjson, with the standard library for what orjson refuses (integers past
    64 bits), so the accepted inputs are exactly those the schema validation accepted."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError: e.g. an integer past 64 bits
        return json.dumps(obj).encode()


def request_id_of(value: bytes | None) -> str:
    """The client's ``x-request-id`` (printable, at most 128 characters), else a new one."""
    rid = value.decode("latin-1")[:128] if value else None
    if not rid or not rid.isprintable():
        rid = os.urandom(16).hex()  # 32 hex digits, like uuid4().hex, without building a UUID
    return rid


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class Incoming:
    """What the generation path reads from an ASGI scope: the route path and the headers (the
    first value of each, names in lower-case bytes as ASGI gives them)."""

    __slots__ = ("counted", "headers", "model", "path")

    def __init__(self, path: str, headers: dict[bytes, bytes]) -> None:
        self.path = path
        self.headers = headers
        self.model: str | None = None
        self.counted = False  # a Call exists: it records the outcome, errors included

    @classmethod
    def of(cls, scope: Scope) -> Incoming:
        headers: dict[bytes, bytes] = {}
        for k, v in scope["headers"]:
            if k not in headers:
                headers[k] = v
        return cls(route_path(scope), headers)

    def header(self, name: bytes) -> str | None:
        v = self.headers.get(name)
        return None if v is None else v.decode("latin-1")

    def request_id(self) -> str:
        return request_id_of(self.headers.get(b"x-request-id"))

    def trace_carrier(self) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers.items()
                if k in (b"traceparent", b"tracestate")}  # fmt: skip


def route_path(scope: Scope) -> str:
    """The path routes are matched on (``root_path`` removed, as Starlette's router does)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


class AsgiCall(Response):
    """A response that hands the ASGI call to ``handler`` (which sends everything itself)."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        super().__init__()
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


class RequestIdMiddleware:
    """Pure ASGI (does not buffer streams): takes ``x-request-id`` or makes one, puts it in the
    logging context and on the response. ``set_header=False`` leaves the response header to an
    outer layer that already sets the same id (Ray Serve's proxy / direct ingress always appends
    one, so setting it here too would send the header twice)."""

    def __init__(self, app: ASGIApp, set_header: bool = True) -> None:
        self.app = app
        self.set_header = set_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                value = v
                break
        rid = request_id_of(value)
        token = REQUEST_ID.set(rid)
        raw = rid.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", raw)] if self.set_header else headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


class Call:
    """One generation request's bookkeeping; ``finish`` records it exactly once."""

    def __init__(self, gw: Gateway, route: str, model: str, who: str, estimate: int, t0: float) -> None:
        self.gw, self.route, self.model, self.who, self.estimate, self.t0 = gw, route, model, who, estimate, t0
        self.endpoint: Endpoint | None = None
        self.stream = False
        self.span: Any = None
        self.stats = StreamStats()
        self.done = False
        gw.metrics.in_flight.inc()

    def finish(self, status: int) -> None:
        if self.done:
            return
        self.done = True
        gw, m, st = self.gw, self.gw.metrics, self.stats
        m.in_flight.dec()
        if self.endpoint is not None:
            gw.outstanding.dec(self.endpoint.url)
        if st.disconnected:
            status = 499
            m.client_disconnects.labels(self.model).inc()
        elif st.error is not None:
            status = 502
        ok = status == 200
        e2e = time.perf_counter() - self.t0
        m.requests.labels(self.model, self.route, str(status)).inc()
        outcome = "success" if ok else "error"
        m.e2e.labels(self.model, outcome).observe(e2e)
        if not self.stream:
            m.non_streaming.labels(self.model, outcome).observe(e2e)
        if st.ttft_s is not None:
            m.ttft.labels(self.model).observe(st.ttft_s)
        if st.ttfa_s is not None:
            m.ttfa.labels(self.model).observe(st.ttfa_s)
        itl = m.itl.labels(self.model)
        for g in st.gaps_s:
            itl.observe(g)
        usage = st.usage or Usage(0, st.chunks)
        if usage.prompt_tokens:
            m.prompt_tokens.labels(self.model).inc(usage.prompt_tokens)
        if usage.completion_tokens:
            m.completion_tokens.labels(self.model).inc(usage.completion_tokens)
        gw.limiter.settle(self.who, self.estimate, usage.total)
        if self.span is not None:
            self.span.set_attributes({
                "http.response.status_code": status,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "qwen_serve.ttft_s": st.ttft_s if st.ttft_s is not None else -1.0,
                "qwen_serve.client_disconnected": st.disconnected,
            })  # fmt: skip
            if not ok:
                self.span.set_status(Status(StatusCode.ERROR, st.error or f"HTTP {status}"))
            self.span.end()
        if not access_log.isEnabledFor(logging.INFO):
            return
        access_log.info(
            "%s %s %d",
            self.route,
            self.model,
            status,
            extra={
                "route": self.route,
                "model": self.model,
                "status": status,
                "engine": self.endpoint.replica_id if self.endpoint else None,
                "duration_s": round(e2e, 6),
                "ttft_s": st.ttft_s,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "error": st.error,
            },
        )


class Gateway:
    """State and handlers of one gateway app (one per ``create_app`` call)."""

    def __init__(
        self,
        settings: Settings,
        endpoints: EndpointSource,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        tracer_provider: TracerProvider | None = None,
        rng: random.Random | None = None,
        request_id_header: bool = True,
    ) -> None:
        self.settings = settings
        self.request_id_header = request_id_header
        self.generation: dict[str, tuple[type[ChatCompletionRequest | CompletionRequest], bool]] = {
            r.path: (r.request_model, r.path == "/v1/chat/completions")  # type: ignore[misc]
            for r in ROUTES
            if r.handler in GENERATION_HANDLERS
        }
        self.source = endpoints
        g = settings.gateway
        self.limits = g.limits
        self.served_model = str(settings.model.served_name)
        self.keys = KeyStore(g.api_keys)
        self.limiter = RateLimiter(g.limits)
        self.metrics = GatewayMetrics()
        self.outstanding = Outstanding()
        self.router = make_router(settings.routing, self.outstanding, rng)
        self.tracer_provider = tracer_provider or make_tracer_provider(settings.telemetry)
        self.tracer = self.tracer_provider.get_tracer("serving.gateway")
        self.upstream_headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if settings.engine.api_key is not None:
            self.upstream_headers["authorization"] = f"Bearer {settings.engine.api_key.get_secret_value()}"
        timeouts = {"connect_timeout_s": g.connect_timeout_s, "read_timeout_s": g.request_timeout_s}
        self.client: EngineClient = (
            AiohttpEngineClient(**timeouts, user_agent="qwen-serve-gateway")
            if transport is None
            else HttpxEngineClient(transport, **timeouts, user_agent="qwen-serve-gateway")
        )
        self.in_flight = 0
        self.session_header = settings.routing.session_header.lower().encode("latin-1")

    # ---- lifecycle -------------------------------------------------------------------------
    async def shutdown(self) -> None:
        await self.client.aclose()
        self.tracer_provider.shutdown()

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        log.info("gateway up: model=%s policy=%s auth=%s", self.served_model,
                 self.settings.routing.policy.value, self.keys.enabled)  # fmt: skip
        yield
        await self.shutdown()

    # ---- helpers ---------------------------------------------------------------------------
    async def _read_body(self, incoming: Incoming, receive: Receive) -> bytes:
        cap = self.limits.max_body_bytes
        declared = incoming.header(b"content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise ApiError(413, f"request body larger than {cap} bytes", code="body_too_large")
        chunks, n = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone
            c = message.get("body", b"")
            n += len(c)
            if n > cap:
                raise ApiError(413, f"request body larger than {cap} bytes", code="body_too_large")
            chunks.append(c)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _live(self) -> Sequence[Endpoint]:
        try:
            return [e for e in await self.source.endpoints() if not e.draining]
        except Exception as exc:  # the registry being unreachable is an outage, not a bug
            log.warning("endpoint source failed: %s", exc)
            raise ApiError(503, "engine registry unavailable", code="registry_unavailable", retry_after_s=2) from None

    def _known_models(self, live: Sequence[Endpoint]) -> list[str]:
        return sorted({self.served_model, *(e.model for e in live)})

    async def _open(
        self, ctx: RequestContext, candidates: Sequence[Endpoint], path: str, payload: bytes,
        headers: dict[str, str], stream: bool, call: Call,
    ) -> Upstream | tuple[Endpoint, bytes]:  # fmt: skip
        """Send to an engine; retry once on another engine if it fails before the first byte."""
        tried: set[str] = set()
        attempts = 2 if self.settings.routing.retry_before_first_byte else 1
        last: ApiError | None = None
        for attempt in range(attempts):
            pool = [e for e in candidates if e.url not in tried]
            if not pool:
                break
            if attempt:
                self.metrics.upstream_retries.inc()
            ep = await self.router.choose(ctx, pool)
            tried.add(ep.url)
            self.outstanding.inc(ep.url)
            call.endpoint = ep
            self.metrics.routed.labels(ep.replica_id, self.settings.routing.policy.value).inc()
            resp = None
            try:
                resp = await self.client.post(ep.url.rstrip("/") + path, payload, headers)
                if resp.status == 200:
                    if stream:
                        chunks = resp.chunks()
                        first = b""
                        async for first in chunks:
                            if first:
                                break
                        return Upstream(ep, resp, chunks, first)
                    body = await resp.read()
                    await resp.close()
                    return ep, body
                body = await resp.read()
                await resp.close()
                err = from_upstream(resp.status, body)
                if resp.status not in RETRYABLE_UPSTREAM_STATUS:
                    raise err  # the engine judged the request: another engine would too
                last = err
            except EngineConnectionError as exc:
                if resp is not None:
                    await resp.close()
                log.warning("engine %s failed before the first byte: %s", ep.replica_id, exc)
                last = ApiError(503, "engine unavailable", code="engine_unavailable", retry_after_s=1)
            except BaseException:
                if resp is not None:
                    await resp.close()
                self.outstanding.dec(ep.url)
                call.endpoint = None
                raise
            self.outstanding.dec(ep.url)
            call.endpoint = None
        raise last or ApiError(503, "no engine available", code="no_engine", retry_after_s=1)

    # ---- the generation routes: plain ASGI, no framework layer between engine and server --------
    # FastAPI's entries of the two routes (the OpenAPI document, and any caller that bypasses
    # GatewayApp.__call__) run the same ASGI handler.
    async def chat_completions(self, request: Request) -> Response:
        return AsgiCall(self.serve_generation)

    async def completions(self, request: Request) -> Response:
        return AsgiCall(self.serve_generation)

    async def serve_generation(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI handler of ``POST /v1/chat/completions`` and ``POST /v1/completions``.

        ``GatewayApp`` calls it before FastAPI's routing and middleware, so a stream's chunks go
        from the engine read straight to the server's ``send``. It does the request id itself,
        with the same rules as :class:`RequestIdMiddleware`."""
        incoming = Incoming.of(scope)
        rid = incoming.request_id()
        token = REQUEST_ID.set(rid)
        id_header = [(b"x-request-id", rid.encode("latin-1"))] if self.request_id_header else []
        relay: Relay | None = None
        try:
            schema, chat = self.generation[incoming.path]
            result = await self._generate(incoming, receive, schema, chat=chat)
            if isinstance(result, Relay):
                relay = result
                await relay.run(receive, send, [*SSE_HEADERS, *id_header])
            else:
                headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(result))]
                await send({"type": "http.response.start", "status": 200, "headers": [*headers, *id_header]})
                await send({"type": "http.response.body", "body": result, "more_body": False})
        except ApiError as err:
            await self._send_error(send, incoming, err, rid, id_header)
        except ClientGone:
            pass  # the client left while sending its body: nobody to answer
        except Exception:
            log.exception("unhandled error on %s", incoming.path)
            if relay is None:  # after a relay started, the stream itself reports (or already ended)
                internal = ApiError(500, "internal gateway error", code="internal_error")
                await self._send_error(send, incoming, internal, rid, id_header)
        finally:
            REQUEST_ID.reset(token)

    async def _send_error(
        self, send: Send, incoming: Incoming, err: ApiError, rid: str, id_header: list[tuple[bytes, bytes]]
    ) -> None:
        self._count_error(incoming.path, incoming.model, incoming.counted, err)
        resp = err.response(rid)
        headers = [(k, v) for k, v in resp.raw_headers if k != b"x-request-id"]
        await send({"type": "http.response.start", "status": resp.status_code, "headers": [*headers, *id_header]})
        await send({"type": "http.response.body", "body": resp.body, "more_body": False})

    async def _generate(
        self, incoming: Incoming, receive: Receive, schema: type[ChatCompletionRequest | CompletionRequest],
        *, chat: bool,
    ) -> Relay | bytes:  # fmt: skip
        t0 = time.perf_counter()
        path = incoming.path
        who = self.keys.authenticate(incoming.header(b"authorization"))
        raw = await self._read_body(incoming, receive)
        try:
            req = schema.model_validate_json(raw)
        except ValidationError as exc:
            raise from_validation(exc) from None
        check_limits(req, self.limits, self.settings.resolved_context_length)
        body: dict[str, Any] = forwarded_body(loads(raw), req)
        incoming.model = req.model
        live = await self._live()
        if req.model not in self._known_models(live):
            raise ApiError(404, f"model {req.model!r} is not served here; see GET /v1/models",
                           code="model_not_found", param="model")  # fmt: skip
        candidates = [e for e in live if e.model == req.model]
        if not candidates:
            raise ApiError(503, f"no engine is ready for model {req.model!r}", code="no_engine", retry_after_s=2)
        if self.in_flight >= self.limits.max_in_flight:
            raise ApiError(503, "gateway at capacity", code="overloaded", retry_after_s=1)
        estimate = estimate_prompt_tokens(len(raw))
        self.limiter.admit(who, estimate)

        thinking = apply_presets(body, self.settings, chat=chat)
        client_usage = bool(req.stream and req.stream_options and req.stream_options.include_usage)
        if req.stream:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        ctx = RequestContext(
            model=req.model,
            prefix=affinity_prefix(body, self.settings.routing.prefix_chars),
            session=incoming.header(self.session_header),
        )
        rid = REQUEST_ID.get()
        call = Call(self, path, req.model, who, estimate, t0)
        call.stream = bool(req.stream)
        incoming.counted = True
        self.in_flight += 1
        parent = PROPAGATOR.extract(carrier=incoming.trace_carrier()) if b"traceparent" in incoming.headers else None
        call.span = self.tracer.start_span(f"POST {path}", context=parent, kind=SpanKind.SERVER)
        call.span.set_attributes({
            "gen_ai.request.model": req.model,
            "gen_ai.request.stream": bool(req.stream),
            "qwen_serve.thinking": thinking,
            "qwen_serve.request_id": rid or "",
            "qwen_serve.api_key_id": key_id(who),
            "qwen_serve.routing_policy": self.settings.routing.policy.value,
        })  # fmt: skip
        headers = dict(self.upstream_headers)
        if rid:
            headers["x-request-id"] = rid
        inject_headers(call.span, headers)

        def done(status: int = 200) -> None:
            self.in_flight -= 1
            call.finish(status)

        try:
            opened = await self._open(ctx, candidates, path, dumps(body), headers, bool(req.stream), call)
        except ApiError as err:
            done(err.status)
            raise
        except BaseException:
            done(499)
            raise
        assert call.endpoint is not None
        engine = get_engine(call.endpoint.engine)
        rename = f'"{engine.reasoning_field}":'.encode() if engine.reasoning_field != "reasoning_content" else None
        call.span.set_attributes({"qwen_serve.engine.replica_id": call.endpoint.replica_id,
                                  "qwen_serve.engine.url": call.endpoint.url,
                                  "qwen_serve.engine.kind": call.endpoint.engine})  # fmt: skip
        if isinstance(opened, Upstream):
            rewriter = SseRewriter(call.stats, keep_usage=client_usage, rename_reasoning=rename)
            return Relay(opened, rewriter, t0=t0, on_done=done, request_id=rid)
        _, content = opened
        if rename is not None:
            content = content.replace(rename, b'"reasoning_content":')
        try:
            call.stats.usage = Usage.from_obj(loads(content).get("usage"))
        except (ValueError, AttributeError):
            call.stats.usage = None
        call.stats.completed = True
        done(200)
        return content

    async def models(self, request: Request) -> JSONResponse:
        self.keys.authenticate(request.headers.get("authorization"))
        live = await self._live()
        now = int(time.time())
        data = [
            {"id": m, "object": "model", "created": now, "owned_by": "qwen-serve"} for m in self._known_models(live)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> JSONResponse:
        live = [e for e in await self._live() if e.model == self.served_model]
        if not live:
            raise ApiError(503, f"no engine ready for {self.served_model!r}", code="not_ready", retry_after_s=2)
        return JSONResponse({"status": "ready", "model": self.served_model, "endpoints": len(live)})

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    # ---- errors ----------------------------------------------------------------------------
    def error_response(self, request: Request, err: ApiError) -> JSONResponse:
        self._count_error(request.url.path, getattr(request.state, "model", None),
                          getattr(request.state, "counted", False), err)  # fmt: skip
        return err.response(REQUEST_ID.get())

    def _count_error(self, path: str, model: str | None, counted: bool, err: ApiError) -> None:
        """Metrics and the access line of a request refused before its ``Call`` existed."""
        if counted:
            return
        route = path[:64]
        self.metrics.requests.labels(model or "unknown", route, str(err.status)).inc()
        if err.status in (429, 503):  # refused for capacity or limits, before any engine saw it
            self.metrics.rejections.labels(err.code or str(err.status)).inc()
        access_log.info("%s %d %s", route, err.status, err.code,
                        extra={"route": route, "status": err.status, "code": err.code})  # fmt: skip


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document with the request schemas the handlers validate against (the handlers
    read raw bytes for speed, so FastAPI cannot infer them)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        for r in ROUTES:
            if r.request_model is None:
                continue
            schema = r.request_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[r.request_model.__name__] = schema
            op = doc["paths"][r.path][r.method.lower()]
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{r.request_model.__name__}"}}
                },
            }
        app.openapi_schema = doc
        return doc

    return build


class GatewayApp(FastAPI):
    """FastAPI, except that ``POST`` on the two generation routes goes straight to
    :meth:`Gateway.serve_generation`: no routing, middleware or exception layers per request or
    per streamed chunk. Every other request takes FastAPI's usual path."""

    def __init__(self, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gateway = gateway
        origins = gateway.settings.gateway.cors_origins
        # CORS (browser clients) wraps both paths, outermost; absent unless origins are configured.
        self._entry: ASGIApp = self._dispatch
        if origins:
            self._entry = CORSMiddleware(
                self._dispatch,
                allow_origins=origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=[
                    "authorization",
                    "content-type",
                    "x-request-id",
                    "traceparent",
                    gateway.settings.routing.session_header,
                ],
                expose_headers=["x-request-id", "retry-after"],
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and route_path(scope) in self.gateway.generation:
            await self.gateway.serve_generation(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    endpoints: EndpointSource,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    tracer_provider: TracerProvider | None = None,
    rng: random.Random | None = None,
    request_id_header: bool = True,
) -> FastAPI:
    """A new gateway app. ``transport`` replaces the network under the engine client (tests);
    ``tracer_provider`` replaces the one built from ``settings.telemetry``; ``request_id_header``
    False when the server in front already sets ``x-request-id`` on responses (Ray Serve)."""
    gw = Gateway(settings, endpoints, transport=transport, tracer_provider=tracer_provider, rng=rng,
                 request_id_header=request_id_header)  # fmt: skip
    app = GatewayApp(
        gw,
        title="qwen-serve gateway",
        version="1",
        description="OpenAI-compatible API in front of SGLang / vLLM / llama.cpp engines",
        lifespan=gw.lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.gateway = gw
    for r in ROUTES:
        app.add_api_route(r.path, getattr(gw, r.handler), methods=[r.method], summary=r.summary,
                          response_model=None)  # fmt: skip

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return gw.error_response(request, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return gw.error_response(request, ApiError(exc.status_code, str(exc.detail), code=code))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return gw.error_response(request, ApiError(500, "internal gateway error", code="internal_error"))

    # Middleware order (outermost first): request id → FastAPI's exception middleware → routes.
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_middleware(RequestIdMiddleware, set_header=request_id_header)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app
