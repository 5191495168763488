"""One real two-node Ray cluster (each node declares 4 GPUs) and Ray Serve, shared by the replica
integration tests (helpers live in replica_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from replica_helpers import GPUS_PER_NODE

from serving.config import Settings


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 4, "num_gpus": GPUS_PER_NODE, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=4, num_gpus=GPUS_PER_NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    try:
        yield cluster
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def serve_app(ray_cluster: Any) -> Iterator[Callable[..., Any]]:
    """Deploy EngineReplica for some settings under a unique app name; deleted afterwards."""
    from ray import serve

    from serving.config import settings_to_wire
    from serving.replica.deployment import EngineReplica, engine_deployment_options

    names: list[str] = []

    def deploy(s: Settings, name: str, **option_overrides: Any) -> Any:
        opts = {**engine_deployment_options(s), **option_overrides}
        app = EngineReplica.options(**opts).bind(settings_to_wire(s))  # type: ignore[attr-defined]
        names.append(name)
        return serve.run(app, name=name, route_prefix=None)

    yield deploy
    for name in names:
        serve.delete(name)
