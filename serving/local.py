"""`serving serve`: the whole stack on this machine — a local Ray cluster, the gateway and the
engine replicas — until Ctrl-C, then everything stops (no engine process is left behind). The stack
runs in a process of its own session, started and signalled by the `serving serve` process
(:func:`run_in_own_session`)."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import psutil

from serving.config import Settings
from serving.config.settings import EngineKind

POLL_S = 0.5
# Set in the environment of the stack process that `serving serve` starts in a session of its own
# (:func:`run_in_own_session`): the pid of the `serving serve` process that relays signals to it.
STACK_PARENT_ENV = "SERVING_SERVE_PARENT_PID"  # outside QWEN_SERVE_*, the settings namespace
# What the relay hands the stack for each signal it gets (a hang-up stops it as a SIGTERM does).
_RELAYED = {signal.SIGINT: signal.SIGINT, signal.SIGTERM: signal.SIGTERM, signal.SIGHUP: signal.SIGTERM}


class StackStartError(RuntimeError):
    """The local stack could not come up; the message says what failed, where, and what to do."""


EXAMPLE = """
  qwen-serve is up: {url}   (model "{model}", engine {engine}; Ctrl-C stops everything)

  curl {url}/v1/chat/completions -H 'content-type: application/json'{auth_curl} \\
       -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Say hello"}}], "stream": true}}'

  python -c 'from openai import OpenAI; c = OpenAI(base_url="{url}/v1", api_key="{key}")
  r = c.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "Say hello"}}])
  print(r.choices[0].message.content)'
"""


def _free_port_block(size: int) -> int:
    """The first of ``size`` consecutive ports that are free right now (best effort)."""
    import socket

    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + size > 65535:
            continue
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise OSError(f"no block of {size} free ports")


def local_node_env(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a local Ray cluster needs: the ingress path, plus — on one shared machine —
    private ports for what Ray's HAProxy and direct ingress otherwise bind at fixed numbers
    (stats 8404, metrics 9101, replica HTTP 30000+, which is also SGLang's default). Variables
    already set in ``environ`` win."""
    from serving.gateway.ingress import ingress_env

    env = ingress_env(settings)
    if env.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1":
        base = _free_port_block(66)
        env |= {
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(base),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(base + 31),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(base + 32),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(base + 63),
            # Ray holds ingress replicas ≥ 30 s on shutdown for load balancers to converge; the
            # local stack has none and drains its own streams first (``drain``), so stop promptly.
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        }
        if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
            env |= {"RAY_SERVE_HAPROXY_STATS_PORT": str(base + 64), "RAY_SERVE_HAPROXY_METRICS_PORT": str(base + 65)}
    return {k: v for k, v in env.items() if k not in environ}


def gateway_cpus(settings: Settings) -> float:
    from serving.gateway.deployment import gateway_deployment_options

    opts = gateway_deployment_options(settings)
    return float(opts["num_replicas"] * opts["ray_actor_options"]["num_cpus"])


def local_cluster_resources(settings: Settings) -> dict[str, Any]:
    """``ray.init`` resources for a private local cluster. The simulator pretends to be GPUs, so the
    cluster declares the GPUs (and CPUs) its replicas reserve; real engines get what Ray detects."""
    import os

    from serving.replica.placement import placement

    if settings.engine.kind != EngineKind.SIMULATOR:
        return {}
    pl = placement(settings)
    replicas = max(settings.autoscaling.max_replicas, 1)
    gpus = pl.gpus_per_rank * replicas  # one node: a multi-node layout is refused by unschedulable()
    cpus = pl.cpus_per_rank * replicas + gateway_cpus(settings)
    out: dict[str, Any] = {"num_cpus": max(os.cpu_count() or 1, math.ceil(cpus))}
    if gpus:
        out["num_gpus"] = gpus
    return out


def check_fits(settings: Settings, *, local: bool) -> None:
    """Refuse, before deploying, what this cluster can never schedule (a remote cluster may still
    autoscale, so there it is a warning)."""
    import ray

    from serving.replica.placement import unschedulable

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    problems = unschedulable(settings, nodes, extra_cpus=gateway_cpus(settings))
    if not problems:
        return
    text = "\n".join(f"  - {p}" for p in problems)
    if local:
        raise StackStartError(f"the engine replicas can never be scheduled on this machine:\n{text}")
    print(f"warning: the cluster cannot place an engine replica yet (it may autoscale):\n{text}", file=sys.stderr)


