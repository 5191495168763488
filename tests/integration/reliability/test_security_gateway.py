"""Security of the gateway in front of a real simulator engine: a key on every model route, keys
held only as digests and compared in constant time (every digest, no early exit), a request id in
every error, the size/count limits, the client key never forwarded to the engine, and no key in
any log line (gateway at DEBUG, the engine's own output)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
from security_support import ENGINE_KEY, KEY, KEY2, LIMITS, MODEL, WRONG, Secured

import serving.gateway.auth as auth

pytestmark = pytest.mark.integration

MODEL_ROUTES = (("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/v1/models"))
OPEN_ROUTES = ("/health", "/ready", "/metrics")


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def assert_error_with_request_id(r: httpx.Response, status: int, sent_id: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"]
    assert r.headers.get_list("x-request-id") == [err["request_id"]]  # exactly one header, same id as the body
    if sent_id is not None:
        assert err["request_id"] == sent_id
    return dict(err)


@pytest.mark.parametrize(("method", "path"), MODEL_ROUTES)
@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer"}, {"authorization": f"Basic {KEY}"}, {"authorization": KEY}, bearer(WRONG),
     bearer(KEY + "x"), bearer(KEY[:-1])],
    ids=["none", "empty-bearer", "basic", "no-scheme", "wrong", "key-plus-one", "key-minus-one"],
)  # fmt: skip
def test_every_model_route_needs_a_valid_key(secured: Secured, method, path, headers):
    body = chat() if path == "/v1/chat/completions" else {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    r = httpx.request(method, secured.url + path, headers=headers, json=body if method == "POST" else None, timeout=30)
    err = assert_error_with_request_id(r, 401)
    assert err["code"] == "invalid_api_key"
    assert KEY not in r.text
    assert WRONG not in r.text


@pytest.mark.parametrize(("method", "path"), MODEL_ROUTES)
@pytest.mark.parametrize("key", [KEY, KEY2])
def test_every_model_route_serves_a_valid_key(secured: Secured, method, path, key):
    body = chat() if path == "/v1/chat/completions" else {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    r = httpx.request(method, secured.url + path, headers=bearer(key), json=body if method == "POST" else None,
                      timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", OPEN_ROUTES)
def test_probes_and_metrics_stay_open(secured: Secured, path):
    assert httpx.get(secured.url + path, timeout=30).status_code == 200


def test_key_store_holds_only_sha256_digests(secured: Secured):
    store = secured.app.state.gateway.keys
    held = json.dumps(vars(store), default=str)
    assert KEY not in held
    assert KEY2 not in held
    assert sorted(store._digests) == sorted(hashlib.sha256(k.encode()).hexdigest() for k in (KEY, KEY2))
    # nor anywhere else on the gateway object (settings keep SecretStr, which never prints its value)
    assert KEY not in repr(vars(secured.app.state.gateway))


@pytest.mark.parametrize("presented", [KEY, KEY2, WRONG], ids=["first", "second", "wrong"])
def test_every_digest_is_compared_with_compare_digest(secured: Secured, monkeypatch, presented):
    calls: list[tuple[str, str]] = []
    real = auth.hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    r = httpx.get(secured.url + "/v1/models", headers=bearer(presented), timeout=30)
    assert r.status_code == (401 if presented == WRONG else 200)
    # constant time: the same number of comparisons whichever key matched (or none), all on digests
    assert len(calls) == 2
    want = hashlib.sha256(presented.encode()).hexdigest()
    assert all(a == want for a, _ in calls)


LIMIT_CASES = [
    ("max_tokens", chat(max_tokens=LIMITS["max_tokens"] + 1), 400, "max_tokens"),
    ("max_completion_tokens", chat(max_completion_tokens=LIMITS["max_tokens"] + 1), 400, "max_completion_tokens"),
    ("n", chat(n=LIMITS["max_n"] + 1), 400, "n"),
    ("stop", chat(stop=["a", "b", "c"]), 400, "stop"),
    ("messages", {**chat(), "messages": [{"role": "user", "content": "hi"}] * (LIMITS["max_messages"] + 1)}, 400,
     "messages"),
    ("body", chat(pad="x" * LIMITS["max_body_bytes"]), 413, None),
]  # fmt: skip


@pytest.mark.parametrize(("what", "body", "status", "param"), LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_limits_are_4xx_naming_the_field(secured: Secured, what, body, status, param):
    rid = f"limit-{what}"
    r = httpx.post(secured.url + "/v1/chat/completions", json=body, timeout=30,
                   headers={**bearer(KEY), "x-request-id": rid})  # fmt: skip
    err = assert_error_with_request_id(r, status, rid)
    assert err["param"] == param


def test_body_limit_holds_without_content_length(secured: Secured):
    def chunks() -> Any:  # chunked upload: no content-length to refuse early on
        yield b'{"model": "' + MODEL.encode() + b'", "pad": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'

    r = httpx.post(secured.url + "/v1/chat/completions", content=chunks(), timeout=30,
                   headers={**bearer(KEY), "content-type": "application/json"})  # fmt: skip
    assert_error_with_request_id(r, 413)


ERROR_CASES = [
    ("unknown-model", "POST", "/v1/chat/completions", {**chat(), "model": "nope"}, 404),
    ("bad-json", "POST", "/v1/chat/completions", b"{", 400),
    ("schema", "POST", "/v1/chat/completions", {"model": MODEL, "messages": "hi"}, 400),
    ("unknown-route", "GET", "/v1/nothing", None, 404),
    ("wrong-method", "GET", "/v1/chat/completions", None, 405),
    ("engine-rejects", "POST", "/v1/chat/completions", chat(messages=[{"role": "user", "content": "x" * 20000}]), 400),
]  # fmt: skip


@pytest.mark.parametrize(("what", "method", "path", "body", "status"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_every_error_carries_the_request_id(secured: Secured, what, method, path, body, status):
    kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.request(method, secured.url + path, headers=bearer(KEY), timeout=30, **kw)
    assert_error_with_request_id(r, status)  # generated when the client sent none
    r = httpx.request(method, secured.url + path, headers={**bearer(KEY), "x-request-id": f"mine-{what}"},
                      timeout=30, **kw)  # fmt: skip
    assert_error_with_request_id(r, status, f"mine-{what}")


def test_no_key_in_any_log_and_the_client_key_never_reaches_the_engine(secured: Secured):
    # traffic with every key: valid (streamed and not), wrong, malformed
    for key in (KEY, KEY2):
        assert httpx.post(secured.url + "/v1/chat/completions", json=chat(), headers=bearer(key), timeout=30).is_success
        with httpx.stream("POST", secured.url + "/v1/chat/completions", json=chat(stream=True), headers=bearer(key),
                          timeout=30) as r:  # fmt: skip
            assert r.status_code == 200
            r.read()
    httpx.post(secured.url + "/v1/chat/completions", json=chat(), headers=bearer(WRONG), timeout=30)
    httpx.post(secured.url + "/v1/chat/completions", json=chat(), headers={"authorization": WRONG}, timeout=30)
    gateway_log = secured.gateway_log.getvalue()
    engine_log = secured.engine_log.read_text(errors="replace")
    assert "serving.gateway.access" in gateway_log  # the capture worked: access lines are there
    for secret in (KEY, KEY2, WRONG, ENGINE_KEY):
        assert secret not in gateway_log
    for secret in (KEY, KEY2, WRONG):
        assert secret not in engine_log
    # The engine is protected by its own key (--api-key): requests only succeed because the gateway
    # presents ENGINE_KEY, not the client's key, and a client key is refused by the engine directly.
    engine_url = secured.app.state.gateway.source._endpoints[0].url
    direct = httpx.post(engine_url + "/v1/chat/completions", json=chat(), headers=bearer(KEY), timeout=30)
    assert direct.status_code == 401
