"""Where the installed package finds the chart and the kustomize tree: inside itself.

``serving/deploy/_data/helm`` and ``_data/k8s`` are links to the repository's top-level product
folders (``helm/``, ``k8s/``), which stay where users look for them. Building the package follows
the links, so the wheel (and an image's ``pip install .``) carries the files themselves as package
data; a checkout or an editable install reads the folders through the same links. Either way the
code names one location, relative to this module.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "_data"
CHART_DIR = DATA_DIR / "helm" / "qwen-serve"
KUSTOMIZE_DIR = DATA_DIR / "k8s"
KUSTOMIZE_BASE_DIR = KUSTOMIZE_DIR / "base"
