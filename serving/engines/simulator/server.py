"""The simulator's HTTP server: SGLang 0.5.23's routes and JSON shapes on one asyncio loop.

Routes are a table (``Simulator._route_table``, resolved by :class:`asgi.Routes`); the ASGI entry
applies, in order: the API key, then the route. Generation goes validate → plan output → pace
tokens (``pacers.py``) → encode (``protocol.py``); metrics live in ``metrics.py``.
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
from typing import Any

from serving.capacity import sglang_memory_defaults
from serving.capacity.timing import Deployment, TimingModel
from serving.engines.simulator import protocol as P
from serving.engines.simulator import text as T
from serving.engines.simulator.args import SimArgs
from serving.engines.simulator.asgi import (
    JSON_HEADERS,
    SSE_HEADERS,
    Handler,
    Receive,
    Request,
    Routes,
    Scope,
    Send,
    send_raw,
    send_simple,
)
from serving.engines.simulator.dist import Rank0
from serving.engines.simulator.metrics import SimMetrics
from serving.engines.simulator.pacers import PACERS, Job, ModelPacer, Pacer, ZeroPacer, pacer_kind
from serving.engines.simulator.prefix_cache import PrefixCache
from serving.engines.simulator.scheduler import BatchScheduler
from serving.engines.simulator.sglang_parsers import load as load_sglang_parsers

log = logging.getLogger("serving.simulator")

OPEN_PATHS = {"/health", "/health_generate", "/ready", "/metrics"}
VERSION = "0.5.23"
YIELD_EVERY = 16  # zero-delay streams give the loop a turn every this many events


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
            # SGLang's --chunked-prefill-size, or its default for this GPU's memory (-1: off)
            chunked_prefill_size=args.chunked_prefill_size
            or sglang_memory_defaults(self.model.d.preset, args.gpu, args.tp, args.pp).chunked_prefill_size,
        )
        self.pacer: Pacer = PACERS[pacer_kind(args)](self)
        self.metrics = SimMetrics(args.served_model_name, self.gauge_values, lambda: self.scheduler.retracted_total)
        self.parsers = load_sglang_parsers(args.sglang_path)
        self.counts = self.metrics.counts
        self.active = 0
        self.jobs: dict[str, Job] = {}
        self.started_at = time.monotonic()
        self.rank0 = Rank0(args.nnodes, args.dist_init_addr or "", args.heartbeat_s) if args.nnodes > 1 else None
        self.routes = Routes(self._route_table())
        self._hung = False
        self.scheduler_hung = False  # fault: --sim-hang-scheduler-after-s
        self.never = asyncio.Event()  # what a hung scheduler waits on
        self.progress_at = 0.0  # when any request last got a token (health counts it as alive)

    # ---- metrics ----
    def gauge_values(self) -> dict[str, float]:
        """SGLang's gauges, from the live state (read at scrape time)."""
        running, queued = self.pacer.running(), self.pacer.queued()
        pool = max(self.capacity.kv_pool_tokens, 1)
        used = self.scheduler.total_context if isinstance(self.pacer, ModelPacer) else 0
        slots = running * self.capacity.slots_per_request
        acc = self.scheduler.spec_accept_length if self.model.spec else 0.0
        draft = self.model.d.draft_tokens or 1
        return {
            "num_running_reqs": running,
            "num_queue_reqs": queued,
            "token_usage": min(1.0, used / pool),
            "mamba_usage": min(1.0, slots / max(self.capacity.state_slots, 1)),
            "gen_throughput": self.metrics.throughput(),
            "cache_hit_rate": self.cache.hit_rate,
            "spec_accept_length": acc,
            "spec_accept_rate": acc / draft if self.model.spec else 0.0,
        }

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
            reasoning_tokens=req.reasoning_hint,
            response_format=req.response_format,
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
        if aborted:
            c.aborted += 1
        else:
            c.finished += 1
            self.metrics.e2e.observe(time.monotonic() - job.t0)

    async def stream(self, job: Job, send: Send) -> None:
        """One SSE event per scheduler step carrying every token that step accepted (SGLang's
        shape: with MTP a verify step yields several tokens in one delta). The zero-delay pacer
        steps at the MTP acceptance length (one token per event without MTP); the fixed pacer has
        no steps: one event per token."""
        enc = P.Encoder(job.req, self.parsers, job.out)
        first = enc.first()
        pacer, zero = self.pacer, isinstance(self.pacer, ZeroPacer)
        per_step = pacer.steps
        chunks = [] if per_step else enc.tokens(job.out)
        n = job.out.n_tokens
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        # SGLang sends the role chunk with the first output (after the prefill), not before it
        head = first or b""
        i = events = 0
        last = 0.0
        c = self.counts
        crash = self.args.crash_after_tokens
        while i < n:
            avail = await pacer.wait(job, i)
            if avail <= i or job.aborted:
                break  # aborted by /abort_request
            j = min(avail, n) if per_step else i + 1
            body = enc.step(job.out, i, j) if per_step else chunks[i]
            if head:
                body, head = head + body, b""
            await send({"type": "http.response.body", "body": body, "more_body": True})
            k, i = j - i, j
            if crash is not None:
                c.streamed_tokens += k
                if c.streamed_tokens >= crash:
                    log.error("fault: --sim-crash-after-tokens %d reached; exiting abruptly", crash)
                    os._exit(17)
            if zero:
                events += 1
                if events % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                continue
            now = time.monotonic()
            if i == k:
                self.metrics.ttft.observe(now - job.t0)
            else:
                for _ in range(k):  # SGLang: the gap split over the chunk's tokens
                    self.metrics.itl.observe((now - last) / k)
            last = now
        if zero and n:
            self.metrics.ttft.observe(0.0)
        aborted = i < n
        c.generation_tokens += i
        if crash is None:
            c.streamed_tokens += i
        finish = "abort" if aborted else job.out.finish_reason
        u = P.usage(job.req, _truncated(job.out, i), job.cached, self.args.enable_cache_report)
        await send(
            {
                "type": "http.response.body",
                "body": head + enc.end(job.out, finish, u if job.req.include_usage else None),
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
            self.metrics.ttft.observe(time.monotonic() - job.t0)
        self.counts.generation_tokens += got
        out = _truncated(job.out, got)
        self.end(job, aborted=got < n)
        if got < n:
            out.finish_reason = "abort"
        return P.Encoder(job.req, self.parsers, job.out).full(
            out, P.usage(job.req, out, job.cached, self.args.enable_cache_report)
        )

    # ---- routes ----
    def _route_table(self) -> list[tuple[str, tuple[str, ...], Handler]]:
        return [
            ("/health", ("GET", "HEAD"), self.health),
            ("/health_generate", ("GET", "HEAD"), self.health_generate),
            ("/ready", ("GET", "HEAD"), self.ready),
            ("/metrics", ("GET",), self.prometheus),
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

    async def prometheus(self, rq: Request) -> Any:
        if not self.args.enable_metrics:
            raise P.ApiError(404, "metrics are off: start with --enable-metrics")
        return 200, ("text/plain; version=0.0.4; charset=utf-8", self.metrics.exposition())

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
        info = {k: v for k, v in a.__dict__.items() if k not in ("api_key", "extra", "sim")}
        info.update(a.sim.model_dump())  # the --sim-* knobs as plain keys
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
                    "last_gen_throughput": self.metrics.throughput(),
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
            res = await self.routes.resolve(method, path)(Request(scope, receive))
            if isinstance(res, GenerationResponse):
                await res(scope, receive, send)
            else:
                await send_simple(send, *res)
        except P.ApiError as e:
            await send_raw(send, e.status, JSON_HEADERS, e.body())

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
                await send_raw(send, 200, JSON_HEADERS, json.dumps(body).encode())
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
