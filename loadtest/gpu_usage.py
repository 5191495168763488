"""How many GPUs were running during a run: one small interface, three sources.

* :class:`StaticUsage` — what the operator says (``--replicas``, ``--gpus-per-replica``).
* :class:`RayServeUsage` — a local Ray Serve application: RUNNING replicas of the engine
  deployment (the dashboard's Serve REST API) × GPUs per replica from the settings tree.
* :class:`KubernetesUsage` — running pods with the chart's labels: the sum of their containers'
  ``nvidia.com/gpu`` requests (limits when no request is set), through the ``kubernetes`` client.

GPU-hours are integrated from periodic samples (:func:`gpu_hours`): each sample's count holds until
the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

GPU_RESOURCE = "nvidia.com/gpu"
CHART_SELECTOR = "app.kubernetes.io/part-of=qwen-serve,app.kubernetes.io/component=engine"


@dataclass(frozen=True)
class GpuUsage:
    replicas: int
    gpus: int
    gpu_type: str
    source: str


class GpuUsageSource(Protocol):
    def sample(self) -> GpuUsage: ...


@dataclass(frozen=True)
class StaticUsage:
    replicas: int
    gpus_per_replica: int
    gpu_type: str

    def sample(self) -> GpuUsage:
        return GpuUsage(self.replicas, self.replicas * self.gpus_per_replica, self.gpu_type, "static")


def running_replicas(serve_details: dict[str, Any], app: str, deployment: str) -> int:
    """RUNNING replicas of one deployment, from the Serve REST API's JSON
    (``GET <dashboard>/api/serve/applications/``: replicas listed with a ``state``) or from
    ``dataclasses.asdict(serve.status())`` (``replica_states`` counts)."""
    dep = ((serve_details.get("applications") or {}).get(app) or {}).get("deployments", {}).get(deployment)
    if not dep:
        return 0
    if "replica_states" in dep:
        return int((dep.get("replica_states") or {}).get("RUNNING", 0))
    return sum(1 for r in dep.get("replicas") or () if r.get("state") == "RUNNING")


def fetch_serve_details(dashboard_url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The Serve REST API on a Ray dashboard (no Ray import: safe under gevent)."""
    import json
    import urllib.request

    url = dashboard_url.rstrip("/") + "/api/serve/applications/"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"dashboard URL must be http(s): {dashboard_url}")
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - scheme checked above
        return dict(json.load(resp))


@dataclass
class RayServeUsage:
    """RUNNING replicas of the engine deployment × ``gpus_per_replica`` (from the settings tree:
    ``parallelism.gpus_per_instance``). ``fetch`` defaults to the dashboard's Serve REST API."""

    gpus_per_replica: int
    gpu_type: str
    app: str = "qwen-serve"
    deployment: str = "EngineReplica"
    dashboard_url: str = "http://127.0.0.1:8265"
    fetch: Callable[[], dict[str, Any]] | None = None

    def sample(self) -> GpuUsage:
        details = self.fetch() if self.fetch is not None else fetch_serve_details(self.dashboard_url)
        n = running_replicas(details, self.app, self.deployment)
        return GpuUsage(n, n * self.gpus_per_replica, self.gpu_type, "ray-serve")


def gpus_of_pod(pod: Any) -> int:
    """``nvidia.com/gpu`` requested by a pod's containers (limit when no request is given)."""
    total = 0
    for c in pod.spec.containers or ():
        res = c.resources
        if res is None:
            continue
        qty = (res.requests or {}).get(GPU_RESOURCE) or (res.limits or {}).get(GPU_RESOURCE)
        total += int(qty or 0)
    return total


def usage_from_pods(pod_list: Any, gpu_type: str) -> GpuUsage:
    """GPUs of the Running pods in a ``V1PodList`` (or anything with ``.items`` of pods)."""
    running = [p for p in pod_list.items if p.status is not None and p.status.phase == "Running"]
    per_pod = [gpus_of_pod(p) for p in running]
    return GpuUsage(sum(1 for g in per_pod if g > 0), sum(per_pod), gpu_type, "kubernetes")


@dataclass
class KubernetesUsage:
    namespace: str
    gpu_type: str
    label_selector: str = CHART_SELECTOR
    list_pods: Callable[[str, str], Any] | None = None  # (namespace, selector) -> V1PodList

    def sample(self) -> GpuUsage:
        if self.list_pods is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api = client.CoreV1Api()
            pods = api.list_namespaced_pod(self.namespace, label_selector=self.label_selector)
        else:
            pods = self.list_pods(self.namespace, self.label_selector)
        return usage_from_pods(pods, self.gpu_type)


def gpu_hours(samples: Sequence[tuple[float, int]], t_end: float) -> float:
    """∑ gpus × held time, in hours. ``samples`` are (time_s, gpus) in time order; each count
    holds from its sample until the next (the last one until ``t_end``)."""
    total = 0.0
    for i, (t, g) in enumerate(samples):
        nxt = samples[i + 1][0] if i + 1 < len(samples) else t_end
        if nxt < t:
            raise ValueError("samples must be in time order and end before t_end")
        total += g * (nxt - t)
    return total / 3600.0
