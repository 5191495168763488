"""Closed-loop load in virtual time through the server's scheduler and timing model (no clock).

``clients`` users each run conversations of a :class:`loadtest.scenarios.Scenario`-like workload:
every turn's prompt is the shared prefix + the conversation so far + a new user message, its
output a sampled length (``max_tokens`` = that length, ``ignore_eos``). The prefix cache sees the
same page identities a real run would (the shared prefix and each conversation's history hit).
Used by ``bench/admission.py`` (default ``--max-running-requests`` vs a sweep).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Protocol

from serving.capacity import NEW_TOKEN_RATIO, admission_reserve
from serving.capacity.timing import TimingModel
from serving.engines.simulator.prefix_cache import PrefixCache
from serving.engines.simulator.scheduler import BatchScheduler, SimRequest
from serving.engines.simulator.text import PAGE_TOKENS


class _Dist(Protocol):
    def sample(self, rng: random.Random) -> int: ...


class Workload(Protocol):
    prompt_tokens: _Dist
    output_tokens: _Dist
    shared_prefix_tokens: int
    turns: _Dist | None
    max_conversation_tokens: int


@dataclass(frozen=True)
class ReplayResult:
    requests: int
    finished: int
    failed: int  # could never run: larger than the whole KV pool
    output_tokens: int
    makespan_s: float
    retractions: int
    max_running: int

    @property
    def output_tok_s(self) -> float:
        return self.output_tokens / self.makespan_s if self.makespan_s > 0 else 0.0


def replay_workload(
    model: TimingModel,
    workload: Workload,
    *,
    clients: int,
    requests: int,
    max_running: int,
    seed: int = 0,
    new_token_ratio: float = NEW_TOKEN_RATIO,
) -> ReplayResult:
    cap = model.capacity()
    pool = cap.kv_pool_tokens
    sched = BatchScheduler(model, PrefixCache(pool), max_running=min(max_running, cap.max_running), kv_pool_tokens=pool)
    rng = random.Random(seed)  # noqa: S311 - benchmark lengths, not secrets
    page_ids = itertools.count(1)
    shared = [next(page_ids) for _ in range(workload.shared_prefix_tokens // PAGE_TOKENS)]
    now, sent, failed, out_total = 0.0, 0, 0, 0
    convs: dict[int, tuple[list[int], int, int]] = {}  # client → (history pages, tokens, turns left)

    def send(client: int) -> None:
        nonlocal sent, failed
        while sent < requests:
            pages, hist, left = convs.get(client, ([], 0, 0))
            if left <= 0 or hist > workload.max_conversation_tokens:
                turns = workload.turns.sample(rng) if workload.turns is not None else 1
                pages, hist, left = list(shared), workload.shared_prefix_tokens, turns
            new_in = workload.prompt_tokens.sample(rng)
            n_out = workload.output_tokens.sample(rng)
            prompt = hist + new_in
            pages = pages + [next(page_ids) for _ in range(new_in // PAGE_TOKENS)]
            sent += 1
            if prompt + n_out > pool:
                failed += 1  # SGLang refuses a request longer than its whole pool
                convs[client] = ([], 0, 0)
                continue
            r = SimRequest(prompt, n_out, admission_reserve(prompt, n_out, new_token_ratio), pages=pages, tag=client)
            convs[client] = (pages + [next(page_ids) for _ in range(n_out // PAGE_TOKENS)], prompt + n_out, left - 1)
            sched.submit(r, now)
            return

    for c in range(clients):
        send(c)
    finished = 0
    while (b := sched.next_batch(now)) is not None:
        now += b.duration_s
        for r, k in sched.complete(b, now):
            out_total += k
            if r.state == "done":
                finished += 1
                sched.cache.insert(convs[int(r.tag)][0])  # the radix cache keeps the answer too
                send(int(r.tag))
    return ReplayResult(sent, finished, failed, out_total, now, sched.retracted_total, sched.max_running)
