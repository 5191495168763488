"""Locust load tests, reports and the capacity planner for OpenAI-compatible serving endpoints.

Importing this package does not import Locust (Locust monkey-patches the standard library with
gevent on import); only :mod:`loadtest.user`, :mod:`loadtest.shapes`, :mod:`loadtest.runner` and
:mod:`loadtest.locustfile` do.
"""
