"""Burst profile: ``locust -f loadtest/locustfile.py,loadtest/profiles/burst.py --burst-base 4 --burst-peak 32
--burst-period 300 --burst-seconds 60 --burst-total 1200``."""

from loadtest.shapes import BurstShape


class Burst(BurstShape):
    abstract = False
