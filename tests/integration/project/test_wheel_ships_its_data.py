"""The wheel carries the chart and the kustomize tree as package data, and the installed package
reads them from inside itself: built from the files the Dockerfile copies, installed into a bare
target folder, imported from there with no checkout on the path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

DATA = "serving/deploy/_data"


def build_context() -> list[str]:
    """What the Dockerfile's ``source`` stage copies for every image's ``pip install .``."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("FROM ") and line.endswith(" AS source"))
    names: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("FROM "):
            break
        if line.startswith("COPY "):
            names += line.split()[1:-1]
    return names


def _files(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    context = build_context()
    assert {"serving", "helm", "k8s"} <= set(context)
    for name in context:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    out = subprocess.run([*pip, str(src), "-w", str(dist)], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    (found,) = dist.glob("qwen_serve-*.whl")
    return found


def test_the_wheel_holds_every_chart_and_kustomize_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        links = [i.filename for i in zf.infolist() if (i.external_attr >> 16) & 0o170000 == 0o120000]
    shipped = {n.removeprefix(f"{DATA}/") for n in names if n.startswith(f"{DATA}/")}
    assert {f"helm/qwen-serve/{f}" for f in _files(ROOT / "helm" / "qwen-serve")} <= shipped
    assert {f"k8s/{f}" for f in _files(ROOT / "k8s")} <= shipped
    assert {
        "helm/qwen-serve/.helmignore",
        "helm/qwen-serve/templates/_generated.tpl",
        "k8s/base/rayservice.yaml",
    } <= shipped
    assert not links, f"symbolic links in the wheel: {links}"
    assert "loadtest/data/gpu_prices.yaml" in names


def test_the_installed_package_reads_its_data_from_inside_itself(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site)]
    out = subprocess.run([*pip, str(wheel)], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    probe = textwrap.dedent(
        """
        import json, sys
        import serving
        from serving.config import load_settings
        from serving.deploy.chart_helpers import HELPERS_FILE, render_helpers
        from serving.deploy.cli import load_values
        from serving.deploy.kustomize import BASE_DIR
        from serving.deploy.paths import CHART_DIR
        from serving.deploy.serve_config import serve_config
        from serving.engines import get_engine, plan_instance

        settings = load_values(None)["settings"]  # the packaged chart's values.yaml
        local = load_settings(overrides={"engine": {"kind": "llamacpp"}}, env={})
        plan = plan_instance(local)
        print(json.dumps({
            "package": serving.__file__,
            "chart": str(CHART_DIR.resolve()),
            "base": str(BASE_DIR.resolve()),
            "chart_is_link": CHART_DIR.parent.is_symlink(),
            "helpers_current": HELPERS_FILE.read_text() == render_helpers(),
            "app": serve_config(settings)["applications"][0]["import_path"],
            "llama_program": plan.ranks[0].argv[0],
            "llama_missing": get_engine("llamacpp").missing_program(plan),
        }))
        """
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path, env=env
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.splitlines()[-1])
    inside = str(site / "serving") + "/"
    assert got["package"].startswith(inside)
    assert got["chart"].startswith(inside)
    assert got["base"].startswith(inside)
    assert got["chart_is_link"] is False
    assert got["helpers_current"] is True
    assert got["app"] == "serving.app:app_builder"
    # No checkout to fall back on: the program comes from PATH or engine.binary, and its absence is explained.
    assert got["llama_program"] == "llama-server"
    assert "engine.binary" in got["llama_missing"]
    assert "make llama-server" in got["llama_missing"]
