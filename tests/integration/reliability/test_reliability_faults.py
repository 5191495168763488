"""Fault matrix through the whole stack (Ray Serve ingress gateway → registry → simulated engine
replicas) on one private two-node Ray cluster with declared GPUs: every fault ends in an explicit
error or a refusal with Retry-After — never a silently truncated stream — and the stack recovers
by itself. Recovery times are printed (and written to $QWEN_SERVE_RELIABILITY_OUT) for
docs/reliability.md. The last test greps every log of the run for the API keys."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psutil
import pytest
from reliability_support import (
    ENGINE_KEY,
    GPUS_PER_NODE,
    OTHER_KEY,
    SECRETS,
    WRONG_KEY,
    Recorder,
    StreamResult,
    first_success_after,
    poll,
    ray_session_logs,
    stack_settings,
    stream_chat,
)

from serving.config import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "another test left Ray running in this process"
    # The proxy would send every request to the gateway replica on its own node while that one has
    # room; spread them (power of two choices) so a killed gateway replica holds only some streams.
    # Ray's processes inherit this environment (read by Serve at import time).
    saved = os.environ.get("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING")
    os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = "0"
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 8, "num_gpus": GPUS_PER_NODE, "include_dashboard": False},
    )
    c.add_node(num_cpus=8, num_gpus=GPUS_PER_NODE)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    port = free_port()
    # one proxy (both "nodes" share 127.0.0.1, so a proxy per node would clash on the port)
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    rec = Recorder()
    try:
        yield {"url": f"http://127.0.0.1:{port}", "recorder": rec}
    finally:
        rec.write()
        serve.shutdown()
        ray.shutdown()
        c.shutdown()
        if saved is None:
            os.environ.pop("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING", None)
        else:
            os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = saved


@pytest.fixture
def deploy(cluster: dict[str, Any]) -> Iterator[Callable[..., str]]:
    """Deploy the whole app (``serving.app.build_app``) at "/", wait until ready; delete after."""
    from ray import serve

    from serving.app import build_app

    names: list[str] = []

    def run(s: Settings, *, wait: bool = True) -> str:
        name = str(s.model.served_name)
        names.append(name)
        try:
            serve.run(build_app(s), name=name, route_prefix="/", blocking=False)
        except RuntimeError:
            if wait:
                raise  # an expected deploy failure is for the caller to inspect
        if wait:
            poll(lambda: httpx.get(cluster["url"] + "/ready", timeout=10).status_code == 200, 90, what="/ready")
        return str(cluster["url"])

    yield run
    for name in names:
        serve.delete(name)


def replica_handle(app: str) -> Any:
    from ray import serve

    return serve.get_deployment_handle("EngineReplica", app_name=app)


def engine_info(app: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    h = replica_handle(app)
    return h.info.remote().result(timeout_s=30), h.ranks.remote().result(timeout_s=30)


def replaced(app: str, old_id: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        info = replica_handle(app).info.remote().result(timeout_s=10)
        return info if info["replica_id"] != old_id else None

    return check


def test_engine_crash_mid_stream_is_an_explicit_error_and_the_replica_is_replaced(deploy, cluster):
    # The crash knob counts streamed tokens per engine process. The first stream asks for 100 and the
    # engine exits after 40; the replacement would crash again only after another 40 streamed tokens,
    # and everything sent to it below stays under that (probes of 2 tokens, 4 follow-ups of 4).
    app = "rel-crash"
    url = deploy(stack_settings(app, engine={"simulator": {"crash_after_tokens": 40}}))
    old, _ = engine_info(app)
    r = stream_chat(url, app, 100)
    t_fault = time.monotonic()
    assert r.status == 200
    assert not r.done, "a stream cut by an engine crash must not end with [DONE]"
    assert r.error is not None, r
    assert r.error["code"] == "engine_stream_error"
    assert r.error.get("request_id")
    assert 0 < r.chunks < 100
    rec = first_success_after(url, app, t_fault, timeout_s=90)
    new = poll(replaced(app, old["replica_id"]), 60, what="a new engine replica")
    assert new["url"] != old["url"]
    results = [stream_chat(url, app, 4) for _ in range(4)]
    assert all(x.complete for x in results), [x.kind() for x in results]
    cluster["recorder"].add("engine crash mid-stream", "error event engine_stream_error, no [DONE]; replica replaced",
                            rec["recovery_s"], meanwhile=rec["meanwhile"], chunks_before_crash=r.chunks)  # fmt: skip


def test_engine_hang_fails_health_and_the_replica_is_replaced(deploy, cluster):
    # A hang of exactly one instance: SIGSTOP rank 0's engine (nothing answers, not even /health).
    # (--sim-hang-after-s would hang every replacement too, after the same delay.)
    app = "rel-hang"
    s = stack_settings(app)
    url = deploy(s)
    old, ranks = engine_info(app)
    os.kill(ranks[0]["pid"], signal.SIGSTOP)
    t_fault = time.monotonic()
    try:
        new = poll(replaced(app, old["replica_id"]), 120, interval_s=0.5, what="a new engine replica")
        t_replaced = time.monotonic() - t_fault
        rec = first_success_after(url, app, t_fault, timeout_s=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(ranks[0]["pid"], signal.SIGCONT)  # if it is still there: let it die normally
    assert new["url"] != old["url"]
    poll(lambda: not psutil.pid_exists(ranks[0]["pid"]) or psutil.Process(ranks[0]["pid"]).status() == "zombie",
         60, what="the hung engine to be killed")  # fmt: skip
    bound = 3 * (s.replica.health_check_period_s + s.replica.health_check_timeout_s)
    cluster["recorder"].add("engine hang (SIGSTOP)", f"health check fails (3 × ≤ {bound / 3:g} s), replica replaced",
                            rec["recovery_s"], replaced_after_s=round(t_replaced, 2),
                            meanwhile=rec["meanwhile"])  # fmt: skip


def test_slow_start_beyond_the_timeout_is_a_clear_error_in_status_and_log(deploy, cluster):
    from ray import serve

    app = "rel-slowstart"
    s = stack_settings(app, engine={"simulator": {"slow_start_s": 120}}, replica={"startup_timeout_s": 3})
    t0 = time.monotonic()
    url = deploy(s, wait=False)  # serve.run gives up (RuntimeError) once Serve stops retrying the start

    def failed() -> str | None:
        dep = serve.status().applications[app].deployments["EngineReplica"]
        return dep.message if str(dep.status).endswith("DEPLOY_FAILED") else None

    message = poll(failed, 120, interval_s=0.5, what="EngineReplica DEPLOY_FAILED")
    t_failed = time.monotonic() - t0
    assert "not ready within 3s (replica.startup_timeout_s)" in message, message
    # the gateway is up and says why it cannot serve: 503 + Retry-After, fast
    r = httpx.get(url + "/ready", timeout=10)
    assert r.status_code == 503
    assert "retry-after" in r.headers
    g = stream_chat(url, app, 4)
    assert g.status == 503, g
    assert "retry-after" in g.headers
    assert "x-request-id" in g.headers
    logged = [p for p in ray_session_logs() if "replica.startup_timeout_s" in p.read_text(errors="replace")]
    assert logged, "the start-up timeout is not in any log"
    cluster["recorder"].add("slow start > startup_timeout_s", "EngineStartError in log + DEPLOY_FAILED status; "
                            "gateway 503 + Retry-After", None, deploy_failed_after_s=round(t_failed, 2))  # fmt: skip


def test_rank_loss_on_a_two_node_instance_replaces_the_instance(deploy, cluster):
    app = "rel-rankloss"
    url = deploy(stack_settings(app, parallelism={"tp": 8, "nodes": 2}))
    old, ranks = engine_info(app)
    assert ranks[0]["node_id"] != ranks[1]["node_id"]
    started = threading.Event()
    results: list[StreamResult] = []

    def long_stream() -> None:
        results.append(stream_chat(url, app, 400, on_chunk=lambda r: started.set()))

    t = threading.Thread(target=long_stream, daemon=True)
    t.start()
    assert started.wait(30)
    psutil.Process(ranks[1]["pid"]).kill()
    t_fault = time.monotonic()
    rec = first_success_after(url, app, t_fault, timeout_s=120)
    t.join(timeout=60)
    new = poll(replaced(app, old["replica_id"]), 60, what="a new two-node instance")
    new_ranks = replica_handle(app).ranks.remote().result(timeout_s=30)
    assert new_ranks[0]["node_id"] != new_ranks[1]["node_id"]
    assert new["url"] != old["url"]
    (r,) = results
    assert not r.silent, r  # the in-flight stream either finished or failed visibly
    cluster["recorder"].add("rank 1 lost (two-node TP=8)", f"in-flight stream: {r.kind()}; whole instance replaced",
                            rec["recovery_s"], meanwhile=rec["meanwhile"])  # fmt: skip


def test_gateway_replica_killed_while_streams_run(deploy, cluster):
    import ray

    app = "rel-gwkill"
    url = deploy(stack_settings(app, gateway={"replicas": 2}, autoscaling={"min_replicas": 2, "max_replicas": 2}))
    poll(lambda: len(gateway_actors(app)) == 2, 60, what="two gateway replicas")
    results: list[StreamResult] = []
    going = threading.Semaphore(0)
    threads = [
        threading.Thread(target=lambda: results.append(stream_chat(url, app, 300, on_chunk=lambda r: going.release())),
                         daemon=True)
        for _ in range(8)
    ]  # fmt: skip
    for th in threads:
        th.start()
    poll(lambda: going._value >= 8 * 3, 30, interval_s=0.05, what="8 streams running")  # type: ignore[attr-defined]
    victim = gateway_actors(app)[0]
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    t_fault = time.monotonic()
    rec = first_success_after(url, app, t_fault, timeout_s=60)
    for th in threads:
        th.join(timeout=60)
    kinds = [r.kind() for r in results]
    assert len(results) == 8
    assert "silent_truncation" not in kinds, [(r.kind(), r.chunks, r.exc) for r in results]
    assert kinds.count("explicit_error") >= 1, kinds  # the streams on the killed replica were cut …
    assert kinds.count("complete") >= 1, [(r.status, r.chunks, r.exc, r.error, r.body[:200]) for r in results]
    poll(lambda: len(gateway_actors(app)) == 2 and victim not in gateway_actors(app), 90,
         what="the gateway replica replaced")  # fmt: skip
    cluster["recorder"].add("gateway replica killed mid-stream",
                            f"{kinds.count('explicit_error')}/8 streams cut visibly, rest complete; replica replaced",
                            rec["recovery_s"], meanwhile=rec["meanwhile"])  # fmt: skip


def gateway_actors(app: str) -> list[str]:
    """Names of the gateway's replica actors (Serve names them ``SERVE_REPLICA::<app>#gateway#<id>``)."""
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in names if a["namespace"] == "serve" and f"::{app}#gateway#" in a["name"])


