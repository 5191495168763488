"""A TP=8, two-node simulated instance on a real two-node Ray cluster: placement, dist-init address,
readiness, and whole-instance replacement when rank 1 dies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
import ray
from replica_helpers import GPUS_PER_NODE, pid_gone, poll, sim_settings

from serving.registry import registry_actor

pytestmark = pytest.mark.integration

APP = "replica-multinode"


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def chat(url: str) -> dict[str, Any]:
    r = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "qwen3.6-27b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def registered(replica_id: str) -> bool:
    return any(e["replica_id"] == replica_id for e in ray.get(registry_actor().snapshot.remote()))


@pytest.fixture(scope="module")
def multinode(ray_cluster: Any) -> Iterator[Any]:
    from ray import serve

    from serving.config import settings_to_wire
    from serving.replica.deployment import EngineReplica, engine_deployment_options

    s = sim_settings(parallelism={"tp": 8, "nodes": 2})
    app = EngineReplica.options(**engine_deployment_options(s)).bind(settings_to_wire(s))  # type: ignore[attr-defined]
    handle = serve.run(app, name=APP, route_prefix=None)
    yield handle
    serve.delete(APP)


def test_ranks_land_on_two_nodes_with_the_right_dist_init_addr(multinode):
    info = multinode.info.remote().result(timeout_s=30)
    ranks = multinode.ranks.remote().result(timeout_s=30)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["node_id"] != ranks[1]["node_id"]  # STRICT_SPREAD: one bundle per node

    argvs = [psutil.Process(r["pid"]).cmdline() for r in ranks]
    addr = flag(argvs[0], "--dist-init-addr")
    host, port = addr.rsplit(":", 1)
    assert host == ranks[0]["node_ip"]  # rank 0's node address …
    assert int(port) != int(flag(argvs[0], "--port"))  # … and its own free port, not the HTTP one
    for i, argv in enumerate(argvs):
        assert flag(argv, "--dist-init-addr") == addr
        assert (flag(argv, "--nnodes"), flag(argv, "--node-rank"), flag(argv, "--tp-size")) == ("2", str(i), "8")

    for r in ranks:  # each rank's engine sees exactly the GPUs Ray gave its actor
        assert len(r["gpu_ids"]) == GPUS_PER_NODE
        assert psutil.Process(r["pid"]).environ()["CUDA_VISIBLE_DEVICES"] == ",".join(r["gpu_ids"])

    # Ready means: both rank processes up and rank 0 healthy and generating.
    assert all(psutil.Process(r["pid"]).is_running() for r in ranks)
    assert httpx.get(info["url"] + "/health", timeout=30).status_code == 200
    assert chat(info["url"])["choices"][0]["message"]
    assert registered(info["replica_id"])


def test_killing_rank_1_replaces_the_whole_instance(multinode):
    old = multinode.info.remote().result(timeout_s=30)
    old_ranks = multinode.ranks.remote().result(timeout_s=30)
    psutil.Process(old_ranks[1]["pid"]).kill()

    def replaced() -> dict[str, Any] | None:
        info = multinode.info.remote().result(timeout_s=10)
        return info if info["replica_id"] != old["replica_id"] else None

    new = poll(replaced, timeout_s=120, interval_s=1.0)
    # No orphans: every process of the old instance is gone, the old endpoint withdrawn.
    for r in old_ranks:
        poll(lambda r=r: pid_gone(r["pid"]), timeout_s=60)
    poll(lambda: not registered(old["replica_id"]), timeout_s=30)
    # The new instance serves.
    assert chat(new["url"])["choices"][0]["message"]
    new_ranks = multinode.ranks.remote().result(timeout_s=30)
    assert new_ranks[0]["node_id"] != new_ranks[1]["node_id"]
    assert registered(new["replica_id"])
