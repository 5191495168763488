"""CORS for browser clients: off by default; when origins are configured, preflight and the
streamed generation routes both carry the headers."""

from __future__ import annotations

import pytest
from gateway_fakes import MODEL

pytestmark = pytest.mark.unit
ORIGIN = "https://console.example.com"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}


async def test_no_cors_headers_unless_configured(make_rig):
    rig = await make_rig()
    r = await rig.client.post("/v1/chat/completions", json=BODY, headers={"origin": ORIGIN})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


async def test_configured_origin_gets_preflight_and_streaming_headers(make_rig):
    rig = await make_rig({"gateway": {"cors_origins": [ORIGIN]}})
    pre = await rig.client.options(
        "/v1/chat/completions",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    r = await rig.client.post("/v1/chat/completions", json=BODY, headers={"origin": ORIGIN})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in r.headers["access-control-expose-headers"]
    assert b"[DONE]" in r.content
    other = await rig.client.post("/v1/chat/completions", json=BODY, headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