def check_program(settings: Settings) -> None:
    """Refuse, before starting Ray, an engine program this machine does not have (the message names
    engine.binary and how to get the program)."""
    from serving.engines import get_engine, plan_instance

    dist = "127.0.0.1:1" if settings.parallelism.nodes > 1 else None  # the address does not matter here
    missing = get_engine(settings.engine.kind).missing_program(plan_instance(settings, dist_init_addr=dist))
    if missing:
        raise StackStartError(missing)


def cut_failure(message: str) -> str | None:
    """The engine-failure summary a replica put into its Serve status message, if any."""
    from serving.replica.instance import FAILURE_MARK

    parts = message.split(FAILURE_MARK)
    return parts[1].strip() if len(parts) >= 3 else None


def wait_ready(url: str, settings: Settings, *, local: bool) -> None:
    """Until the gateway answers ``/ready``; fail fast, with the reason, when a deployment cannot
    start: an engine that died or never became healthy, or replicas that cannot be scheduled."""
    from ray import serve

    timeout_s = settings.replica.startup_timeout_s + 60  # the replica's own timeout reports first
    deadline = time.monotonic() + timeout_s
    last: Any = None
    warned: set[str] = set()
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/ready", timeout=2.0)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = exc
        app = serve.status().applications.get(settings.ray.app_name)
        if app is not None:
            for name, dep in app.deployments.items():
                message = dep.message or ""
                failure = cut_failure(message)
                if failure:
                    raise StackStartError(f"{failure}\n(Ray Serve deployment {name} of {settings.ray.app_name})")
                if "to be scheduled" in message and message not in warned:
                    if local:
                        raise StackStartError(f"deployment {name} cannot be scheduled: {message}")
                    warned.add(message)
                    print(f"warning: deployment {name}: {message}", file=sys.stderr, flush=True)
            if str(app.status) in ("DEPLOY_FAILED", "ApplicationStatus.DEPLOY_FAILED"):
                details = "; ".join(f"{n}: {d.message}" for n, d in app.deployments.items() if d.message)
                raise StackStartError(f"application {settings.ray.app_name} failed to deploy: {app.message} {details}")
        time.sleep(POLL_S)
    raise StackStartError(f"gateway at {url} not ready after {timeout_s:.0f} s (last answer: {last})")


