"""The simulator's HTTP server: SGLang 0.5.23's routes and JSON shapes on one asyncio loop.

Routes are a table (:data:`ROUTES`); a thin ASGI wrapper applies, in order: the hang fault, the
API key, then the route. Generation goes validate → plan output → pace tokens → encode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving.capacity import admission_reserve
from serving.engines.simulator import protocol as P
from serving.engines.simulator import text as T
from serving.engines.simulator.args import SimArgs
from serving.engines.simulator.dist import Rank0
from serving.engines.simulator.prefix_cache import PrefixCache
from serving.engines.simulator.scheduler import BatchScheduler, SimRequest
from serving.engines.simulator.timing import Deployment, TimingModel

log = logging.getLogger("serving.simulator")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
JSON_HEADERS = [(b"content-type", b"application/json")]
OPEN_PATHS = {"/health", "/health_generate", "/ready", "/metrics"}
VERSION = "0.5.23"
YIELD_EVERY = 16  # zero-delay streams give the loop a turn every this many tokens


def deployment_of(a: SimArgs) -> Deployment:
    return Deployment.of(
        a.preset,
        gpu=a.gpu,
        tp=a.tp,
        pp=a.pp,
        quantization=a.quantization,
        kv_cache_dtype=a.kv_cache_dtype,
        ssm_dtype=a.mamba_ssm_dtype,
        mem_fraction=a.mem_fraction_static,
        max_running=a.max_running_requests,
        draft_tokens=(a.speculative_num_draft_tokens or 4) if a.speculative_algorithm else None,
        accept_length=a.mtp_accept_length,
    )


# ---- per-request state -------------------------------------------------------------------------


class Job:
    __slots__ = ("aborted", "cached", "chunks", "disconnected", "done", "event", "out", "req", "sim", "t0")

    def __init__(self, req: P.GenRequest, out: T.Output, t0: float, ratio: float) -> None:
        self.req, self.out, self.t0 = req, out, t0
        reserve = admission_reserve(req.prompt_tokens, req.max_new, ratio)
        self.sim = SimRequest(req.prompt_tokens, out.n_tokens, reserve, tag=self)
        self.event = asyncio.Event()
        self.chunks: list[bytes] = []
        self.cached = 0
        self.disconnected = self.aborted = self.done = False


class Pacer:
    """When each generated token of a job becomes available. One instance per server."""

    name = "base"
    steps = False  # whether tokens come in scheduler steps (one SSE event each) or one by one

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def start(self, job: Job) -> None:
        if not job.sim.probe:
            self.sim.lookup_cache(job)

    def stop(self, job: Job) -> None:
        """The job ended (finished or aborted)."""

    async def wait(self, job: Job, i: int) -> int:
        """Block until token ``i`` is available; return how many tokens are available."""
        if self.sim.scheduler_hung:
            await self.sim.never.wait()
        n = await self._wait(job, i)
        if not job.sim.probe:
            self.sim.progress_at = time.monotonic()
        return n

    async def _wait(self, job: Job, i: int) -> int:
        raise NotImplementedError

    def running(self) -> int:
        return self.sim.active

    def queued(self) -> int:
        return 0


class ZeroPacer(Pacer):
    name = "zero-delay"

    async def _wait(self, job: Job, i: int) -> int:
        return job.sim.n_out


class FixedPacer(Pacer):
    """Token ``i`` at arrival + TTFT + i × TPOT exactly (absolute deadlines: no drift)."""

    name = "fixed"

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim)
        scale = sim.args.time_scale
        self.ttft = (sim.args.fixed_ttft_s or 0.0) * scale
        self.tpot = (sim.args.fixed_tpot_s or 0.0) * scale

    async def _wait(self, job: Job, i: int) -> int:
        delay = job.t0 + self.ttft + i * self.tpot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return i + 1


class ModelPacer(Pacer):
    """The timing model: a scheduler task runs forward passes on the virtual GPU in real time."""

    name = "model"
    steps = True

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim)
        self.sched = sim.scheduler
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self, job: Job) -> None:
        self.sched.submit(job.sim, time.monotonic())
        self.wake.set()
        if self.task is None:
            self.task = asyncio.create_task(self._run())

    def stop(self, job: Job) -> None:
        if job.sim.state in ("waiting", "running"):
            self.sched.abort(job.sim)

    async def wait(self, job: Job, i: int) -> int:
        s = job.sim  # no hang gate here: the scheduler task itself stops stepping
        while s.released <= i and s.state in ("waiting", "running"):
            job.event.clear()
            await job.event.wait()
        return s.released

    def running(self) -> int:
        return len(self.sched.running)

    def queued(self) -> int:
        return len(self.sched.waiting)

    async def _run(self) -> None:
        scale = self.sim.args.time_scale
        t_end = time.monotonic()
        while True:
            if self.sim.scheduler_hung:
                await self.sim.never.wait()
            now = time.monotonic()
            batch = self.sched.next_batch(now)
            if batch is None:
                self.wake.clear()
                await self.wake.wait()
                continue
            for r in batch.requests:
                if batch.kind == "prefill" and r.admitted_at is not None:
                    self.sim.m_queue.observe(r.admitted_at - r.arrival)
                    r.tag.cached = r.cached
            t_end = max(t_end, now) + batch.duration_s * scale
            delay = t_end - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            done_at = time.monotonic()
            for r, k in self.sched.complete(batch, done_at):
                r.tag.event.set()
                if k and not r.probe:
                    self.sim.progress_at = done_at
            for r in batch.requests:
                if r.state == "done":
                    r.tag.event.set()


PACERS: dict[str, type[Pacer]] = {"zero": ZeroPacer, "fixed": FixedPacer, "model": ModelPacer}


def pacer_kind(a: SimArgs) -> str:
    if a.zero_delay:
        return "zero"
    if a.fixed_ttft_s is not None or a.fixed_tpot_s is not None:
        return "fixed"
    return "model"


# ---- metrics -----------------------------------------------------------------------------------


@dataclass
class Counts:
    started: int = 0
    finished: int = 0
    aborted: int = 0
    disconnected: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    streamed_tokens: int = 0
    cached_tokens: int = 0


_BUCKETS_TTFT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 10, 20, 40, 80, 160)
_BUCKETS_ITL = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1)
_BUCKETS_E2E = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640)


class Simulator:
    def __init__(self, args: SimArgs) -> None:
        self.args = args
        self.model = TimingModel(deployment_of(args))
        cap = self.model.capacity()
        self.capacity = cap
        self.cache = PrefixCache(cap.kv_pool_tokens)
        self.scheduler = BatchScheduler(
            self.model,
            self.cache,
            max_running=cap.max_running,
            kv_pool_tokens=cap.kv_pool_tokens,
            max_prefill_tokens=max(args.chunked_prefill_size or 16384, 1),
        )
        self.pacer: Pacer = PACERS[pacer_kind(args)](self)
        self.counts = Counts()
        self.active = 0
        self.jobs: dict[str, Job] = {}
        self.started_at = time.monotonic()
        self.rank0 = Rank0(args.nnodes, args.dist_init_addr or "", args.heartbeat_s) if args.nnodes > 1 else None
        self._init_metrics()
        self.routes: dict[tuple[str, str], Callable[[Request], Awaitable[Any]]] = {
            (m, path): h for path, methods, h in self._route_table() for m in methods
        }
        self._hung = False
        self.scheduler_hung = False  # fault: --sim-hang-scheduler-after-s
        self.never = asyncio.Event()  # what a hung scheduler waits on
        self.progress_at = 0.0  # when any request last got a token (health counts it as alive)

    # ---- metrics ----
    def _init_metrics(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        lab = ["model_name"]
        self.labels = {"model_name": self.args.served_model_name}
        g = {
            n: Gauge(f"sglang:{n}", d, lab, registry=r)
            for n, d in [
                ("num_running_reqs", "running requests"),
                ("num_queue_reqs", "requests waiting in the queue"),
                ("token_usage", "share of the KV token pool in use"),
                ("mamba_usage", "share of recurrent-state slots in use"),
                ("gen_throughput", "generation throughput (tokens/s), last interval"),
                ("cache_hit_rate", "prefix-cache hit rate (tokens)"),
                ("spec_accept_length", "mean accepted tokens per verify step"),
                ("spec_accept_rate", "accepted / drafted tokens"),
            ]
        }
        self.gauges = g
        self.c_prompt = Counter("sglang:prompt_tokens", "prompt tokens", lab, registry=r)
        self.c_gen = Counter("sglang:generation_tokens", "generated tokens", lab, registry=r)
        self.c_abort = Counter("sglang:num_aborted_requests", "aborted requests", lab, registry=r)
        self.c_req = Counter("sglang:num_requests", "finished requests", lab, registry=r)
        self.m_ttft = Histogram(
            "sglang:time_to_first_token_seconds", "TTFT", lab, buckets=_BUCKETS_TTFT, registry=r
        ).labels(**self.labels)
        self.m_itl = Histogram(
            "sglang:inter_token_latency_seconds", "ITL", lab, buckets=_BUCKETS_ITL, registry=r
        ).labels(**self.labels)
        self.m_e2e = Histogram(
            "sglang:e2e_request_latency_seconds", "E2E", lab, buckets=_BUCKETS_E2E, registry=r
        ).labels(**self.labels)
        self.m_queue = Histogram(
            "sglang:queue_time_seconds", "queue time", lab, buckets=_BUCKETS_TTFT, registry=r
        ).labels(**self.labels)
        for m in (*g.values(), self.c_prompt, self.c_gen, self.c_abort, self.c_req):
            m.labels(**self.labels)  # every series exists from the start, at 0
        self._tp_last = (time.monotonic(), 0)

    def _refresh_gauges(self) -> None:
        L = self.labels
        running, queued = self.pacer.running(), self.pacer.queued()
        self.gauges["num_running_reqs"].labels(**L).set(running)
        self.gauges["num_queue_reqs"].labels(**L).set(queued)
        pool = max(self.capacity.kv_pool_tokens, 1)
        used = self.scheduler.total_context if isinstance(self.pacer, ModelPacer) else 0
        self.gauges["token_usage"].labels(**L).set(min(1.0, used / pool))
        slots = running * self.capacity.slots_per_request
        self.gauges["mamba_usage"].labels(**L).set(min(1.0, slots / max(self.capacity.state_slots, 1)))
        self.gauges["cache_hit_rate"].labels(**L).set(self.cache.hit_rate)
        acc = self.scheduler.spec_accept_length if self.model.spec else 0.0
        self.gauges["spec_accept_length"].labels(**L).set(acc)
        draft = self.model.d.draft_tokens or 1
        self.gauges["spec_accept_rate"].labels(**L).set(acc / draft if self.model.spec else 0.0)
        now, toks = time.monotonic(), self.counts.generation_tokens
        t0, k0 = self._tp_last
        if now - t0 > 0.5:
            self.gauges["gen_throughput"].labels(**L).set((toks - k0) / (now - t0))
            self._tp_last = (now, toks)

    # ---- health ----
    def not_ready(self) -> str | None:
        if time.monotonic() - self.started_at < self.args.slow_start_s:
            return "starting up (loading weights)"
        if self.rank0 is not None:
            return self.rank0.problem()
        return None

    # ---- generation ----
    def lookup_cache(self, job: Job) -> None:
        pages = job.sim.pages
        job.cached = min(self.cache.match(pages), max(job.sim.prompt_tokens - 1, 0))
        self.cache.record(job.sim.prompt_tokens, job.cached)
        self.cache.insert(pages)

    def new_job(self, req: P.GenRequest) -> Job:
        tool_id = "call_" + uuid.uuid4().hex[:24] if req.tool is not None else ""
        out = T.plan_output(
            max_new=req.max_new,
            exact=req.exact,
            seed=req.seed,
            thinking=req.thinking,
            stop=req.stop,
            tool=req.tool,
            call_id=tool_id,
        )
        if req.thinking and not req.separate_reasoning:
            out = P.inline_reasoning(out)
        job = Job(req, out, time.monotonic(), self.args.new_token_ratio)
        job.sim.pages = T.page_hashes(req.prompt_text)
        return job

    def begin(self, job: Job) -> None:
        self.counts.started += 1
        self.active += 1
        self.jobs[job.req.rid] = job
        self.pacer.start(job)

    def end(self, job: Job, *, aborted: bool) -> None:
        if job.done:
            return
        job.done = True
        self.active -= 1
        self.jobs.pop(job.req.rid, None)
        self.pacer.stop(job)
        c = self.counts
        c.prompt_tokens += job.req.prompt_tokens
        c.cached_tokens += job.cached
        self.c_prompt.labels(**self.labels).inc(job.req.prompt_tokens)
        if aborted:
            c.aborted += 1
            self.c_abort.labels(**self.labels).inc()
        else:
            c.finished += 1
            self.c_req.labels(**self.labels).inc()
            self.m_e2e.observe(time.monotonic() - job.t0)

    async def stream(self, job: Job, send: Send) -> None:
        """One SSE event per scheduler step carrying every token that step accepted (SGLang's
        shape: with MTP a verify step yields several tokens in one delta). The zero-delay and
        fixed pacers have no steps: one event per token."""
        enc = P.Encoder(job.req)
        first = enc.first()
        pacer, zero = self.pacer, isinstance(self.pacer, ZeroPacer)
        per_step = pacer.steps
        chunks = [] if per_step else enc.tokens(job.out)
        n = job.out.n_tokens
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        if first is not None:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        i = 0
        last = 0.0
        c = self.counts
        crash = self.args.crash_after_tokens
        while i < n:
            avail = await pacer.wait(job, i)
            if avail <= i or job.aborted:
                break  # aborted by /abort_request
            j = min(avail, n) if per_step else i + 1
            body = enc.step(job.out, i, j) if per_step else chunks[i]
            await send({"type": "http.response.body", "body": body, "more_body": True})
            k, i = j - i, j
            if crash is not None:
                c.streamed_tokens += k
                if c.streamed_tokens >= crash:
                    log.error("fault: --sim-crash-after-tokens %d reached; exiting abruptly", crash)
                    os._exit(17)
            if zero:
                if i % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                continue
            now = time.monotonic()
            if i == k:
                self.m_ttft.observe(now - job.t0)
            else:
                for _ in range(k):  # SGLang: the gap split over the chunk's tokens
                    self.m_itl.observe((now - last) / k)
            last = now
        if zero and n:
            self.m_ttft.observe(0.0)
        aborted = i < n
        c.generation_tokens += i
        if crash is None:
            c.streamed_tokens += i
        self.c_gen.labels(**self.labels).inc(i)
        finish = "abort" if aborted else job.out.finish_reason
        u = P.usage(job.req, _truncated(job.out, i), job.cached, self.args.enable_cache_report)
        await send(
            {
                "type": "http.response.body",
                "body": enc.end(job.out, finish, u if job.req.include_usage else None),
                "more_body": False,
            }
        )
        self.end(job, aborted=aborted)

    async def complete(self, job: Job) -> dict[str, Any]:
        n = job.sim.n_out
        got = await self.pacer.wait(job, n - 1) if n else 0
        while got < n:
            nxt = await self.pacer.wait(job, got)
            if nxt <= got:
                break
            got = nxt
        if n:
            self.m_ttft.observe(time.monotonic() - job.t0)
        self.counts.generation_tokens += got
        self.c_gen.labels(**self.labels).inc(got)
        out = _truncated(job.out, got)
        self.end(job, aborted=got < n)
        if got < n:
            out.finish_reason = "abort"
        return P.Encoder(job.req).full(out, P.usage(job.req, out, job.cached, self.args.enable_cache_report))

    # ---- routes ----
    def _route_table(self) -> list[tuple[str, tuple[str, ...], Callable[[Request], Awaitable[Any]]]]:
        return [
            ("/health", ("GET", "HEAD"), self.health),
            ("/health_generate", ("GET", "HEAD"), self.health_generate),
            ("/ready", ("GET", "HEAD"), self.ready),
            ("/metrics", ("GET",), self.metrics),
            ("/v1/models", ("GET",), self.models),
            ("/v1/chat/completions", ("POST",), self.chat),
            ("/v1/completions", ("POST",), self.completions),
            ("/server_info", ("GET",), self.server_info),
            ("/get_server_info", ("GET",), self.server_info),
            ("/get_model_info", ("GET",), self.model_info),
            ("/model_info", ("GET",), self.model_info),
            ("/flush_cache", ("GET", "POST"), self.flush_cache),
            ("/abort_request", ("POST",), self.abort_request),
            ("/sim/stats", ("GET",), self.sim_stats),
        ]

    async def health(self, rq: Request) -> Any:
        """``/health`` and ``/health_generate`` (the same in SGLang): a 1-token generation through
        the scheduler. 200 once it finishes, or once any other request made progress since the
        check began (a busy engine is a live one, as in SGLang); 503 after ``--sim-health-timeout-s``."""
        why = self.not_ready() or ("fault: --sim-fail-health" if self.args.fail_health else None)
        if why:
            return 503, why
        tic = time.monotonic()
        req = P.probe_request("HEALTH_CHECK_" + uuid.uuid4().hex, self.args.served_model_name)
        job = self.new_job(req)
        job.sim.probe = True
        self.pacer.start(job)
        try:
            deadline = tic + self.args.health_timeout_s
            got = 0
            while got < 1 and self.progress_at <= tic:
                left = deadline - time.monotonic()
                if left <= 0:
                    return 503, f"health generation did not finish in {self.args.health_timeout_s:g} s"
                with contextlib.suppress(TimeoutError):
                    got = await asyncio.wait_for(self.pacer.wait(job, 0), min(left, 0.05))
        finally:
            self.pacer.stop(job)
        return 200, b""

    health_generate = health

    async def ready(self, rq: Request) -> Any:
        why = self.not_ready()
        return (503, why) if why else (200, {"status": "ready"})

    async def metrics(self, rq: Request) -> Any:
        if not self.args.enable_metrics:
            raise P.ApiError(404, "metrics are off: start with --enable-metrics")
        self._refresh_gauges()
        return 200, ("text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry))

    async def models(self, rq: Request) -> Any:
        a = self.args
        card = {
            "id": a.served_model_name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "sglang",
            "root": a.model_path,
            "parent": None,
            "max_model_len": a.context_length,
        }
        return 200, {"object": "list", "data": [card]}

    def _gate(self) -> None:
        why = self.not_ready()
        if why:
            raise P.ApiError(503, f"the engine is not ready: {why}")

    async def chat(self, rq: Request) -> Any:
        self._gate()
        a = self.args
        req = P.parse_chat(
            await rq.json(),
            served=a.served_model_name,
            ctx=a.context_length,
            default_out=a.default_output_tokens,
            reasoning=a.reasoning_parser is not None,
        )
        return GenerationResponse(self, self.new_job(req))

    async def completions(self, rq: Request) -> Any:
        self._gate()
        a = self.args
        req = P.parse_completion(
            await rq.json(), served=a.served_model_name, ctx=a.context_length, default_out=a.default_output_tokens
        )
        return GenerationResponse(self, self.new_job(req))

    async def server_info(self, rq: Request) -> Any:
        a = self.args
        info = {k: v for k, v in a.__dict__.items() if k not in ("api_key", "extra")}
        info.update(
            version=VERSION,
            engine="simulator",
            pacer=self.pacer.name,
            gpu=a.gpu.value,
            tp_size=a.tp,
            max_total_num_tokens=self.capacity.kv_pool_tokens,
            max_running_requests=self.capacity.max_running,
            internal_states=[
                {
                    "avg_spec_accept_length": self.scheduler.spec_accept_length,
                    "last_gen_throughput": self.gauges["gen_throughput"].labels(**self.labels)._value.get(),
                }
            ],
        )
        return 200, json.loads(json.dumps(info, default=str))

    async def model_info(self, rq: Request) -> Any:
        a = self.args
        return 200, {
            "model_path": a.model_path,
            "tokenizer_path": a.model_path,
            "is_generation": True,
            "served_model_name": a.served_model_name,
            "weight_version": "default",
        }

    async def flush_cache(self, rq: Request) -> Any:
        self.cache.flush()
        return 200, (
            "text/plain",
            b"Cache flushed.\nPlease check backend logs for more details. (When there are "
            b"running or waiting requests, the operation will not be performed.)\n",
        )

    async def abort_request(self, rq: Request) -> Any:
        body = await rq.json()
        if not isinstance(body, dict):
            raise P.ApiError(400, "body must be a JSON object")
        rid, every = body.get("rid"), bool(body.get("abort_all"))
        targets = list(self.jobs.values()) if every else [self.jobs[rid]] if rid in self.jobs else []
        for job in targets:
            job.aborted = True
            self.pacer.stop(job)
            job.sim.state = "aborted"
            job.event.set()
        return 200, {"aborted": [j.req.rid for j in targets]}

    async def sim_stats(self, rq: Request) -> Any:
        c = self.counts
        return 200, {
            "requests": {
                "started": c.started,
                "finished": c.finished,
                "aborted": c.aborted,
                "client_disconnects": c.disconnected,
                "active": self.active,
            },
            "tokens": {
                "prompt": c.prompt_tokens,
                "generated": c.generation_tokens,
                "streamed": c.streamed_tokens,
                "cached": c.cached_tokens,
            },
            "prefix_cache": {
                "hits": self.cache.hits,
                "misses": self.cache.misses,
                "hit_rate": self.cache.hit_rate,
                "size_tokens": self.cache.size_tokens,
            },
            "scheduler": {
                "pacer": self.pacer.name,
                "running": self.pacer.running(),
                "queued": self.pacer.queued(),
                "max_running": self.capacity.max_running,
                "kv_pool_tokens": self.capacity.kv_pool_tokens,
                "state_slots": self.capacity.state_slots,
                "retracted": self.scheduler.retracted_total,
            },
            "ranks": self.rank0.status() if self.rank0 else {"nnodes": 1, "joined": [], "lost": [], "ready": True},
            "ready": self.not_ready() is None,
        }

    # ---- ASGI ----
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        try:
            if self.args.api_key is not None and path not in OPEN_PATHS:
                auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
                if auth != f"Bearer {self.args.api_key}":
                    raise P.ApiError(401, "Unauthorized: invalid or missing API key (Authorization: Bearer …)")
            handler = self.routes.get((method, path))
            if handler is None:
                if any(p == path for _, p in self.routes):
                    raise P.ApiError(405, f"method {method} not allowed on {path}")
                raise P.ApiError(404, f"no route {path}")
            res = await handler(Request(scope, receive))
            if isinstance(res, GenerationResponse):
                await res(scope, receive, send)
            else:
                await _send_simple(send, *res)
        except P.ApiError as e:
            await _send_raw(send, e.status, JSON_HEADERS, e.body())

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except OSError as e:
                    await send({"type": "lifespan.startup.failed", "message": f"dist-init-addr: {e}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self.rank0 is not None:
                    await self.rank0.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        if self.rank0 is not None:
            await self.rank0.start()
        if self.args.hang_after_s is not None:
            asyncio.get_running_loop().call_later(self.args.hang_after_s, self._hang)
        if self.args.hang_scheduler_after_s is not None:
            asyncio.get_running_loop().call_later(self.args.hang_scheduler_after_s, self._hang_scheduler)

    def _hang_scheduler(self) -> None:
        """Fault: the scheduler stops stepping (a wedged GPU); HTTP still answers, generations and
        the health check's generation never finish."""
        log.error("fault: --sim-hang-scheduler-after-s reached; the scheduler stops")
        self.scheduler_hung = True

    def _hang(self) -> None:
        """Fault: the whole process stops answering (a wedged engine); SIGTERM still ends it."""
        log.error("fault: --sim-hang-after-s reached; hanging")
        signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
        self._hung = True
        while True:
            time.sleep(3600)


