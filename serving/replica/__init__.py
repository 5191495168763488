"""Engine replicas on Ray Serve: placement, rank supervision, health, drain, registration, autoscaling.

Import :mod:`serving.replica.deployment` for the Serve deployment (it imports Ray Serve); the other
modules are light.
"""
