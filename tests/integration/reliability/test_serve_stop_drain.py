"""`serving serve`'s stop waits for the gateway's streams (its in-flight gauge) before Ray goes
down: a scrape that outlasts its timeout is asked again, and only a gateway that refuses
connections is taken as gone. Against a real HTTP server on 127.0.0.1 that answers as scripted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from serving.local import drain
from tests.conftest import free_port

pytestmark = pytest.mark.integration


class _Scripted(BaseHTTPRequestHandler):
    """Answers ``/metrics`` from ``script``: (seconds to stall, requests in flight) per scrape; the
    last entry repeats."""

    script: ClassVar[list[tuple[float, int]]] = []
    served: ClassVar[list[float]] = []

    def do_GET(self) -> None:
        i = min(len(self.served), len(self.script) - 1)
        self.served.append(time.monotonic())
        stall, in_flight = self.script[i]
        time.sleep(stall)
        body = f"# TYPE qwen_serve_requests_in_flight gauge\nqwen_serve_requests_in_flight {in_flight}\n".encode()
        try:
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the scraper gave up on this one

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, type[_Scripted]]]:
    handler = type("Handler", (_Scripted,), {"script": [], "served": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_scrape_slower_than_its_timeout_does_not_end_the_drain(gateway: tuple[str, type[_Scripted]]) -> None:
    url, handler = gateway
    handler.script[:] = [(2.5, 1), (0.0, 1), (0.0, 1), (0.0, 0)]  # slow, then a stream for two more reads
    t0 = time.monotonic()
    assert drain(url, grace_s=20) == 0.0
    assert len(handler.served) == 4, "drain stopped before the gauge read 0"
    assert time.monotonic() - t0 < 10


def test_the_grace_bounds_the_wait_and_reports_what_was_left(gateway: tuple[str, type[_Scripted]]) -> None:
    url, handler = gateway
    handler.script[:] = [(0.0, 3)]
    t0 = time.monotonic()
    assert drain(url, grace_s=1.5) == 3
    assert 1.5 <= time.monotonic() - t0 < 4


def test_a_gateway_that_refuses_connections_has_nothing_to_drain() -> None:
    t0 = time.monotonic()
    assert drain(f"http://127.0.0.1:{free_port()}", grace_s=20) == 0.0
    assert time.monotonic() - t0 < 3