def _truncated(out: T.Output, n: int) -> T.Output:
    if n >= out.n_tokens:
        return out
    return T.Output(out.pieces[:n], "abort", None, out.tool_name, out.tool_call_id, min(out.reasoning_tokens, n))


class Request:
    __slots__ = ("receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope, self.receive = scope, receive

    async def body(self) -> bytes:
        parts = []
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                break
            parts.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        return b"".join(parts)

    async def json(self) -> Any:
        raw = await self.body()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise P.ApiError(400, f"the request body is not valid JSON: {e}") from None


class GenerationResponse:
    """Runs one generation, streaming or not, and aborts it if the client disconnects."""

    def __init__(self, sim: Simulator, job: Job) -> None:
        self.sim, self.job = sim, job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sim, job = self.sim, self.job
        task = asyncio.current_task()
        assert task is not None

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    job.disconnected = True
                    task.cancel()
                    return

        watcher = asyncio.create_task(watch())
        sim.begin(job)
        try:
            if job.req.stream:
                await sim.stream(job, send)
            else:
                body = await sim.complete(job)
                await _send_raw(send, 200, JSON_HEADERS, json.dumps(body).encode())
        except (asyncio.CancelledError, OSError):
            if not job.disconnected:
                sim.end(job, aborted=True)
                raise
            task.uncancel()
            sim.counts.disconnected += 1
            log.info("client disconnected: aborting %s", job.req.rid)
        finally:
            watcher.cancel()
            sim.end(job, aborted=True)  # no-op when it already ended


async def _send_raw(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_simple(send: Send, status: int, body: Any) -> None:
    if status >= 400 and isinstance(body, str):
        err = P.ApiError(status, body)
        await _send_raw(send, status, JSON_HEADERS, err.body())
    elif isinstance(body, bytes):
        await _send_raw(send, status, [(b"content-type", b"text/plain; charset=utf-8")], body)
    elif isinstance(body, tuple):
        ctype, payload = body
        await _send_raw(send, status, [(b"content-type", ctype.encode())], payload)
    else:
        await _send_raw(send, status, JSON_HEADERS, json.dumps(body).encode())


def serve(args: SimArgs) -> None:
    import uvicorn

    if args.node_rank > 0:
        from serving.engines.simulator.dist import run_follower

        run_follower(args.node_rank, str(args.dist_init_addr), args.heartbeat_s, args.dist_timeout_s)
        return
    sim = Simulator(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info(
        "simulator: %s on %s tp=%d, pacer=%s, max_running=%d, kv_pool=%d tokens, listening on %s:%d",
        args.preset,
        args.gpu.value,
        args.tp,
        sim.pacer.name,
        sim.capacity.max_running,
        sim.capacity.kv_pool_tokens,
        args.host,
        args.port,
    )
    config = uvicorn.Config(
        sim, host=args.host, port=args.port, log_level="warning", lifespan="on", timeout_keep_alive=30, access_log=False
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
