"""Step and burst load profiles for autoscaling tests, as Locust ``LoadTestShape`` classes.

Both vary the number of users (closed-loop concurrency), so they also work distributed (the master
runs the shape). Parameters come from the locustfile's options (``--step-users`` …) or the class
attributes. Use: ``locust -f loadtest/locustfile.py,loadtest/profiles/step.py``.
"""

from __future__ import annotations

from locust import LoadTestShape

from loadtest.load_profiles import burst_users, step_users


class _Options(LoadTestShape):
    abstract = True

    def opt(self, name: str, default: float) -> float:
        opts = getattr(self.runner.environment, "parsed_options", None) if self.runner else None
        value = getattr(opts, name, None) if opts is not None else None
        return float(default if value is None else value)


class StepShape(_Options):
    abstract = True
    start, step, every_s, steps = 4, 4, 60.0, 8

    def tick(self) -> tuple[int, float] | None:
        users = step_users(
            self.get_run_time(),
            start=int(self.opt("step_start", self.start)),
            step=int(self.opt("step_users", self.step)),
            every_s=self.opt("step_seconds", self.every_s),
            steps=int(self.opt("steps", self.steps)),
        )
        return None if users is None else (users, max(users, 1))


class BurstShape(_Options):
    abstract = True
    base, peak, period_s, burst_s, total_s = 4, 32, 300.0, 60.0, 1200.0

    def tick(self) -> tuple[int, float] | None:
        users = burst_users(
            self.get_run_time(),
            base=int(self.opt("burst_base", self.base)),
            peak=int(self.opt("burst_peak", self.peak)),
            period_s=self.opt("burst_period", self.period_s),
            burst_s=self.opt("burst_seconds", self.burst_s),
            total_s=self.opt("burst_total", self.total_s),
        )
        return None if users is None else (users, max(users, 1))
