"""`make help` lists every target the Makefile declares."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def test_make_help_lists_every_target():
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z0-9][a-zA-Z0-9_-]*):", text, flags=re.MULTILINE))
    phony = set(re.search(r"^\.PHONY:(.*)$", text, flags=re.MULTILINE).group(1).split())
    assert targets == phony, f"declared but not .PHONY (or the reverse): {targets ^ phony}"
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0] for line in re.sub(r"\x1b\[[0-9;]*m", "", out).splitlines() if line.strip()}
    assert targets <= listed, f"missing from make help: {targets - listed}"
    assert {"serve", "test"} <= listed
