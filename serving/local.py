"""`serving serve`: the whole stack on this machine — a local Ray cluster, the gateway and the
engine replicas — until Ctrl-C, then everything stops (no engine process is left behind)."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import httpx

from serving.config import Settings

EXAMPLE = """
  qwen-serve is up: {url}   (model "{model}", engine {engine}; Ctrl-C stops everything)

  curl {url}/v1/chat/completions -H 'content-type: application/json'{auth_curl} \\
       -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Say hello"}}], "stream": true}}'

  python -c 'from openai import OpenAI; c = OpenAI(base_url="{url}/v1", api_key="{key}")
  r = c.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "Say hello"}}])
  print(r.choices[0].message.content)'
"""


def wait_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/ready", timeout=2.0)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"gateway at {url} not ready after {timeout_s:.0f}s (last answer: {last})")


def serve_forever(settings: Settings, *, block: bool = True) -> str:
    """Start Ray (local unless ``ray.address``), deploy the app, wait until it answers; return the URL."""
    import os

    from serving.gateway.ingress import ingress_env

    os.environ.update(ingress_env(settings))  # before Ray (and Serve) start: read at import time
    import ray
    from ray import serve

    from serving.app import build_app

    if not ray.is_initialized():
        # "local": always a fresh cluster of our own, never an unrelated one found on this machine
        ray.init(address=settings.ray.address or "local", include_dashboard=False, log_to_driver=False)
    g = settings.gateway
    serve.start(http_options={"host": g.host, "port": g.port})
    serve.run(build_app(settings), name=settings.ray.app_name, route_prefix="/", blocking=False)
    url = f"http://{'127.0.0.1' if g.host in ('0.0.0.0', '::') else g.host}:{g.port}"
    wait_ready(url, settings.replica.startup_timeout_s)
    if not block:
        return url
    key = "<your key>" if g.api_keys.required else "none"
    auth = " -H 'authorization: Bearer <your key>'" if g.api_keys.required else ""
    print(EXAMPLE.format(url=url, model=settings.model.served_name, engine=settings.engine.kind.value,
                         key=key, auth_curl=auth), flush=True)  # fmt: skip

    stop = {"now": False}

    def _stop(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping: draining requests, stopping engines…", file=sys.stderr, flush=True)
        shutdown()
    return url


def shutdown() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
