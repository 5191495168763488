"""Health means "can generate": for engines whose health endpoint does not prove it (llama.cpp,
vLLM), the replica's health check asks for one token, at most once per period, and fails with the
reason when the engine cannot answer it."""

from __future__ import annotations

import json

import httpx
import pytest

from serving.engines import get_engine
from serving.replica.deployment import GenerationProbe
from serving.replica.instance import EngineUnhealthy

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def probe(handler, clock: Clock) -> tuple[GenerationProbe, list[dict]]:
    seen: list[dict] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append({"path": request.url.path, **json.loads(request.content)})
        return handler(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    return GenerationProbe("smollm2-135m", 30.0, 5.0, client=client, clock=clock), seen


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"text": "p", "index": 0}]})


@pytest.mark.parametrize(("engine", "probes"), [("llamacpp", True), ("vllm", True), ("sglang", False),
                                                 ("simulator", False)])  # fmt: skip
def test_only_engines_whose_health_does_not_generate_are_probed(engine, probes):
    assert get_engine(engine).health_generates is not probes


async def test_one_token_is_asked_at_most_once_per_period():
    clock = Clock()
    p, seen = probe(ok, clock)
    await p.check("http://e:1")
    clock.t += 10
    await p.check("http://e:1")
    assert len(seen) == 1
    assert seen[0]["path"] == "/v1/completions"
    assert seen[0]["max_tokens"] == 1
    clock.t += 30
    await p.check("http://e:1")
    assert len(seen) == 2


@pytest.mark.parametrize(
    "handler",
    [
        lambda r: httpx.Response(503, json={"error": {"message": "loading model"}}),
        lambda r: httpx.Response(200, json={"choices": []}),
        lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("stuck", request=r)),
    ],
    ids=["503", "no-choice", "timeout"],
)
async def test_an_engine_that_cannot_generate_fails_its_health_check(handler):
    p, _ = probe(handler, Clock())
    with pytest.raises(EngineUnhealthy, match="one-token generation"):
        await p.check("http://e:1")


async def test_a_failed_probe_is_retried_at_the_next_check():
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(503) if calls["n"] == 1 else ok(request)

    p, seen = probe(flaky, Clock())
    with pytest.raises(EngineUnhealthy):
        await p.check("http://e:1")
    await p.check("http://e:1")  # no wait after a failure
    assert len(seen) == 2
