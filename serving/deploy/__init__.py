"""Kubernetes deployment helpers: the Serve config and chart schema derived from the settings tree.

The Helm chart (``helm/qwen-serve``) renders the same thin Serve config and reads its few
render-time facts from a generated helpers file; the tests compare both, so the settings tree stays
the one source of truth.
"""

from serving.deploy.serve_config import GATEWAY_RESOURCE, IMPORT_PATH, serve_config

__all__ = ["GATEWAY_RESOURCE", "IMPORT_PATH", "serve_config"]
