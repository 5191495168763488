"""The option table shipped with the package is what SGLang 0.5.23's own parser declares, built from
the wheel by the project's script; the in-repo reference data is complete and needs nothing beside
the checkout."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from serving.engines.reference import SGLANG_FLAGS
from tests.conftest import REFERENCE, ROOT, load_script

pytestmark = pytest.mark.unit


def test_sglang_table_equals_what_the_wheel_declares(sglang_wheel: Path) -> None:
    # In a subprocess: the generator stubs torch & co. while it imports SGLang's parser.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_option_tables.py"), "--check"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "531 options, 0 differences" in proc.stdout


def test_the_check_fails_when_the_table_drifts(sglang_wheel: Path, tmp_path: Path) -> None:
    table = json.loads(SGLANG_FLAGS.read_text())
    table["options"] = [o for o in table["options"] if o["dest"] != "tp_size"]
    table["options"].append({**table["options"][0], "opts": ["--cuda-graph-max-bs"], "dest": "cuda_graph_max_bs"})
    drifted = tmp_path / "drifted.json"
    drifted.write_text(json.dumps(table))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_option_tables.py"), "--against", str(drifted)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "only in the wheel: ('--tp-size', '--tensor-parallel-size')" in proc.stdout
    assert "only in drifted.json: ('--cuda-graph-max-bs',)" in proc.stdout


def test_the_shipped_table_records_its_wheel() -> None:
    wheel = json.loads(SGLANG_FLAGS.read_text())["wheel"]
    assert wheel["file"].startswith("sglang-0.5.23-")
    assert len(wheel["sha256"]) == 64
    assert wheel["fetched_with"] == "pip download --no-deps --only-binary=:all: sglang==0.5.23"


def test_the_unpacked_wheel_records_where_it_came_from(sglang_wheel: Path) -> None:
    source = json.loads((sglang_wheel / "SOURCE.json").read_text())
    assert source["version"] == "0.5.23"
    assert source["sha256"] == json.loads(SGLANG_FLAGS.read_text())["wheel"]["sha256"]


def test_reference_data_is_in_the_repository() -> None:
    names = {p.relative_to(REFERENCE).as_posix() for p in REFERENCE.rglob("*") if p.is_file()}
    assert names == {
        "README.md",
        "vllm-serve-0.33.0.flags.json",
        "kuberay-crds-v1.7.0/ray.io_rayservices.yaml",
        "kuberay-crds-v1.7.0/ray.io_rayclusters.yaml",
    }
    assert SGLANG_FLAGS.is_file()
    assert SGLANG_FLAGS.is_relative_to(ROOT / "serving")


# A path built from a "shared" component, or one of the moved files under the team folder reference/.
# (Docstrings citing the team notes qwen36.md are citations, not reads.)
FORBIDDEN = re.compile(r"""["']shared["']|shared/reference/(sglang|vllm|kuberay)""")


def test_no_code_reads_a_folder_beside_the_checkout() -> None:
    offenders = []
    for folder in ("serving", "tests", "bench", "loadtest", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if path != Path(__file__) and FORBIDDEN.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_fetch_without_a_reachable_index_fails_with_a_clear_message(tmp_path: Path, monkeypatch) -> None:
    wheels = load_script("engine_wheels")
    empty = tmp_path / "no-wheels-here"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(wheels.FetchError, match=r"could not download sglang==0.5.23 .*package index reachable"):
        wheels.fetch("sglang", "0.5.23", cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "sglang-0.5.23").exists()
