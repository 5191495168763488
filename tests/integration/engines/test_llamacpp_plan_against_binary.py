"""The llama.cpp plan uses only options the real `llama-server` binary accepts."""

from __future__ import annotations

import re
import subprocess

import pytest

from serving.config import load_settings
from serving.engines import plan_instance

pytestmark = [pytest.mark.integration, pytest.mark.llama_server]  # needs the llama-server build


def test_every_llamacpp_option_exists_in_llama_server_help():
    s = load_settings(env={})
    plan = plan_instance(s, host="127.0.0.1", port=8081)
    argv = plan.ranks[0].argv
    out = subprocess.run([argv[0], "--help"], capture_output=True, text=True, timeout=60, check=False)
    text = out.stdout + out.stderr
    known = set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", text))
    used = [a for a in argv[1:] if a.startswith("--")]
    assert used, argv
    missing = [a for a in used if a not in known]
    assert not missing, f"llama-server does not know {missing}"
