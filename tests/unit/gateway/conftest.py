"""Fixtures of the gateway unit tests; the fakes live in gateway_fakes.py (a unique module name)."""

from gateway_fakes import make_rig

__all__ = ["make_rig"]
