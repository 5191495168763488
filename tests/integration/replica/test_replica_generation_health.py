"""The replica's generation health check against a real llama-server (the shipped GGUF): it
passes while the engine generates, and fails with the reason once the engine cannot answer."""

from __future__ import annotations

import os
import signal

import pytest

from serving.config import load_settings
from serving.replica.deployment import GenerationProbe
from serving.replica.instance import EngineInstance, EngineUnhealthy

pytestmark = pytest.mark.integration


async def test_llamacpp_health_generates_one_token_and_fails_when_the_engine_is_stuck():
    s = load_settings(overrides={"engine": {"kind": "llamacpp", "port": 0, "threads": 1},
                                 "replica": {"startup_timeout_s": 120}}, env={})  # fmt: skip
    inst = EngineInstance(s, "health-test")
    await inst.start()
    probe = GenerationProbe(str(s.model.served_name), every_s=1e-6, timeout_s=3.0)
    try:
        await inst.check_health()
        await probe.check(inst.url)  # a real one-token completion
        assert probe.probes == 1
        pid = inst.ranks[0].pid
        os.kill(pid, signal.SIGSTOP)  # the process is there, but nothing generates
        try:
            with pytest.raises(EngineUnhealthy, match="one-token generation failed"):
                await probe.check(inst.url)
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        await probe.aclose()
        await inst.shutdown()
