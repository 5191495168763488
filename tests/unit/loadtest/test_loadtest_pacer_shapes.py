"""The open-loop pacer's schedule and the step / burst profiles' user counts."""

import itertools

import pytest

from loadtest.load_profiles import burst_users, step_users
from loadtest.pacer import PoissonPacer

pytestmark = pytest.mark.unit


def test_pacer_schedule_is_poisson_at_the_rate_and_independent_of_claim_time():
    now = {"t": 100.0}
    p = PoissonPacer(20.0, seed=3, clock=lambda: now["t"])
    times = [p.claim() for _ in range(4000)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g > 0 for g in gaps)
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 20.0, rel=0.05)
    now["t"] = 1e6  # claims made late keep the schedule: the lag is theirs to record
    assert p.claim() < 1e6
    with pytest.raises(ValueError, match="arrival rate"):
        PoissonPacer(0)


def test_step_and_burst_user_counts():
    assert [step_users(t, start=4, step=4, every_s=60, steps=2) for t in (0, 59, 60, 150)] == [4, 4, 8, 12]
    assert step_users(180, start=4, step=4, every_s=60, steps=2) is None
    kw = {"base": 2, "peak": 10, "period_s": 100, "burst_s": 20, "total_s": 300}
    assert [burst_users(t, **kw) for t in (0, 79, 80, 99, 100, 185)] == [2, 2, 10, 10, 2, 10]
    assert burst_users(300, **kw) is None
