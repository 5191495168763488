"""The OpenAI-compatible gateway as a plain ASGI app: ``create_app(settings, endpoints)``.

Per generation request: request id → auth → body size → validate (schema + limits) → model lookup
→ rate limit → presets → ledger entry → dispatch to an engine (one retry before the first byte)
→ relay bytes. The pieces live by concern: ASGI plumbing in :mod:`~serving.gateway.asgi`, the
request ledger (in-flight count, metrics, limiter settlement, span, access log) in
:mod:`~serving.gateway.ledger`, engine dispatch in :mod:`~serving.gateway.upstream`, the stream
relay in :mod:`~serving.gateway.relay`, the OpenAPI document in :mod:`~serving.gateway.openapi`.
Routes are the table ``ROUTES``; errors of every kind become the OpenAI error shape in
:mod:`serving.gateway.errors`; nothing lives at module level but definitions.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.config.settings import Settings
from serving.gateway.admission import Admission
from serving.gateway.asgi import (
    ClientGone,
    DisconnectGuard,
    Incoming,
    dumps,
    loads,
    read_body,
    request_id_of,
    route_path,
    send_error,
    send_json,
)
from serving.gateway.assemble import upstream_body, whole_answer
from serving.gateway.auth import KeyStore, RateLimiter, estimate_prompt_tokens, key_id
from serving.gateway.engine_client import EngineClient, HttpxEngineClient, WireEngineClient
from serving.gateway.errors import ApiError, from_validation
from serving.gateway.ledger import Entry, Ledger
from serving.gateway.openapi import openapi_builder
from serving.gateway.presets import apply_presets
from serving.gateway.relay import SSE_HEADERS, Relay, SseRewriter, Usage, with_reasoning_tokens
from serving.gateway.routing import Outstanding, history_s, make_router
from serving.gateway.schemas import ChatCompletionRequest, CompletionRequest, check_limits, forwarded_body
from serving.gateway.shared_limits import SharedRateLimiter
from serving.gateway.upstream import Dispatcher, Upstream
from serving.gateway.vision import check_images, check_text_body
from serving.observability.logging import REQUEST_ID
from serving.observability.metrics import GatewayMetrics
from serving.observability.tracing import PROPAGATOR, inject_headers, make_tracer_provider, records_roots
from serving.registry import Endpoint, EndpointSource

log = logging.getLogger("serving.gateway")

REASONING_CONTENT = "reasoning_content"
COLD_START_POLL_S = 0.2  # how often a held request looks for an engine (the registry is read ~1/s)


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    handler: str  # name of the Gateway method
    summary: str
    request_model: type[BaseModel] | None = None

    @property
    def generation(self) -> bool:
        """Served as plain ASGI by ``Gateway.serve_generation``, not through FastAPI."""
        return self.request_model is not None


ROUTES: tuple[Route, ...] = (
    Route("/v1/chat/completions", "POST", "chat_completions", "Chat completion (stream or not)", ChatCompletionRequest),
    Route("/v1/completions", "POST", "completions", "Text completion (stream or not)", CompletionRequest),
    Route("/v1/models", "GET", "models", "Models served behind this gateway"),
    Route("/health", "GET", "health", "Liveness: the gateway process answers"),
    Route("/ready", "GET", "ready", "Readiness: at least one engine serves the configured model"),
    Route("/metrics", "GET", "prometheus", "Prometheus metrics of this gateway"),
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
        shared_limits: bool = False,
    ) -> None:
        self.settings = settings
        self.generation: dict[str, tuple[type[ChatCompletionRequest | CompletionRequest], bool]] = {
            r.path: (r.request_model, r.path == "/v1/chat/completions")  # type: ignore[misc]
            for r in ROUTES
            if r.generation
        }
        self.source = endpoints
        g = settings.gateway
        self.limits = g.limits
        self.served_model = str(settings.model.served_name)
        self.keys = KeyStore(g.api_keys)
        self.metrics = GatewayMetrics()
        self.tracer_provider = tracer_provider or make_tracer_provider(settings.telemetry)
        shared = g.limits.share_across_replicas and shared_limits
        limiter = SharedRateLimiter(g.limits) if shared else RateLimiter(g.limits)
        self.ledger = Ledger(self.metrics, limiter, self.tracer_provider.get_tracer("serving.gateway"),
                             roots=records_roots(self.tracer_provider))  # fmt: skip
        outstanding = Outstanding(history=history_s(settings.autoscaling.metrics_interval_s))
        self.router = make_router(settings.routing, outstanding, rng=rng)
        self.upstream_headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if settings.engine.api_key is not None:
            self.upstream_headers["authorization"] = f"Bearer {settings.engine.api_key.get_secret_value()}"
        timeouts = {"connect_timeout_s": g.connect_timeout_s, "read_timeout_s": g.request_timeout_s}
        client: EngineClient = (
            WireEngineClient(**timeouts, user_agent="qwen-serve-gateway")
            if transport is None
            else HttpxEngineClient(transport, **timeouts, user_agent="qwen-serve-gateway")
        )
        self.dispatcher = Dispatcher(client, self.router, self.metrics, policy=settings.routing.policy.value,
                                     retry=settings.routing.retry_before_first_byte)  # fmt: skip
        self.session_header = settings.routing.session_header.lower().encode("latin-1")
        self.admission = Admission(g.limits, self.router, self.metrics, self._model_endpoints)
        # Scale to zero: hold requests while a replica starts, if the source can wake the engines.
        a = settings.autoscaling
        wakes = bool(getattr(endpoints, "wakes_from_zero", False))
        self.cold_start_wait_s = a.cold_start_wait_s if wakes and a.min_replicas == 0 else 0.0
        self.cold_waiting = 0

    # ---- lifecycle -------------------------------------------------------------------------
    async def shutdown(self) -> None:
        await self.dispatcher.client.aclose()
        self.tracer_provider.shutdown()

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        log.info("gateway up: model=%s policy=%s auth=%s", self.served_model,
                 self.settings.routing.policy.value, self.keys.enabled)  # fmt: skip
        yield
        await self.shutdown()

    # ---- helpers ---------------------------------------------------------------------------
    async def _live(self) -> Sequence[Endpoint]:
        try:
            return [e for e in await self.source.endpoints() if not e.draining]
        except Exception as exc:  # the registry being unreachable is an outage, not a bug
            log.warning("endpoint source failed: %s", exc)
            raise ApiError(503, "engine registry unavailable", code="registry_unavailable", retry_after_s=2) from None

    async def _model_endpoints(self, model: str) -> list[Endpoint]:
        return [e for e in await self._live() if e.model == model]

    def _known_models(self, live: Sequence[Endpoint]) -> list[str]:
        return sorted({self.served_model, *(e.model for e in live)})

    # ---- the generation routes: plain ASGI, no framework layer between engine and server --------
    async def serve_generation(
        self, scope: Scope, receive: Receive, send: Send, rid: str, id_header: list[tuple[bytes, bytes]]
    ) -> None:
        """ASGI handler of ``POST /v1/chat/completions`` and ``POST /v1/completions``; ``id_header``
        goes on the response (empty when the server in front adds one).

        ``GatewayApp`` calls it before FastAPI's routing and middleware, so a stream's chunks go
        from the engine read straight to the server's ``send``. From the moment the body has been
        read, a client disconnect cancels the request wherever it is (``DisconnectGuard``)."""
        incoming = Incoming.of(scope, rid)
        guard: DisconnectGuard | None = None
        try:
            schema, chat = self.generation[incoming.path]
            who = self.keys.authenticate(incoming.header(b"authorization"))
            cap = max(self.limits.max_body_bytes, self.limits.max_image_body_bytes)
            raw = await read_body(incoming, receive, cap)
            if b'"image_url"' not in raw:  # no image can be in it: refuse an oversize body before parsing
                check_text_body(len(raw), self.limits)
            guard = DisconnectGuard(receive)
            await self._generate(incoming, who, raw, schema, chat, send, id_header, guard)
        except ApiError as err:
            if guard is not None:
                guard.done()
            if not incoming.entered:
                self.ledger.refused(incoming.path, incoming.model, err)
            await send_error(send, err, rid, id_header)
        except ClientGone:
            pass  # the client left while sending its body: nobody to answer
        except asyncio.CancelledError:
            if guard is None or not guard.absorb():
                raise  # the server cancelled the call; the ledger has recorded the request already
            if not incoming.entered:  # left while waiting for an engine to start
                self.ledger.refused(incoming.path, incoming.model, ApiError(499, "client left", code="client_closed"))
        except Exception:
            log.exception("unhandled error on %s", incoming.path)
            if not incoming.responding:  # after a response began, only the stream itself can report
                if guard is not None:
                    guard.done()
                await send_error(send, ApiError(500, "internal gateway error", code="internal_error"), rid, id_header)
        finally:
            if guard is not None:
                guard.stop()

    async def _generate(
        self, incoming: Incoming, who: str, raw: bytes, schema: type[ChatCompletionRequest | CompletionRequest],
        chat: bool, send: Send, id_header: list[tuple[bytes, bytes]], guard: DisconnectGuard,
    ) -> None:  # fmt: skip
        t0 = time.perf_counter()
        path = incoming.path
        try:
            req = schema.model_validate_json(raw)
        except ValidationError as exc:
            raise from_validation(exc) from None
        check_limits(req, self.limits, self.settings.resolved_context_length)
        body: dict[str, Any] = forwarded_body(loads(raw), req)
        images = check_images(body if chat else {}, self.limits, len(raw))
        incoming.model = req.model
        live = await self._live()
        if req.model not in self._known_models(live):
            raise ApiError(404, f"model {req.model!r} is not served here; see GET /v1/models",
                           code="model_not_found", param="model")  # fmt: skip
        candidates: Sequence[Endpoint] = [e for e in live if e.model == req.model] or await self._cold_start(req.model)
        if self.ledger.in_flight >= self.limits.max_in_flight:
            raise ApiError(503, "gateway at capacity", code="overloaded", retry_after_s=1)
        estimate = estimate_prompt_tokens(len(raw) - images.payload_bytes) + images.tokens
        tenant = self.keys.tenant(who, incoming.client)
        await self.ledger.admit(tenant, estimate)

        thinking = apply_presets(body, self.settings, chat=chat)
        client_usage = bool(req.stream and req.stream_options and req.stream_options.include_usage)
        ctx = self.router.context(req.model, body, incoming.header(self.session_header))
        rid = incoming.request_id
        parent = PROPAGATOR.extract(carrier=incoming.trace_carrier()) if b"traceparent" in incoming.headers else None
        entry = self.ledger.open(path, req.model, tenant.id, estimate, t0, parent=parent, attributes={
            "gen_ai.request.model": req.model,
            "gen_ai.request.stream": bool(req.stream),
            "qwen_serve.thinking": thinking,
            "qwen_serve.request_id": rid,
            "qwen_serve.api_key_id": key_id(who),
            "qwen_serve.routing_policy": self.settings.routing.policy.value,
            "qwen_serve.tenant": tenant.name,
        })  # fmt: skip
        entry.stream = bool(req.stream)
        entry.images = images
        incoming.entered = True
        headers = dict(self.upstream_headers)
        headers["x-request-id"] = rid
        inject_headers(entry.span, headers)
        status = 500
        upstream: Upstream | None = None
        try:
            candidates = await self.admission.admit(req.model, tenant, candidates)
            # engines that abort a left client's request only while streaming it stream even a whole answer
            assemble = not req.stream and any(e.abort_needs_stream for e in candidates)
            streamed = bool(req.stream) or assemble
            if streamed:
                body = upstream_body(body, stream=bool(req.stream))
            upstream = await self.dispatcher.open(ctx, candidates, path, dumps(body), headers, stream=streamed)
            entry.engine(upstream.endpoint)
            field = upstream.endpoint.reasoning_field
            rename = f'"{field}":'.encode() if field != REASONING_CONTENT else None
            incoming.responding = True
            if req.stream:
                rewriter = SseRewriter(entry.stats, keep_usage=client_usage, rename_reasoning=rename)
                relay = Relay(upstream, rewriter, t0=t0, request_id=rid)
                await relay.run(send, [*SSE_HEADERS, *id_header], guard.done)
            else:
                first = await whole_answer(upstream, chat=chat) if assemble else upstream.first
                content = self._whole_answer(entry, first, rename, t0)
                guard.done()
                await send_json(send, 200, content, id_header)
            status = 200
        except ApiError as err:
            status = err.status
            raise
        except asyncio.CancelledError:
            if not guard.finished:
                entry.stats.disconnected = True  # our guard, or the server: the client went away
            raise
        finally:
            if upstream is not None:
                await upstream.close()  # before the last byte: drops the connection, the engine aborts
                self.admission.poke()
            entry.finish(status)

    async def _cold_start(self, model: str) -> list[Endpoint]:
        """No engine serves ``model`` yet: hold the request (at most ``limits.max_queued`` of them)
        for up to ``autoscaling.cold_start_wait_s`` while the endpoint source wakes the engine
        deployment; 503 + Retry-After past either bound."""
        wait_s = self.cold_start_wait_s
        if wait_s <= 0 or self.cold_waiting >= self.limits.max_queued:
            why = "" if wait_s <= 0 else f" and {self.cold_waiting} requests already wait for one"
            raise ApiError(503, f"no engine is ready for model {model!r}{why}", code="no_engine", retry_after_s=2)
        m = self.metrics
        self.cold_waiting += 1
        m.queued.labels("cold_start").inc()
        t0 = time.perf_counter()
        try:
            while True:
                await asyncio.sleep(COLD_START_POLL_S)
                found = [e for e in await self._live() if e.model == model]
                if found:
                    m.queue_wait.labels(model, "cold_start").observe(time.perf_counter() - t0)
                    return found
                if time.perf_counter() - t0 >= wait_s:
                    raise ApiError(503, f"no engine became ready for model {model!r} within {wait_s:g}s",
                                   code="no_engine", retry_after_s=max(2.0, wait_s / 4))  # fmt: skip
        finally:
            self.cold_waiting -= 1
            m.queued.labels("cold_start").dec()

    @staticmethod
    def _whole_answer(entry: Entry, content: bytes, rename: bytes | None, t0: float) -> bytes:
        if rename is not None:
            content = content.replace(rename, b'"reasoning_content":')
        try:
            answer = loads(content)
            usage = Usage.from_obj(answer.get("usage"))
        except (ValueError, AttributeError):
            entry.stats.usage = None
            entry.stats.completed = True
            return content
        entry.stats.usage = usage
        entry.stats.completed = True
        if usage.reasoning_tokens is None and b'"reasoning_content"' in content:
            # the engine did not count it: the reasoning's share of the answer's text, in tokens
            entry.stats.reasoning_counted = _reasoning_share(answer, usage.completion_tokens)
            if entry.stats.reasoning_counted and isinstance(answer.get("usage"), dict):
                with_reasoning_tokens(answer["usage"], entry.stats.reasoning_counted)
                return dumps(answer)
        return content

    # ---- the framework routes -----------------------------------------------------------------
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

    def error_response(self, request: Request, err: ApiError) -> JSONResponse:
        self.ledger.refused(request.url.path, None, err)
        return err.response(REQUEST_ID.get())


def _reasoning_share(answer: dict[str, Any], completion_tokens: int) -> int:
    reasoning = answer_text = 0
    for choice in answer.get("choices") or []:
        message = choice.get("message") or {}
        reasoning += len(message.get("reasoning_content") or "")
        answer_text += len(message.get("content") or "") + len(dumps(message.get("tool_calls") or ""))
    total = reasoning + answer_text
    return round(completion_tokens * reasoning / total) if total else 0


class GatewayApp(FastAPI):
    """FastAPI, except that the two generation routes go straight to
    :meth:`Gateway.serve_generation`: no routing, middleware or exception layers per request or
    per streamed chunk. Every other request takes FastAPI's usual path. The request id (taken from
    ``x-request-id`` or made) is handled here, once, for both paths: it is put in the logging
    context and on the response (unless ``request_id_header`` is off because the server in front
    sets it: Ray Serve's proxy and direct ingress always append one).

    ``self_identified`` is the same app with the id always on the response: what
    ``ingress.GatewayServesGeneration`` calls for the generation routes ahead of Serve's layers,
    the one that would have added it included."""

    def __init__(self, gateway: Gateway, *, request_id_header: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gateway = gateway
        self._entry = self._cors(partial(self._dispatch, own_id=request_id_header))
        self.self_identified = self._cors(partial(self._dispatch, own_id=True))

    def _cors(self, app: ASGIApp) -> ASGIApp:
        """CORS (browser clients) wraps both paths, outermost; absent unless origins are configured."""
        origins = self.gateway.settings.gateway.cors_origins
        if origins:
            return CORSMiddleware(
                app,
                allow_origins=origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=[
                    "authorization",
                    "content-type",
                    "x-request-id",
                    "traceparent",
                    self.gateway.settings.routing.session_header,
                ],
                expose_headers=["x-request-id", "retry-after"],
            )
        return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, *, own_id: bool) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        value = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                value = v
                break
        rid = request_id_of(value)
        token = REQUEST_ID.set(rid)
        gw = self.gateway
        raw = rid.encode("latin-1")
        try:
            path = route_path(scope)
            if path in gw.generation:
                id_header = [(b"x-request-id", raw)] if own_id else []
                if scope["method"] == "POST":
                    await gw.serve_generation(scope, receive, send, rid, id_header)
                else:
                    err = ApiError(405, "Method Not Allowed", code="method_not_allowed")
                    gw.ledger.refused(path, None, err)
                    await send_error(send, err, rid, id_header)
                return

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                    message["headers"] = [*headers, (b"x-request-id", raw)] if own_id else headers
                await send(message)

            await super().__call__(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


async def _served_by_gateway_app(request: Request) -> Response:  # pragma: no cover
    raise AssertionError("GatewayApp serves the generation routes before FastAPI's routing")


def create_app(
    settings: Settings,
    endpoints: EndpointSource,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    tracer_provider: TracerProvider | None = None,
    rng: random.Random | None = None,
    request_id_header: bool = True,
    shared_limits: bool = False,
) -> GatewayApp:
    """A new gateway app. ``transport`` replaces the network under the engine client (tests);
    ``tracer_provider`` replaces the one built from ``settings.telemetry``; ``request_id_header``
    False when the server in front already sets ``x-request-id`` on responses (Ray Serve);
    ``shared_limits`` True under Ray, where ``gateway.limits.share_across_replicas`` leases
    rate-limit capacity from one actor for all gateway replicas."""
    gw = Gateway(settings, endpoints, transport=transport, tracer_provider=tracer_provider, rng=rng,
                 shared_limits=shared_limits)  # fmt: skip
    app = GatewayApp(
        gw,
        request_id_header=request_id_header,
        title="qwen-serve gateway",
        version="1",
        description="OpenAI-compatible API in front of SGLang / vLLM / llama.cpp engines",
        lifespan=gw.lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.gateway = gw
    for r in ROUTES:
        if not r.generation:
            app.add_api_route(r.path, getattr(gw, r.handler), methods=[r.method], summary=r.summary,
                              response_model=None)  # fmt: skip
    # The generation routes head the route table although FastAPI never dispatches them (GatewayApp
    # serves them first): route-name lookups over the table (Serve's, for the requests it passes to
    # the replica: every one on the default-proxy path) then stop at the first entry and label them by
    # path, instead of trying every route twice (with and without a trailing slash) and finding none.
    app.router.routes[:0] = [StarletteRoute(r.path, _served_by_gateway_app, methods=[r.method], include_in_schema=False)
                             for r in ROUTES if r.generation]  # fmt: skip

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

    # Outermost first: CORS (when configured) → request id (GatewayApp) → FastAPI's exception
    # middleware → routes. The generation routes leave the chain after the request id.
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
    app.openapi = openapi_builder(app, ROUTES)  # type: ignore[method-assign]
    return app
