"""The relay's last body message is the read that carried ``[DONE]`` (``more_body`` False), so the
server writes it and the end of the response at once; every message before it says more is to come."""

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


async def test_the_read_carrying_done_is_the_last_message():
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    stats = StreamStats()
    upstream: Any = SimpleNamespace(first=EVENTS[0], chunks=_rest())
    relay = Relay(upstream, SseRewriter(stats, keep_usage=False, rename_reasoning=None), t0=0.0, request_id="r")
    await relay.run(send, [], lambda: None)
    assert stats.completed
    assert sent[0]["type"] == "http.response.start"
    body = sent[1:]
    assert body[-1] == {"type": "http.response.body", "body": EVENTS[-1], "more_body": False}
    assert all(m["more_body"] for m in body[:-1])
    assert b"".join(m["body"] for m in body) == b"".join(EVENTS)
