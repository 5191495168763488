"""Rate limits shared by every gateway replica: one detached Ray actor holds the true token
buckets (per tenant, requests/min and tokens/min); each replica leases capacity from it in blocks
and spends the block locally, so the actor is asked about once per block, never per request.

The global rate stays within the configured limit plus the blocks leased but not yet spent (at most
one block per replica and bucket). A block is ``max(need, ceil(limit × gateway.limits.lease_fraction))``.
Token usage is settled against the local allowance (it may go negative: the next lease comes
sooner). When the actor cannot be reached the replica falls back to its own buckets (fail open to
local limits, never to no limits).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from serving.config.settings import LimitSettings
from serving.gateway.auth import RateLimiter, Tenant, TokenBucket
from serving.gateway.errors import ApiError

log = logging.getLogger("serving.gateway")

LIMITS_ACTOR = "qwen-serve-limits"
LIMITS_NAMESPACE = "qwen-serve"
LEASE_TIMEOUT_S = 2.0
_WHAT = {"req": "requests", "tok": "tokens"}


class SharedBuckets:
    """The actor's state (a plain class, testable without Ray): the global buckets."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def lease(self, who: str, kind: str, per_min: float, want: float) -> tuple[float, float]:
        """Grant up to ``want`` from ``who``'s ``kind`` bucket: (granted, seconds until ``want``
        would be available when less was granted)."""
        b = self._buckets.get((who, kind))
        if b is None or b.capacity != per_min:
            b = self._buckets[(who, kind)] = TokenBucket(per_min, self.clock)
        wait = b.wait_s(want)
        granted = want if wait == 0 else max(0.0, math.floor(b.level))
        b.take(granted)
        return granted, wait


def limits_actor() -> Any:
    import ray

    cls = ray.remote(num_cpus=0, max_restarts=-1)(SharedBuckets)
    return cls.options(  # type: ignore[attr-defined]
        name=LIMITS_ACTOR, namespace=LIMITS_NAMESPACE, lifetime="detached", get_if_exists=True,
        scheduling_strategy="DEFAULT",
    ).remote()  # fmt: skip


class SharedRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose allowance comes from the shared actor in blocks."""

    def __init__(self, limits: LimitSettings, actor: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(limits, clock)
        self.fraction = limits.lease_fraction
        self._actor = actor
        self._allowance: dict[tuple[str, str], float] = {}
        self._blocked_until: dict[tuple[str, str], float] = {}
        self._leasing: dict[tuple[str, str], asyncio.Future[None]] = {}
        self.leases = 0

    def enabled_for(self, tenant: Tenant) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, tenant.requests_per_min, tenant.tokens_per_min))

    def _get_actor(self) -> Any:
        if self._actor is None:
            self._actor = limits_actor()
        return self._actor

    async def _ensure(self, who: str, kind: str, per_min: int, need: float) -> float:
        """0 when ``need`` is in the local allowance (leasing a block if not), else seconds to wait.
        One lease per bucket at a time: concurrent requests of this replica wait for it and look
        again, so no grant is overwritten and no replica leases more than it needs."""
        key = (who, kind)
        while True:
            have = self._allowance.get(key, 0.0)
            if have >= need:
                return 0.0
            blocked = self._blocked_until.get(key, 0.0) - self.clock()
            if blocked > 0:  # the actor said no a moment ago: do not ask again per refused request
                return blocked
            pending = self._leasing.get(key)
            if pending is None:
                break
            await asyncio.shield(pending)
        done = self._leasing[key] = asyncio.get_running_loop().create_future()
        try:
            block = max(need - have, math.ceil(per_min * self.fraction))
            granted, wait = await asyncio.wait_for(
                self._get_actor().lease.remote(who, kind, float(per_min), block), LEASE_TIMEOUT_S
            )
        finally:
            del self._leasing[key]
            done.set_result(None)
        self.leases += 1
        have = self._allowance[key] = self._allowance.get(key, 0.0) + granted
        if have >= need:
            return 0.0
        wait = max(wait, 1.0)
        self._blocked_until[key] = self.clock() + wait
        return wait

    async def admit_shared(self, who: str, estimated_tokens: int, rpm: int | None, tpm: int | None) -> None:
        rpm = rpm if rpm is not None else self.rpm
        tpm = tpm if tpm is not None else self.tpm
        checks = [(k, lim, n) for k, lim, n in (("req", rpm, 1.0), ("tok", tpm, float(estimated_tokens)))
                  if lim is not None]  # fmt: skip
        try:
            waits = [(await self._ensure(who, k, lim, n), f"{_WHAT[k]} per minute ({lim})") for k, lim, n in checks]
        except Exception as exc:  # the actor is unreachable: this replica's own buckets decide
            log.warning("shared limits unavailable (%s): local limits apply", type(exc).__name__)
            self.admit(who, estimated_tokens, rpm, tpm)
            return
        wait, what = max(waits, default=(0.0, ""))
        if wait > 0:
            raise ApiError(429, f"rate limit reached: {what}", code="rate_limit_exceeded", retry_after_s=wait)
        for k, _, n in checks:
            self._allowance[(who, k)] -= n

    def settle(self, who: str, estimated_tokens: int, used_tokens: int) -> None:
        if (who, "tok") in self._allowance and used_tokens:
            self._allowance[(who, "tok")] -= used_tokens - estimated_tokens
        else:
            super().settle(who, estimated_tokens, used_tokens)
