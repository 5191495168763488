"""Continuous batching on a virtual GPU: a pure scheduler core driven by a clock it is given.

The server drives it in real time (sleeping each batch's duration); ``report.py`` drives it in
virtual time to predict benchmark cells. Each call to :meth:`BatchScheduler.next_batch` picks one
forward pass: a prefill of newly admitted requests (they stall decoding, as in SGLang without mixed
chunks), else one decode step of every running request.

Admission, as SGLang's (see :mod:`serving.capacity`): a running slot must be free and the KV pool
must hold the request's ``reserve_tokens`` (its prompt plus ``new_token_ratio`` × ``max_tokens``;
the prompt plus all of ``max_tokens`` reserves exactly) beyond what the running requests count.
Retraction: when a decode step would need more KV than the pool holds, the running request with
the fewest generated tokens is retracted — its KV freed, back to the head of the queue; on
re-admission its prompt and the tokens generated so far are prefilled again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from serving.capacity.timing import TimingModel
from serving.engines.simulator.prefix_cache import PrefixCache


@dataclass(eq=False)
class SimRequest:
    prompt_tokens: int
    n_out: int  # tokens the request will generate
    reserve_tokens: int  # KV tokens to hold while running (prompt + max new tokens)
    pages: list[int] = field(default_factory=list)
    arrival: float = 0.0
    cached: int = 0
    released: int = 0  # generated tokens handed to the client so far
    credit: float = 0.0
    state: str = "new"  # waiting | running | done | aborted
    admitted_at: float | None = None
    retractions: int = 0
    first_token_at: float | None = None
    finished_at: float | None = None
    tag: Any = None  # the server's handle
    probe: bool = False  # a health check's generation: kept out of the prefix-cache statistics

    @property
    def context(self) -> int:
        return self.prompt_tokens + self.released


@dataclass
class Batch:
    kind: str  # "prefill" | "decode"
    requests: list[SimRequest]
    duration_s: float
    tokens: int  # prefill: new prompt tokens; decode: batch size
    retracted: list[SimRequest] = field(default_factory=list)  # decode: retracted before this step


class BatchScheduler:
    def __init__(
        self,
        model: TimingModel,
        cache: PrefixCache,
        *,
        max_running: int,
        kv_pool_tokens: int,
        max_prefill_tokens: int = 16384,
    ) -> None:
        self.model, self.cache = model, cache
        self.max_running = max(1, max_running)
        self.kv_pool_tokens = kv_pool_tokens
        self.max_prefill_tokens = max_prefill_tokens
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.kv_used = 0
        self.total_context = 0
        self.accepted_tokens = 0
        self.decode_steps = 0
        self.request_steps = 0
        self.retracted_total = 0

    # ---- queue -------------------------------------------------------------------------------
    def submit(self, r: SimRequest, now: float) -> None:
        r.arrival, r.state = now, "waiting"
        self.waiting.append(r)

    def abort(self, r: SimRequest) -> None:
        if r.state == "waiting":
            self.waiting.remove(r)
        elif r.state == "running":
            self._free(r)
        r.state = "aborted"

    def _free(self, r: SimRequest) -> None:
        self.running.remove(r)
        self.kv_used -= r.reserve_tokens
        self.total_context -= r.context

    def _retract(self, r: SimRequest) -> None:
        """KV pool exhausted: ``r`` gives its KV back and waits at the head of the queue."""
        self._free(r)
        r.state, r.admitted_at = "waiting", None
        r.retractions += 1
        r.credit = 0.0
        # what it holds when re-admitted: everything so far plus the rest of its estimate
        r.reserve_tokens = max(r.reserve_tokens, r.context + 1)
        self.retracted_total += 1
        self.waiting.appendleft(r)

    def _step_tokens(self, r: SimRequest) -> int:
        """KV tokens the next decode step can add to ``r``."""
        return min(int(r.credit + self.model.tokens_per_step), r.n_out - r.released)

    def fits(self, r: SimRequest) -> bool:
        """Whether ``r`` could ever be admitted (its reservation fits the empty pool)."""
        return r.reserve_tokens <= self.kv_pool_tokens

    # ---- one forward pass --------------------------------------------------------------------
    def next_batch(self, now: float) -> Batch | None:
        admitted: list[SimRequest] = []
        new_tokens = 0
        cached_total = 0
        # what running requests count against the pool: their estimate, or what they hold if more
        committed = sum(max(r.reserve_tokens, r.context) for r in self.running)
        while self.waiting and len(self.running) + len(admitted) < self.max_running:
            r = self.waiting[0]
            if committed + r.reserve_tokens > self.kv_pool_tokens and (self.running or admitted):
                break  # head-of-line: wait for memory (an oversized request alone still runs)
            if admitted and new_tokens + r.context > self.max_prefill_tokens:
                break
            self.waiting.popleft()
            if r.retractions:
                r.cached = 0  # recomputed: the prompt and every token generated so far
            else:
                r.cached = min(self.cache.match(r.pages), max(r.prompt_tokens - 1, 0))
                if not r.probe:
                    self.cache.record(r.prompt_tokens, r.cached)
            r.admitted_at, r.state = now, "running"
            self.kv_used += r.reserve_tokens
            committed += r.reserve_tokens
            new_tokens += r.context - r.cached
            cached_total += r.cached
            admitted.append(r)
        if admitted:
            self.running.extend(admitted)
            for r in admitted:
                self.total_context += r.context
            dur = self.model.prefill_s(new_tokens, cached_total // len(admitted))
            return Batch("prefill", admitted, dur, new_tokens)
        retracted: list[SimRequest] = []
        while len(self.running) > 1:
            need = sum(self._step_tokens(r) for r in self.running)
            if self.total_context + need <= self.kv_pool_tokens:
                break
            victim = min(reversed(self.running), key=lambda r: (r.released, -r.prompt_tokens))
            self._retract(victim)
            retracted.append(victim)
        decoding = [r for r in self.running if r.released < r.n_out]
        if not decoding:
            return None
        dur = self.model.decode_step_s(len(decoding), self.total_context)
        return Batch("decode", decoding, dur, len(decoding), retracted)

    def complete(self, b: Batch, now: float) -> list[tuple[SimRequest, int]]:
        """Apply a finished pass: tokens released per request; finished requests leave."""
        out: list[tuple[SimRequest, int]] = []
        if b.kind == "prefill":
            for r in b.requests:
                if r.state != "running":
                    continue
                self.cache.insert(r.pages)
                k = 1 if r.n_out > r.released else 0
                r.released += k
                self.total_context += k
                if r.first_token_at is None:
                    r.first_token_at = now
                out.append((r, k))
        else:
            self.decode_steps += 1
            self.request_steps += len(b.requests)
            per = self.model.tokens_per_step
            for r in b.requests:
                if r.state != "running":
                    continue
                r.credit += per
                k = min(int(r.credit), r.n_out - r.released)
                r.credit -= int(r.credit)
                r.released += k
                self.total_context += k
                self.accepted_tokens += k
                out.append((r, k))
        for r, _ in out:
            if r.released >= r.n_out:
                self._free(r)
                r.state, r.finished_at = "done", now
        return out

    @property
    def spec_accept_length(self) -> float:
        return self.accepted_tokens / self.request_steps if self.request_steps else 0.0
