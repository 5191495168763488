"""Fixtures of the gateway integration tests; helpers live in gateway_procs.py (a unique module name)."""

from gateway_procs import llama, serve_gateway, start_engine

__all__ = ["llama", "serve_gateway", "start_engine"]