def run_in_own_session(argv: Sequence[str]) -> int:
    """Run ``python -m serving.cli.main *argv`` (``serve`` and its options) as the stack process, in
    a session of its own, and hand it each stop signal this process gets; its exit status.

    Ray's node processes (GCS, raylet, dashboard, agents) are children of the process that starts
    the local cluster and share its process group. A signal to this process's whole group (``timeout``,
    ``kill -- -PGID``, a job supervisor) would reach them directly, and the cluster would go down
    under the streams still in flight. Started in a session of its own, the stack gets exactly one
    signal, from here, and stops as it does for a Ctrl-C or a SIGTERM of its own: it drains, then
    stops everything. It gets a SIGTERM if this process dies (``die_with``)."""
    import os
    import subprocess

    env = {**os.environ, STACK_PARENT_ENV: str(os.getpid())}
    child = subprocess.Popen([sys.executable, "-m", "serving.cli.main", *argv], env=env, start_new_session=True)

    def relay(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(_RELAYED[signal.Signals(signum)])

    for sig in _RELAYED:
        signal.signal(sig, relay)
    code = child.wait()
    return 128 - code if code < 0 else code  # killed by a signal: the shell's convention


def in_stack_process() -> bool:
    """Whether this is the stack process :func:`run_in_own_session` started. If so, it is armed to
    get a SIGTERM (and stop, draining) when that `serving serve` process dies."""
    import os

    from serving.replica.launch import die_with

    parent = os.environ.get(STACK_PARENT_ENV)
    if not parent:
        return False
    die_with(int(parent), signal.SIGTERM)
    return True


def serve_forever(settings: Settings, *, block: bool = True) -> str:
    """Start Ray (local unless ``ray.address``), deploy the app, wait until it answers; return the URL.
    Raises :class:`StackStartError`, with everything stopped, when the stack cannot come up."""
    import os

    os.environ.update(local_node_env(settings, os.environ))  # before Ray and Serve start: read at import
    import ray
    from ray import serve

    from serving.app import build_app

    local = not settings.ray.address
    if local:
        check_program(settings)
    if not ray.is_initialized():
        # "local": always a fresh cluster of our own, never an unrelated one found on this machine
        ray.init(
            address=settings.ray.address or "local",
            include_dashboard=False,
            log_to_driver=False,
            **(local_cluster_resources(settings) if local else {}),
        )
    node = psutil.Process().children() if local else []  # the local node's own processes (GCS, raylet…)
    # Ray's driver installs a SIGTERM handler that exits at once; ours drains first. Set them right
    # after ray.init, so a SIGTERM during the deploy is honoured once the stack is up.
    stop = {"now": False}

    def _stop(*_: Any) -> None:
        stop["now"] = True

    if block:  # Ctrl-C and SIGTERM alike (SIGINT may arrive ignored, e.g. in a background job)
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    g = settings.gateway
    url = f"http://{'127.0.0.1' if g.host in ('0.0.0.0', '::') else g.host}:{g.port}"
    try:
        check_fits(settings, local=local)
        serve.start(http_options={"host": g.host, "port": g.port})
        # not blocking: wait_ready watches the deployments and reports a failing engine at once
        serve._run(build_app(settings), name=settings.ray.app_name, route_prefix="/", _blocking=False)
        wait_ready(url, settings, local=local)
    except BaseException:
        shutdown(node if block else ())  # in-process callers (block=False) may have children of their own
        raise
    if not block:
        return url
    key = "<your key>" if g.api_keys.required else "none"
    auth = " -H 'authorization: Bearer <your key>'" if g.api_keys.required else ""
    print(EXAMPLE.format(url=url, model=settings.model.served_name, engine=settings.engine.kind.value,
                         key=key, auth_curl=auth), flush=True)  # fmt: skip
    try:
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping: draining requests, stopping engines…", file=sys.stderr, flush=True)
        left = drain(url, settings.replica.drain_grace_s)
        if left:
            print(f"drain grace over with {left:g} request(s) in flight", file=sys.stderr, flush=True)
        shutdown(node)
    return url


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def drain(url: str, grace_s: float, *, gone_after_s: float = 1.0) -> float:
    """Wait until the gateway serves no request (its in-flight gauge), at most ``grace_s``;
    returns what was still in flight. Serve's own shutdown would cut running streams.

    A slow answer is asked again: on a busy machine the scrape can outlast its timeout while
    streams still run. Only a gateway that refuses connections or answers with an error for
    ``gone_after_s`` is taken as gone, with nothing left to drain."""
    from serving.engines.base import prom_value

    deadline = time.monotonic() + grace_s
    left = 0.0
    failing_since: float | None = None
    while (now := time.monotonic()) < deadline:
        try:
            r = httpx.get(f"{url}/metrics", timeout=2.0)
        except httpx.TimeoutException:
            continue  # no verdict: ask again
        except httpx.HTTPError:
            r = None
        if r is not None and r.status_code == 200:
            failing_since = None
            left = prom_value(r.text, "qwen_serve_requests_in_flight")
            if left <= 0:
                return 0.0
        else:
            failing_since = now if failing_since is None else failing_since
            if now - failing_since >= gone_after_s:
                return 0.0  # nothing answers: nothing to drain
        time.sleep(0.2)
    return left


def shutdown(node: Sequence[psutil.Process] = ()) -> None:
    """Serve's graceful shutdown (replicas stop their engines), then Ray's.

    ``node``: the processes of the local Ray node this process started (none for a cluster found
    elsewhere). When one of them has already exited, Serve is not asked to stop gracefully (it would
    wait 30 s for its controller). ``serving serve`` keeps group signals away from them
    (:func:`run_in_own_session`), so this takes a signal to the stack process's own group, or a
    crash. Every process the local cluster started that still runs after Ray's shutdown is killed:
    Serve's HAProxy, for one, outlives an actor killed rather than stopped, and keeps holding the
    gateway's port."""
    import ray
    from ray import serve

    started = psutil.Process().children(recursive=True) if node else []
    gone = [_name(p) for p in node if not _running(p)]
    if gone:
        print(f"Ray's node processes {', '.join(gone)} had already exited (signalled or crashed): skipping "
              "Serve's graceful shutdown; to stop the stack, signal the `serving serve` process (Ctrl-C, or "
              "`kill <pid>`), not its stack process's group", file=sys.stderr, flush=True)  # fmt: skip
    try:
        if not gone:
            serve.shutdown()
    finally:
        ray.shutdown()
        left = [p for p in started if _running(p)]
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        if left:
            names = ", ".join(sorted({_name(p) for p in left}))
            print(f"killed {len(left)} process(es) the local cluster left running: {names}", file=sys.stderr,
                  flush=True)  # fmt: skip


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return str(p.pid)
