"""The relay sends a stream's first and last messages through the ``send`` it was given (the
wrappers of Serve's that watch them) and every body message between them through ``body_send``
(the server's own send, handed over by ``ingress.GatewayWatchesDisconnects``). The read that
carries ``[DONE]`` is the last message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from serving.gateway.relay import Relay, SseRewriter, StreamStats

pytestmark = pytest.mark.unit

EVENTS = [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', b'data: {"choices":[{"delta":{"content":"b"}}]}\n\n',
          b"data: [DONE]\n\n"]  # fmt: skip


async def _rest() -> AsyncIterator[bytes]:
    for ev in EVENTS[1:]:
        yield ev


async def _relay(body_send: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    wrapped: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        wrapped.append(m)

    async def server_send(m: dict[str, Any]) -> None:
        raw.append(m)

    stats = StreamStats()
    upstream: Any = SimpleNamespace(first=EVENTS[0], chunks=_rest())
    relay = Relay(upstream, SseRewriter(stats, keep_usage=False, rename_reasoning=None), t0=0.0, request_id="r")
    await relay.run(send, [], lambda: None, server_send if body_send else None)
    assert stats.completed
    return wrapped, raw


async def test_the_middle_of_a_stream_goes_to_the_servers_own_send():
    wrapped, raw = await _relay(body_send=True)
    assert [m["type"] for m in wrapped] == ["http.response.start", "http.response.body"]
    # the read carrying [DONE] ends the response: the server writes it and the end in one write
    assert wrapped[-1] == {"type": "http.response.body", "body": EVENTS[-1], "more_body": False}
    assert b"".join(m["body"] for m in raw) == b"".join(EVENTS[:-1])
    assert all(m["more_body"] for m in raw)


async def test_without_a_body_send_every_message_goes_through_send():
    wrapped, raw = await _relay(body_send=False)
    assert not raw
    assert b"".join(m.get("body", b"") for m in wrapped) == b"".join(EVENTS)
