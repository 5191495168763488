"""Step profile: ``locust -f loadtest/locustfile.py,loadtest/profiles/step.py --step-start 4 --step-users 4
--step-seconds 60 --steps 8``."""

from loadtest.shapes import StepShape


class Step(StepShape):
    abstract = False
