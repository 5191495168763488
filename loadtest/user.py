"""The Locust user: OpenAI chat completions with streaming, timed event by event.

Importing this module imports Locust (and so gevent's monkey-patching). The HTTP client is
geventhttpclient — the library under Locust's ``FastHttpUser`` — used directly so the body is read
with ``readline`` as bytes land (see :mod:`loadtest.sse`), and each request is reported to
Locust's statistics with ``events.request.fire`` (response time = end-to-end) and written as one
JSON line for exact percentiles.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import ClassVar

import gevent
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL
from locust import User, constant, task

from loadtest.pacer import PoissonPacer
from loadtest.records import JsonlWriter, RequestRecord
from loadtest.scenarios import Conversation, Scenario
from loadtest.sse import read_stream

CHAT_PATH = "/v1/chat/completions"


@dataclass
class UserConfig:
    """What every user of one load-generator process shares."""

    scenario: Scenario
    model: str
    api_key: str | None = None
    writer: JsonlWriter | None = None
    pacer: PoissonPacer | None = None  # None: closed loop (send again as soon as a reply ends)
    load: float = 0.0  # the sweep point label written into each record
    warmup_until: float = 0.0  # time.monotonic(); requests started before it are marked warm-up
    seed: int = 0
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    stop_at: float = float("inf")  # time.monotonic(); no request starts after it
    network_timeout_s: float = 900.0
    connect_timeout_s: float = 30.0


class OpenAIStreamUser(User):
    """One simulated client: one keep-alive connection, one request in flight at a time."""

    abstract = True  # concrete subclasses: loadtest.locustfile.StreamUser and the runner's per-level class
    wait_time = constant(0)
    config: ClassVar[UserConfig | None] = None
    _serial: ClassVar[int] = 0

    def on_start(self) -> None:
        cfg = type(self).config
        if cfg is None:
            raise RuntimeError("OpenAIStreamUser.config is not set (use loadtest.runner or loadtest.locustfile)")
        self.cfg = cfg
        type(self)._serial += 1
        self.conversation = Conversation(cfg.scenario, cfg.model, random.Random(cfg.seed * 100_003 + self._serial))  # noqa: S311
        url = URL(self.host or "")
        self.http = HTTPClient.from_url(
            url,
            concurrency=1,
            network_timeout=cfg.network_timeout_s,
            connection_timeout=cfg.connect_timeout_s,
        )
        base = url.path.rstrip("/")
        self.path = (base[: -len("/v1")] if base.endswith("/v1") else base) + CHAT_PATH
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
        }
        if cfg.api_key:
            self.headers["Authorization"] = f"Bearer {cfg.api_key}"

    def on_stop(self) -> None:
        self.http.close()

    @task
    def chat(self) -> None:
        cfg = self.cfg
        lag: float | None = None
        if cfg.pacer is not None:
            at = cfg.pacer.claim()
            wait = at - time.monotonic()
            if wait > 0:
                gevent.sleep(wait)
            lag = max(0.0, time.monotonic() - at)
        if time.monotonic() >= cfg.stop_at:
            gevent.sleep(0.05)  # the measured window is over; let the runner stop this user
            return
        planned = self.conversation.next_request()
        record = self._send(json.dumps(planned.body).encode(), planned.thinking)
        record.pacer_lag_s = lag
        record.reasoning_tokens_hint = planned.reasoning_tokens_hint
        record.images = planned.images
        record.image_tokens_expected = planned.image_tokens_expected
        self.conversation.record_answer(record.answer_tokens)  # past thinking is not replayed
        if cfg.writer is not None:
            cfg.writer.write(record)

    def _send(self, payload: bytes, thinking: bool) -> RequestRecord:
        cfg = self.cfg
        start_ts = time.time()
        warm = time.monotonic() < cfg.warmup_until
        t0 = time.perf_counter()
        status = 0
        error: str | None = None
        timing = None
        try:
            resp = self.http.request("POST", self.path, body=payload, headers=self.headers)
            status = resp.status_code
            if status != 200:
                error = f"HTTP {status}: {resp.read()[:300].decode(errors='replace')}"
                resp.release()
            else:
                timing = read_stream(lambda: resp.readline(b"\n"), t0)
                while resp.readline(b"\n"):  # the terminating chunk, so the connection is reused
                    pass
                resp.release()
                error = timing.error
        except (OSError, gevent.Timeout, ValueError) as exc:  # refused, reset, timed out, bad HTTP
            error = f"{type(exc).__name__}: {exc}"
        e2e = timing.e2e_s if timing is not None else time.perf_counter() - t0
        record = RequestRecord(
            start_ts=start_ts,
            scenario=cfg.scenario.name,
            load=cfg.load,
            status=status,
            ok=error is None,
            e2e_s=e2e,
            thinking=thinking,
            error=error,
            warmup=warm,
            worker=cfg.worker,
        )
        if timing is not None:
            record.ttft_s = timing.ttft_s
            record.ttfa_s = timing.ttfa_s
            record.tpot_s = timing.tpot_s
            record.itl_s = timing.itl_s
            record.prompt_tokens = timing.prompt_tokens
            record.completion_tokens = timing.tokens
            record.reasoning_tokens = timing.reasoning_tokens
            record.answer_tokens = timing.answer_tokens
            record.reasoning_tokens_source = timing.reasoning_tokens_source
            record.events = timing.events
            record.reasoning_events = timing.reasoning_events
            record.answer_events = timing.answer_events
            record.usage_reported = timing.usage_reported
            record.cached_tokens = timing.cached_tokens
        self._report(record)
        return record

    def _report(self, r: RequestRecord) -> None:
        events = self.environment.events
        name = f"{r.scenario} stream"
        exc = RuntimeError(r.error) if r.error else None
        events.request.fire(
            request_type="POST",
            name=name,
            response_time=r.e2e_s * 1000.0,
            response_length=r.completion_tokens,
            exception=exc,
            context={"status": r.status},
        )
        if r.ok and r.ttft_s is not None:
            events.request.fire(
                request_type="TTFT", name=name, response_time=r.ttft_s * 1000.0, response_length=0, exception=None
            )
        if r.ok and r.ttfa_s is not None:
            events.request.fire(
                request_type="TTFA", name=name, response_time=r.ttfa_s * 1000.0, response_length=0, exception=None
            )
        if r.ok and r.tpot_s is not None:
            events.request.fire(
                request_type="TPOT", name=name, response_time=r.tpot_s * 1000.0, response_length=0, exception=None
            )
