"""Traces through a real OTLP collector (rotel, the Rust collector PyPI ships): the gateway, with
``telemetry.otlp_endpoint`` set, exports its spans over OTLP/HTTP to rotel on 127.0.0.1, rotel
forwards them over OTLP/HTTP to a sink this test reads. The ``traceparent`` the gateway sends is
recorded on the way to a real simulator engine."""

from __future__ import annotations

import gzip
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_procs import settings_for

from serving.gateway.auth import digest, key_id
from tests.conftest import free_port, start_uvicorn, stop_uvicorn

pytestmark = pytest.mark.integration

MODEL = "qwen3.6-27b"
KEY = "sk-tenant-trace-0123456789abcdef"
SIM = {
    "model": {"preset": MODEL},
    "engine": {"kind": "simulator", "simulator": {"fixed_ttft_s": 0.02, "fixed_tpot_s": 0.005}},
    "memory": {"max_running_requests": 8},
    "context_length": 32768,
}


class Sink:
    """Receives what the collector exports (OTLP/HTTP protobuf) and keeps the spans."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        if scope["type"] != "http":
            return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        headers = dict(scope["headers"])
        if headers.get(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        if scope["path"] == "/v1/traces":
            req = ExportTraceServiceRequest.FromString(body)
            with self.lock:
                for rs in req.resource_spans:
                    res = {a.key: _any(a.value) for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for sp in ss.spans:
                            self.spans.append({
                                "name": sp.name, "trace_id": sp.trace_id.hex(), "span_id": sp.span_id.hex(),
                                "parent": sp.parent_span_id.hex(), "status": sp.status.code, "resource": res,
                                "attributes": {a.key: _any(a.value) for a in sp.attributes},
                            })  # fmt: skip
        ctype = [(b"content-type", b"application/x-protobuf")]
        await send({"type": "http.response.start", "status": 200, "headers": ctype})
        await send({"type": "http.response.body", "body": b""})

    def wait_for(self, pred: Any, timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                found = [s for s in self.spans if pred(s)]
            if found:
                return found[0]
            time.sleep(0.2)
        pytest.fail(f"no such span reached the sink within {timeout_s}s; got {self.spans}")


def _any(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


class Recorder:
    """A pass-through proxy in front of the engine that records the request headers it forwards."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.headers: list[dict[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        fwd = {k.decode(): v.decode() for k, v in scope["headers"] if k not in (b"host", b"content-length")}
        url = self.upstream + scope["path"]
        async with httpx.AsyncClient(timeout=60) as c, c.stream(scope["method"], url, content=body, headers=fwd) as r:
            await send({"type": "http.response.start", "status": r.status_code,
                            "headers": [(k.encode(), v.encode()) for k, v in r.headers.items()
                                        if k.lower() not in ("content-length", "transfer-encoding")]})  # fmt: skip
            async for chunk in r.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _rotel() -> str:
    import rotel

    binary = Path(rotel.__file__).with_name("rotel-agent")
    if not binary.exists():
        pytest.fail("rotel's collector binary not found: install the dev extra (rotel)")
    return str(binary)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[str, Sink]]:
    """rotel receiving OTLP on 127.0.0.1 (HTTP and gRPC), exporting OTLP/HTTP to the sink."""
    sink = Sink()
    server, thread, sink_url = start_uvicorn(sink)
    http_port, grpc_port = free_port(), free_port()
    log = tmp_path / "rotel.log"
    argv = [_rotel(), "start", "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
            "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}", "--exporter", "otlp",
            "--otlp-exporter-protocol", "http", "--otlp-exporter-endpoint", sink_url,
            "--otlp-exporter-compression", "none", "--batch-timeout", "100ms",
            "--pid-file", str(tmp_path / "rotel.pid")]  # fmt: skip
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"rotel exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                httpx.post(f"http://127.0.0.1:{http_port}/v1/traces", content=b"", timeout=2,
                           headers={"content-type": "application/x-protobuf"})  # fmt: skip
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    pytest.fail(f"rotel not listening after 30 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{http_port}", sink
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        stop_uvicorn(server, thread)
    assert proc.poll() is not None


def test_gateway_spans_reach_a_real_collector_with_ids_tokens_and_errors(collector, start_engine, serve_gateway):
    otlp, sink = collector
    sim = start_engine("sim-trace", SIM)
    recorder = Recorder(sim.url)
    proxy, proxy_thread, proxy_url = start_uvicorn(recorder)
    try:
        settings = settings_for({**SIM, "telemetry": {"otlp_endpoint": otlp, "service_name": "qwen-serve-test"},
                                 "gateway": {"api_keys": {"keys": [KEY]}}})  # fmt: skip
        ep = sim.endpoint()
        ep = type(ep)(ep.replica_id, proxy_url, ep.model, ep.engine)
        gw = serve_gateway(settings, [ep])
        h = {"authorization": f"Bearer {KEY}", "x-request-id": "trace-ok-1"}
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12, "stream": True}
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=h, timeout=60) as r:
            assert r.status_code == 200
            lines = list(r.iter_lines())  # read to the end: leaving early is a client disconnect (499)
        assert "data: [DONE]" in lines

        span = sink.wait_for(lambda s: s["attributes"].get("qwen_serve.request_id") == "trace-ok-1")
        a = span["attributes"]
        assert span["name"] == "POST /v1/chat/completions"
        assert span["resource"]["service.name"] == "qwen-serve-test"
        assert a["gen_ai.request.model"] == MODEL
        assert a["qwen_serve.api_key_id"] == key_id(digest(KEY))
        assert a["gen_ai.usage.input_tokens"] > 0
        assert a["gen_ai.usage.output_tokens"] == 12
        assert a["http.response.status_code"] == 200
        assert span["status"] != 2  # not STATUS_CODE_ERROR
        everything = repr(sink.spans)
        assert KEY not in everything
        assert digest(KEY) not in everything  # not even the full digest

        (sent,) = [hd for hd in recorder.headers if hd.get("x-request-id") == "trace-ok-1"]
        _, trace_id, parent_id, _ = sent["traceparent"].split("-")
        assert (trace_id, parent_id) == (span["trace_id"], span["span_id"])  # the engine joins the trace

        sim.proc.terminate()  # the engine goes away: the next request fails after its span started
        sim.proc.wait(timeout=15)
        h["x-request-id"] = "trace-err-1"
        r = httpx.post(gw.url + "/v1/chat/completions", json={**body, "stream": False}, headers=h, timeout=60)
        assert r.status_code >= 500
        err = sink.wait_for(lambda s: s["attributes"].get("qwen_serve.request_id") == "trace-err-1")
        assert err["status"] == 2  # STATUS_CODE_ERROR
        assert err["attributes"]["http.response.status_code"] == r.status_code
    finally:
        stop_uvicorn(proxy, proxy_thread)
