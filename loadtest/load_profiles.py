"""User counts over time of the step and burst profiles (pure; :mod:`loadtest.shapes` drives Locust)."""

from __future__ import annotations


def step_users(t: float, *, start: int, step: int, every_s: float, steps: int) -> int | None:
    """Users at time ``t``: ``start``, plus ``step`` every ``every_s`` seconds; None after the last step."""
    k = int(t // every_s)
    return None if k > steps else start + step * k


def burst_users(t: float, *, base: int, peak: int, period_s: float, burst_s: float, total_s: float) -> int | None:
    """``base`` users, ``peak`` in the last ``burst_s`` seconds of every ``period_s``; None after ``total_s``."""
    if t >= total_s:
        return None
    return peak if (t % period_s) >= period_s - burst_s else base