def test_overload_is_refused_fast_with_retry_after(deploy, cluster):
    app = "rel-overload"
    url = deploy(stack_settings(app, gateway={"limits": {"max_in_flight": 2, "requests_per_min": 5}}))
    # max_in_flight: two long streams (OTHER_KEY) hold both slots; the third request is refused at once
    started = threading.Semaphore(0)
    holders = [threading.Thread(target=stream_chat, args=(url, app, 150),
                                kwargs={"key": OTHER_KEY, "on_chunk": lambda r: started.release()}, daemon=True)
               for _ in range(2)]  # fmt: skip
    for th in holders:
        th.start()
    poll(lambda: started._value >= 2, 30, interval_s=0.05, what="two streams running")  # type: ignore[attr-defined]
    t0 = time.monotonic()
    busy = stream_chat(url, app, 4, key=OTHER_KEY)
    t_503 = time.monotonic() - t0
    assert busy.status == 503, busy
    assert '"overloaded"' in busy.body
    assert int(busy.headers["retry-after"]) >= 1
    for th in holders:
        th.join(timeout=60)
    # requests_per_min: KEY gets 5, the 6th is a 429 with Retry-After; OTHER_KEY has its own bucket
    assert all(stream_chat(url, app, 2).complete for _ in range(5))
    t0 = time.monotonic()
    limited = stream_chat(url, app, 2)
    t_429 = time.monotonic() - t0
    assert limited.status == 429, limited
    assert '"rate_limit_exceeded"' in limited.body
    assert int(limited.headers["retry-after"]) >= 1
    assert t_503 < 5  # refusals, not timeouts (generous on a loaded 2-core box)
    assert t_429 < 5
    cluster["recorder"].add("overload: max_in_flight", "503 overloaded + Retry-After", None,
                            response_s=round(t_503, 3))  # fmt: skip
    cluster["recorder"].add("overload: requests_per_min", "429 rate_limit_exceeded + Retry-After", None,
                            response_s=round(t_429, 3))  # fmt: skip
    # a wrong key is a 401 on every model route, with a request id
    for method, path in (("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/v1/models")):
        r = httpx.request(method, url + path, headers={"authorization": f"Bearer {WRONG_KEY}"}, json={}, timeout=10)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


def test_no_key_appears_in_any_log_of_the_run(cluster):
    # Every app above used KEY / OTHER_KEY (and WRONG_KEY was sent); the engines got ENGINE_KEY.
    # Gateway, replica, rank and engine output all land in the Ray session's log files.
    files = list(ray_session_logs())
    texts = {p: p.read_text(errors="replace") for p in files}
    assert any("serving.gateway.access" in t for t in texts.values()), "no gateway access log found"
    assert any("qwen_serve.engine" in t for t in texts.values()), "no engine log found"
    leaks = [(p.name, s) for p, t in texts.items() for s in SECRETS if s in t]
    assert leaks == []
    engine_leaks = [p.name for p, t in texts.items() if ENGINE_KEY in t]
    assert engine_leaks == [], "the engine key reached a log"
