"""An engine's program comes from engine.binary or PATH, never from a checkout's layout; when it
is not there, `serving serve` refuses before starting Ray and says how to get it."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.config import load_settings
from serving.engines import plan_instance
from serving.local import StackStartError, check_program

pytestmark = pytest.mark.unit


def test_llama_server_is_looked_up_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    s = load_settings(overrides={"engine": {"kind": "llamacpp"}}, env={})
    assert plan_instance(s).ranks[0].argv[0] == "llama-server"
    with pytest.raises(StackStartError) as missing:
        check_program(s)
    assert "engine.binary" in str(missing.value)
    assert "make llama-server" in str(missing.value)
    program = tmp_path / "llama-server"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    check_program(s)  # found on PATH: no complaint


def test_engine_binary_names_the_program(tmp_path: Path) -> None:
    s = load_settings(overrides={"engine": {"kind": "llamacpp", "binary": str(tmp_path / "nope")}}, env={})
    assert plan_instance(s).ranks[0].argv[0] == str(tmp_path / "nope")
    with pytest.raises(StackStartError, match=r"engine\.binary"):
        check_program(s)
