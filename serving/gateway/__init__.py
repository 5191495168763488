"""The OpenAI-compatible gateway: a plain ASGI app factory (``create_app``) and, separately,
its thin Ray Serve ingress in :mod:`serving.gateway.deployment`."""

from serving.gateway.app import ROUTES, Gateway, create_app
from serving.gateway.errors import ApiError

__all__ = ["ROUTES", "ApiError", "Gateway", "create_app"]
