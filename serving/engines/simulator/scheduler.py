"""Continuous batching on a virtual GPU: a pure scheduler core driven by a clock it is given.

The server drives it in real time (sleeping each batch's duration); ``report.py`` drives it in
virtual time to predict benchmark cells. Each call to :meth:`BatchScheduler.next_batch` picks one
forward pass, as SGLang's ``get_next_batch_to_run`` does without mixed chunks: a prefill whenever
one can be formed (it stalls decoding), else one decode step of every running request.

Chunked prefill (SGLang's ``PrefillAdder``): one prefill pass takes at most
``chunked_prefill_size`` new tokens (SGLang's default by GPU memory:
:func:`serving.capacity.sglang_memory_defaults`). A prompt longer than what is left of that budget
is split: its first part ends the batch, and the next passes continue it first (prefill keeps
priority, so decoding waits until the last chunk); its first token comes out of the last chunk.
With chunking off (``chunked_prefill_size`` None) a pass takes whole prompts up to
``max_prefill_tokens`` (a prompt alone may exceed it).

Admission, as SGLang's (see :mod:`serving.capacity`): a running slot must be free and the KV pool
must hold the request's ``reserve_tokens`` (its prompt plus ``new_token_ratio`` × ``max_tokens``;
the prompt plus all of ``max_tokens`` reserves exactly) beyond what the running requests count.
Retraction: when a decode step would need more KV than the pool holds, the running request with
the fewest generated tokens is retracted — its KV freed, back to the head of the queue; on
re-admission its prompt and the tokens generated so far are prefilled again.

Speculative decoding: a verify step releases ``tokens_per_step`` tokens per request on average;
given an ``accept`` sampler (``TimingModel.accept_sampler``) each request draws its own count per
step instead (1 … draft tokens, as SGLang's per-request acceptance varies).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
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
    filled: int = 0  # context tokens in the KV cache (cached + prefilled so far)
    target: int = 0  # the context to prefill on admission (the prompt, + generated tokens after a retraction)
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

    @property
    def prefilling(self) -> bool:
        return self.filled < self.target


@dataclass
class Batch:
    kind: str  # "prefill" | "decode"
    requests: list[SimRequest]
    duration_s: float
    tokens: int  # prefill: new prompt tokens; decode: batch size
    retracted: list[SimRequest] = field(default_factory=list)  # decode: retracted before this step
    admitted: list[SimRequest] = field(default_factory=list)  # prefill: admitted by this pass


class BatchScheduler:
    def __init__(
        self,
        model: TimingModel,
        cache: PrefixCache,
        *,
        max_running: int,
        kv_pool_tokens: int,
        max_prefill_tokens: int = 16384,
        chunked_prefill_size: int | None = None,
        accept: Callable[[SimRequest], int] | None = None,
        overlap: bool = False,
    ) -> None:
        self.model, self.cache = model, cache
        self.max_running = max(1, max_running)
        self.kv_pool_tokens = kv_pool_tokens
        self.max_prefill_tokens = max_prefill_tokens
        self.chunk_tokens = (
            min(chunked_prefill_size, max_prefill_tokens) if chunked_prefill_size and chunked_prefill_size > 0 else None
        )
        self.accept = accept
        self.overlap = overlap
        self._last_start = self._last_end = float("-inf")  # the pass decided last
        self.chunked: SimRequest | None = None  # the request whose prompt is part-way prefilled
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
        if self.chunked is r:
            self.chunked = None
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
    def _prefill_batch(self, now: float, seen_by: float) -> Batch | None:
        reqs: list[SimRequest] = []
        chunks: list[tuple[int, int]] = []  # (new tokens, tokens already in the cache) per request
        admitted: list[SimRequest] = []
        budget = self.chunk_tokens if self.chunk_tokens is not None else self.max_prefill_tokens
        if self.chunked is not None:  # SGLang continues the chunked request first
            r = self.chunked
            n = min(r.target - r.filled, budget)
            reqs.append(r)
            chunks.append((n, r.filled))
            budget -= n
            if n == r.target - r.filled:
                self.chunked = None
        # what running requests count against the pool: their estimate, or what they hold if more
        committed = sum(max(r.reserve_tokens, r.context) for r in self.running)
        while self.waiting and self.chunked is None and len(self.running) + len(admitted) < self.max_running:
            r = self.waiting[0]
            if r.arrival > seen_by:
                break  # not received yet when this pass was decided (overlap schedule)
            if committed + r.reserve_tokens > self.kv_pool_tokens and (self.running or admitted):
                break  # head-of-line: wait for memory (an oversized request alone still runs)
            if reqs and budget <= 0:
                break
            if self.chunk_tokens is None and reqs and r.context > budget:
                break  # unchunked: whole prompts only (the first one may exceed the budget)
            self.waiting.popleft()
            if r.retractions:
                r.cached = 0  # recomputed: the prompt and every token generated so far
            else:
                r.cached = min(self.cache.match(r.pages), max(r.prompt_tokens - 1, 0))
                if not r.probe:
                    self.cache.record(r.prompt_tokens, r.cached)
            r.filled, r.target = r.cached, r.context
            r.admitted_at, r.state = now, "running"
            self.kv_used += r.reserve_tokens
            committed += r.reserve_tokens
            need = r.target - r.filled
            n = need if self.chunk_tokens is None else min(need, budget)
            budget -= n
            if n < need:
                self.chunked = r
            reqs.append(r)
            chunks.append((n, r.filled))
            admitted.append(r)
        if not reqs:
            return None
        self.running.extend(admitted)
        for r in admitted:
            self.total_context += r.context
        for r, (n, _) in zip(reqs, chunks, strict=True):
            r.filled += n
        new_tokens = sum(n for n, _ in chunks)
        return Batch("prefill", reqs, self.model.prefill_batch_s(chunks), new_tokens, admitted=admitted)

    def next_batch(self, now: float) -> Batch | None:
        # Overlap schedule: SGLang decides a pass while the previous one runs, so what arrived after
        # the previous pass began waits one more pass, unless the GPU would otherwise sit idle.
        busy = self.overlap and now <= self._last_end
        b = self._next_batch(now, self._last_start if busy else now)
        if b is None and busy:
            b = self._next_batch(now, now)
        if b is not None:
            self._last_start, self._last_end = now, now + b.duration_s
        return b

    def _next_batch(self, now: float, seen_by: float) -> Batch | None:
        prefill = self._prefill_batch(now, seen_by)
        if prefill is not None:
            return prefill
        retracted: list[SimRequest] = []
        while len(self.running) > 1:
            need = sum(self._step_tokens(r) for r in self.running)
            if self.total_context + need <= self.kv_pool_tokens:
                break
            victim = min(reversed(self.running), key=lambda r: (r.released, -r.prompt_tokens))
            self._retract(victim)
            retracted.append(victim)
        decoding = [r for r in self.running if r.released < r.n_out and not r.prefilling]
        if not decoding:
            return None
        dur = self.model.decode_step_s(len(decoding), self.total_context)
        return Batch("decode", decoding, dur, len(decoding), retracted)

    def complete(self, b: Batch, now: float) -> list[tuple[SimRequest, int]]:
        """Apply a finished pass: tokens released per request; finished requests leave."""
        out: list[tuple[SimRequest, int]] = []
        if b.kind == "prefill":
            for r in b.requests:
                if r.state != "running" or r.prefilling:
                    continue  # aborted, or its prompt is still being prefilled in chunks
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
                if self.accept is not None:
                    k = min(self.accept(r), r.n_out - r.released)
                else:
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
