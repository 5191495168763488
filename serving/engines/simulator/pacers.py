"""When generated tokens become available: one pacer per server (a registry keyed by kind).

- ``zero``: everything at once (load-generator benchmarks). Without MTP one SSE event per token;
  with MTP one event per verify step, carrying ``accept_length`` tokens on average (steps of
  ⌊(s+1)·a⌋ − ⌊s·a⌋ tokens), the event rate SGLang streams at.
- ``fixed``: token ``i`` at arrival + TTFT + i × TPOT (absolute deadlines); one event per token.
- ``model``: a scheduler task runs forward passes of :class:`BatchScheduler` on the virtual GPU in
  real time; one event per scheduler step.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from serving.capacity import admission_reserve
from serving.engines.simulator import protocol as P
from serving.engines.simulator import text as T
from serving.engines.simulator.args import SimArgs
from serving.engines.simulator.scheduler import SimRequest

if TYPE_CHECKING:
    from serving.engines.simulator.server import Simulator


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

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim)
        self.accept = sim.model.accept  # tokens per verify step (1.0 without MTP)
        self.steps = self.accept > 1.0

    async def _wait(self, job: Job, i: int) -> int:
        if not self.steps:
            return job.sim.n_out
        return min(job.sim.n_out, step_end(i, self.accept))


def step_end(i: int, accept: float) -> int:
    """The end (exclusive) of the verify step that token ``i`` belongs to, when step ``s`` accepts
    tokens ⌊s·a⌋ … ⌊(s+1)·a⌋ − 1: a deterministic sequence of steps averaging ``a`` tokens."""
    s = int(i / accept)
    while s > 0 and int(s * accept) > i:
        s -= 1
    while int((s + 1) * accept) <= i:
        s += 1
    return int((s + 1) * accept)


class FixedPacer(Pacer):
    """Token ``i`` at arrival + TTFT + i × TPOT exactly (absolute deadlines: no drift)."""

    name = "fixed"

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim)
        scale = sim.args.time_scale
        self.ttft = (sim.args.fixed_ttft_s or 0.0) * scale
        self.tpot = (sim.args.fixed_tpot_s or 0.0) * scale

    async def _wait(self, job: Job, i: int) -> int:
        if job.sim.probe:  # the fixed timings are the users' requests'; a 1-token health probe is quick
            return i + 1
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
            for r in batch.admitted:  # a chunked prompt's later passes were counted when admitted
                if r.admitted_at is not None:
                    self.sim.metrics.queue.observe(r.admitted_at - r.arrival)
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
