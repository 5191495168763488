"""A Ray Serve driver for one benchmark arm: ``python -m bench.ray_driver '<json>'``.

Starts a fresh local Ray head (never joins another cluster on the machine), deploys the app, prints
``ready`` and serves until its stdin closes, then shuts Serve and Ray down. Apps: ``ours``
(``serving.app.build_app``: gateway ingress + engine replicas) and ``naive`` (:mod:`bench.naive_ray`).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def build(spec: dict[str, Any]) -> Any:
    if spec["app"] == "naive":
        from bench.naive_ray import build as build_naive

        return build_naive(spec["engine_url"])
    from serving.app import build_app
    from serving.config import load_settings

    return build_app(load_settings(overrides=spec["overrides"], env={}))


def main() -> None:
    spec = json.loads(sys.argv[1])
    import ray
    from ray import serve

    ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=spec.get("num_cpus", 4))
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": spec["port"]})
        serve.run(build(spec), name="bench", route_prefix="/", blocking=False)
        print("ready", flush=True)
        sys.stdin.readline()
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
