"""Shared by the observability tests: the chart's rules and dashboard as Prometheus sees them,
and real Prometheus / OTLP collector processes on 127.0.0.1 that the tests start and stop."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "helm"))

from helm_support import CHART, EVERYTHING_ON, render  # noqa: E402  (found on the path set above)

from tests.conftest import wait_http_ok  # noqa: E402

NAMESPACE = "llm"  # the release namespace the chart is rendered into
RELEASE = "qwen"
DASHBOARD = CHART / "dashboards" / "qwen-serve.json"


def rendered_chart(extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    values = EVERYTHING_ON if extra is None else {**EVERYTHING_ON, **extra}
    return render(values, release=RELEASE, namespace=NAMESPACE)


def rendered_rules(docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The PrometheusRule's groups as a Prometheus rule file (what the Operator hands Prometheus)."""
    (rule,) = [d for d in docs or rendered_chart() if d["kind"] == "PrometheusRule"]
    return {"groups": rule["spec"]["groups"]}


def write_rules(path: Path, docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rules = rendered_rules(docs)
    path.write_text(yaml.safe_dump(rules, sort_keys=False, allow_unicode=True))
    return rules


def service_monitor_targets(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What the ServiceMonitor selects, resolved through the metrics Service to the container
    ports of the RayService's pods: [{endpoint (port name), path, target_port (container port
    name), number (container port), role (head | worker), pod_labels, service}]."""
    (sm,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    services = [d for d in docs if d["kind"] == "Service"]
    selector = sm["spec"]["selector"]["matchLabels"]
    (svc,) = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
    (rs,) = [d for d in docs if d["kind"] == "RayService"]
    cluster = rs["spec"]["rayClusterConfig"]
    pods = {"head": cluster["headGroupSpec"]["template"]}
    for g in cluster["workerGroupSpecs"]:
        pods["worker"] = g["template"]
    out = []
    for ep in sm["spec"]["endpoints"]:
        (port,) = [p for p in svc["spec"]["ports"] if p["name"] == ep["port"]]
        assert svc["spec"]["selector"].items() <= pods["head"]["metadata"]["labels"].items()
        for role, tpl in pods.items():
            numbers = {p["name"]: p["containerPort"] for c in tpl["spec"]["containers"] for p in c.get("ports", [])}
            if port["targetPort"] in numbers:
                out.append({"endpoint": ep["port"], "path": ep["path"], "target_port": port["targetPort"],
                            "number": numbers[port["targetPort"]], "role": role,
                            "pod_labels": tpl["metadata"]["labels"], "service": svc["metadata"]["name"]})  # fmt: skip
    return out


def dashboard_targets(namespace: str = NAMESPACE) -> list[tuple[str, str, str]]:
    """(panel title, target refId, expr with ``$namespace`` filled in) of every dashboard panel."""
    board = json.loads(DASHBOARD.read_text())
    return [
        (p["title"], t["refId"], t["expr"].replace("$namespace", namespace))
        for p in board["panels"]
        for t in p.get("targets", [])
    ]


def tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: `make prometheus` installs Debian's prometheus package (as root)")
    return found


class Prometheus:
    """A real Prometheus on 127.0.0.1 with its own data folder; ``stop`` leaves nothing running."""

    def __init__(self, workdir: Path, config: dict[str, Any], port: int) -> None:
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}"
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = workdir / "prometheus.log"
        argv = [
            tool("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--web.enable-lifecycle",
        ]
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            wait_http_ok(self.url + "/-/ready", self.proc, self.log, what="prometheus", timeout_s=60)
        except BaseException:
            self.stop()
            raise

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.url + "/api/v1/" + path, params=params, timeout=30)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return list(data["result"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
