"""The gateway as Ray Serve's ingress, reading engines from the registry actor, in front of a
real simulator process."""

from __future__ import annotations

import httpx
import openai
import pytest
from gateway_procs import settings_for, wait_until

from serving.config import settings_to_wire
from tests.conftest import free_port

pytestmark = pytest.mark.integration

SIM = {
    "model": {"preset": "qwen3.6-27b"},
    "engine": {"kind": "simulator", "simulator": {"fixed_ttft_s": 0.01, "fixed_tpot_s": 0.01}},
    "parallelism": {"tp": 2},
}


def test_gateway_ingress_serves_engines_from_the_registry(start_engine):
    ray = pytest.importorskip("ray")
    from ray import serve

    from serving.gateway.deployment import GatewayIngress, gateway_deployment_options
    from serving.registry import registry_actor

    sim = start_engine("sim-ray", SIM)
    settings = settings_for(SIM)
    port = free_port()
    # address="local": a private cluster even when another test run has one going on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        opts = gateway_deployment_options(settings)
        serve.run(GatewayIngress.options(**opts).bind(settings_to_wire(settings)), name="gw", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/health", timeout=30).status_code == 200
        assert httpx.get(url + "/ready", timeout=30).status_code == 503  # nothing registered yet
        ray.get(registry_actor().publish.remote(sim.endpoint().to_dict()))
        wait_until(
            lambda: httpx.get(url + "/ready", timeout=30).status_code == 200, 30, "the gateway to see the engine"
        )
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=60, max_retries=0)
        text = "".join(
            (ch.choices[0].delta.content or "") if ch.choices else ""
            for ch in c.chat.completions.create(model="qwen3.6-27b", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=16, stream=True,
                                                extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        )  # fmt: skip
        assert text
    finally:
        serve.shutdown()
        ray.shutdown()
