"""Sending a request to an engine: choose one (the routing policy), post, and read up to the first
byte; on an engine failure before that byte, once more on another engine. One result type,
:class:`Upstream`, for streams and whole answers alike.

The router's ``dispatched`` / ``completed`` hooks bracket every engine request, so the per-endpoint
load the policies balance is kept in the router alone: a failed attempt completes at once, a
successful one when its :class:`Upstream` is closed. ``first_byte`` marks the engine's first answer
byte (an engine streams nothing before its prefill is done), so the router knows the prompt work
still queued per engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from serving.gateway.engine_client import WIRE_ERRORS, EngineClient, EngineResponse
from serving.gateway.errors import ApiError, from_upstream
from serving.gateway.routing import Dispatch, RequestContext, Router
from serving.observability.metrics import GatewayMetrics
from serving.registry import Endpoint

log = logging.getLogger("serving.gateway")

RETRYABLE_UPSTREAM_STATUS = frozenset({500, 502, 503, 504})


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover  # makes this an async generator


@dataclass
class Upstream:
    """An engine's 200 answer. Streams: ``first`` is the first non-empty read and ``chunks`` the
    rest of the body. Whole answers: ``first`` is the body and ``chunks`` is empty. ``close``
    (idempotent) releases the connection — dropping it when the body was not read to its end, so
    the engine aborts the request — and tells the router the request is over."""

    endpoint: Endpoint
    response: EngineResponse
    first: bytes
    chunks: AsyncIterator[bytes] = field(default_factory=_empty)
    on_close: Callable[[], None] | None = None

    async def close(self) -> None:
        release, self.on_close = self.on_close, None
        if release is None:
            return
        try:
            if self.response.closes_at_once:  # no await inside: nothing to shield (a task less per request)
                await self.response.close()
            else:
                await asyncio.shield(self.response.close())
        finally:
            release()


class Dispatcher:
    """Opens engine requests for one gateway app."""

    def __init__(
        self, client: EngineClient, router: Router, metrics: GatewayMetrics, *, policy: str, retry: bool
    ) -> None:
        self.client = client
        self.router = router
        self.metrics = metrics
        self.policy = policy
        self.attempts = 2 if retry else 1

    async def open(
        self,
        ctx: RequestContext,
        candidates: Sequence[Endpoint],
        path: str,
        payload: bytes,
        headers: Mapping[str, str],
        *,
        stream: bool,
    ) -> Upstream:
        """The first engine of ``candidates`` (by the policy) that answers 200, or the ApiError of
        the last failure. An engine's 4xx is final: another engine would judge the same."""
        tried: set[str] = set()
        last: ApiError | None = None
        for attempt in range(self.attempts):
            pool = [e for e in candidates if e.url not in tried]
            if not pool:
                break
            if attempt:
                self.metrics.upstream_retries.inc()
            ep = await self.router.choose(ctx, pool)
            tried.add(ep.url)
            sent = self.router.dispatched(ep, ctx)
            self.metrics.child(self.metrics.routed, ep.replica_id, self.policy).inc()
            resp: EngineResponse | None = None
            try:
                resp = await self.client.post(ep.url.rstrip("/") + path, payload, headers)
                if resp.status == 200:
                    done = _once(self.router.completed, sent)
                    if not stream:
                        body = await resp.read()
                        self.router.first_byte(sent)
                        return Upstream(ep, resp, body, on_close=done)
                    chunks = resp.chunks()
                    first = b""
                    async for first in chunks:
                        if first:
                            break
                    self.router.first_byte(sent)
                    return Upstream(ep, resp, first, chunks, on_close=done)
                body = await resp.read()
                await resp.close()
                err = from_upstream(resp.status, body)
                if resp.status not in RETRYABLE_UPSTREAM_STATUS:
                    raise err
                last = err
            except WIRE_ERRORS as exc:
                if resp is not None:
                    await resp.close()
                log.warning("engine %s failed before the first byte: %s", ep.replica_id, exc)
                last = ApiError(503, "engine unavailable", code="engine_unavailable", retry_after_s=1)
            except BaseException:  # a final 4xx, or the client left (cancellation): abort the engine request
                if resp is not None:
                    await asyncio.shield(resp.close())
                self.router.completed(sent)
                raise
            self.router.completed(sent)
        raise last or ApiError(503, "no engine available", code="no_engine", retry_after_s=1)


def _once(fn: Callable[[Dispatch], None], sent: Dispatch) -> Callable[[], None]:
    return lambda: fn(sent)
