"""k8s/: the kustomize base is the chart's default profile; every overlay builds offline and validates."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_support import ROOT, kubectl, validate_object

from serving.deploy.kustomize import BASE_DIR, chart_objects, render_base

pytestmark = pytest.mark.integration

OVERLAYS = sorted(p.name for p in (ROOT / "k8s" / "overlays").iterdir() if (p / "kustomization.yaml").is_file())


def build(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def test_committed_base_is_the_chart_render() -> None:
    committed = {p.name: p.read_text() for p in BASE_DIR.glob("*.yaml")}
    assert committed == render_base(), "k8s/base drifted from the chart: run `serving deploy k8s-base --write`"


def test_base_builds_to_the_chart_objects() -> None:
    built = {_key(d): d for d in build(BASE_DIR)}
    chart = {_key(d): d for docs in chart_objects().values() for d in docs}
    assert built == chart


def test_there_are_overlays() -> None:
    assert {"default", "production"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_validates(overlay: str, reference_dir: Path) -> None:
    docs = build(ROOT / "k8s" / "overlays" / overlay)
    assert "RayService" in {d["kind"] for d in docs}
    for doc in docs:
        assert doc["metadata"].get("namespace") == "qwen-serve"
        validate_object(doc, reference_dir)


def test_production_overlay_pins_the_image_and_drops_the_placeholder_secret() -> None:
    docs = build(ROOT / "k8s" / "overlays" / "production")
    assert "Secret" not in {d["kind"] for d in docs}
    ray = next(d for d in docs if d["kind"] == "RayService")
    cluster = ray["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    images = {c["image"] for pod in pods for c in pod["containers"] + pod.get("initContainers", [])}
    assert images == {"registry.example.com/qwen-serve:0.1.0"}
