"""The naive Ray Serve path, arm (d): Ray's default HTTP proxy → an ingress deployment → a second
deployment reached through a ``DeploymentHandle`` with ``stream=True`` that yields every SSE line
it reads from the engine. One Ray object per token crosses the handle — the path our design avoids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import StreamingResponse


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024)
class EngineStream:
    def __init__(self, engine_url: str) -> None:
        self.engine_url = engine_url
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=httpx.Limits(max_connections=1024))

    async def stream(self, body: bytes) -> AsyncIterator[bytes]:
        headers = {"content-type": "application/json"}
        url = f"{self.engine_url}/v1/chat/completions"
        async with self.client.stream("POST", url, content=body, headers=headers) as resp:
            async for line in resp.aiter_lines():
                if line:
                    yield (line + "\n\n").encode()


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024)
class NaiveIngress:
    def __init__(self, streamer: DeploymentHandle) -> None:
        self.streamer = streamer.options(stream=True)

    async def __call__(self, request: Request) -> Any:
        body = await request.body()
        gen = self.streamer.stream.remote(body)

        async def relay() -> AsyncIterator[bytes]:
            async for piece in gen:  # type: ignore[union-attr]
                yield piece

        return StreamingResponse(relay(), media_type="text/event-stream")


def build(engine_url: str) -> Any:
    return NaiveIngress.bind(EngineStream.bind(engine_url))  # type: ignore[attr-defined]
