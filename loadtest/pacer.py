"""Open-loop arrivals: one shared Poisson schedule per load-generator process.

Users claim the next arrival time from the pacer, sleep until it and send. When every user is
busy, claims fall behind the schedule: the lag (send time − scheduled arrival) is recorded per
request, so a report shows when the generator, not the server, limited the offered load.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class PoissonPacer:
    def __init__(self, rate_rps: float, *, seed: int | None = None, clock: Callable[[], float] = time.monotonic):
        if rate_rps <= 0:
            raise ValueError(f"arrival rate must be > 0 requests/s, got {rate_rps}")
        self._rng = random.Random(seed)  # noqa: S311 - workload randomness, not security
        self._clock = clock
        self.rate_rps = rate_rps
        self._next: float | None = None
        self.claimed = 0

    def set_rate(self, rate_rps: float) -> None:
        """Change the rate from now on (step and burst profiles)."""
        if rate_rps <= 0:
            raise ValueError(f"arrival rate must be > 0 requests/s, got {rate_rps}")
        self.rate_rps = rate_rps
        self._next = None  # restart the schedule at the new rate

    def claim(self) -> float:
        """The next scheduled arrival (``clock`` time); the caller waits until it, then sends."""
        now = self._clock()
        if self._next is None:
            self._next = now + self._rng.expovariate(self.rate_rps)
        t = self._next
        self._next = t + self._rng.expovariate(self.rate_rps)
        self.claimed += 1
        return t
