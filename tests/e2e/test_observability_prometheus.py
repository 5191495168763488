"""A real Prometheus scrapes the running stack (Ray + HAProxy ingress + gateway + a simulator
engine replica exporting SGLang's metric names) the way the chart's ServiceMonitor tells the
Prometheus Operator to, evaluates the chart's recording rules and alerts, and answers every
dashboard query with data after load."""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from serving.engines import get_engine
from serving.engines.base import prom_value
from tests.conftest import free_port
from tests.e2e.stack import running_stack, stack_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "observability"))
from obs_support import (  # found on the path set above
    NAMESPACE,
    Prometheus,
    dashboard_targets,
    rendered_chart,
    rendered_rules,
    service_monitor_targets,
    write_rules,
)

pytestmark = pytest.mark.e2e
MODEL = "qwen3.6-27b"
SCRAPE_S = 1  # the chart scrapes every 15 s; the test cannot wait minutes for rates
# against max_running_requests=MAX_RUNNING, more clients than slots: requests queue. Each request lasts
# about a second (MAX_TOKENS at the simulator's pace), so the engine stays full for several
# scrapes and a 1 s sample cannot fall between short requests on a slow machine.
CLIENTS, REQUESTS, MAX_TOKENS, MAX_RUNNING = 12, 16, 128, 4
TABLE_ENV = "QWEN_SERVE_DASHBOARD_TABLE"  # write the panel → query → value table here (README)


def _scrape_config(docs: list[dict[str, Any]], addresses: dict[tuple[str, str], list[tuple[str, str]]],
                   rules: Path) -> dict[str, Any]:  # fmt: skip
    """One job per ServiceMonitor endpoint, labelled as the Prometheus Operator labels its targets
    (job = Service, namespace, service, endpoint = port name, pod). ``addresses`` maps (pod role,
    container port name) to this machine's [(pod name, host:port)]."""
    (sm,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    jobs: dict[str, dict[str, Any]] = {}
    for t in service_monitor_targets(docs):
        name = f"serviceMonitor/{NAMESPACE}/{sm['metadata']['name']}/{t['endpoint']}"
        job = jobs.setdefault(name, {"job_name": name, "metrics_path": t["path"], "honor_labels": False,
                                     "scrape_interval": f"{SCRAPE_S}s", "static_configs": []})  # fmt: skip
        for pod, addr in addresses.get((t["role"], t["target_port"]), []):
            labels = {"job": t["service"], "namespace": NAMESPACE, "service": t["service"],
                      "endpoint": t["endpoint"], "pod": pod}  # fmt: skip
            job["static_configs"].append({"targets": [addr], "labels": labels})
    return {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": [str(rules)],
        "scrape_configs": [j for j in jobs.values() if j["static_configs"]],
    }


def _hostport(url: str) -> str:
    u = urlparse(url)
    return f"{u.hostname}:{u.port}"


def _drive_load(url: str, engine_url: str, running: list[float]) -> dict[str, int]:
    """Streams (with a shared prefix, for the prefix cache), non-streaming requests, one request
    over the token limit (an admission rejection) and one for an unknown model. While more
    requests are in flight than the engine runs, ``running`` gets the engine's running count
    (its own /metrics, every 50 ms)."""
    prefix = "You are a careful assistant. " * 20
    statuses: dict[str, int] = {}
    in_flight = [0]
    lock, done = threading.Lock(), threading.Event()
    running_metric = get_engine("simulator").running_metric  # SGLang's name: the simulator speaks its API

    def one(i: int) -> int:
        msgs = [{"role": "system", "content": prefix}, {"role": "user", "content": f"question {i}"}]
        body = {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": i % 4 != 0, "messages": msgs}
        with lock:
            in_flight[0] += 1
        try:
            with httpx.Client(timeout=120) as c:
                if body["stream"]:
                    with c.stream("POST", url + "/v1/chat/completions", json=body) as r:
                        for _ in r.iter_lines():
                            pass
                        return r.status_code
                return c.post(url + "/v1/chat/completions", json=body).status_code
        finally:
            with lock:
                in_flight[0] -= 1

    def sample() -> None:
        with httpx.Client(timeout=10) as c:
            while not done.wait(0.05):
                if in_flight[0] > MAX_RUNNING:
                    running.append(prom_value(c.get(engine_url + "/metrics").text, running_metric))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with cf.ThreadPoolExecutor(CLIENTS) as pool:
        for code in pool.map(one, range(REQUESTS)):
            statuses[str(code)] = statuses.get(str(code), 0) + 1
    done.set()
    sampler.join()
    huge = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "x" * 40_000}]}
    statuses["huge"] = httpx.post(url + "/v1/chat/completions", json=huge, timeout=30).status_code
    unknown = {**huge, "model": "nope"}
    statuses["unknown"] = httpx.post(url + "/v1/chat/completions", json=unknown, timeout=30).status_code
    return statuses


def _value(result: list[dict[str, Any]]) -> list[float]:
    return [float(r["value"][1]) for r in result]


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """The stack under load, scraped by Prometheus: (prometheus, statuses, engine replica count,
    the engine's running counts sampled while requests queued)."""
    from ray import get

    from serving.registry import registry_actor

    work = tmp_path_factory.mktemp("prometheus")
    docs = rendered_chart()
    rules = work / "rules.yaml"
    write_rules(rules, docs)
    s = stack_settings(
        model={"preset": MODEL},
        engine={"kind": "simulator"},  # the timing model of an H200: MTP acceptance, prefix cache
        parallelism={"tp": 1, "gpus_per_node": 1, "gpu_type": "h200", "cpus_per_rank": 0.5},
        memory={"kv_tokens_per_request": 16384, "max_running_requests": MAX_RUNNING},
        gateway={"limits": {"tokens_per_min": 8000}},
    )
    ray_metrics = free_port()
    with running_stack(s, num_gpus=1, metrics_export_port=ray_metrics) as url:
        engines: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60  # a replica withdraws itself while a health check fails
        while not engines and time.monotonic() < deadline:
            engines = [e for e in get(registry_actor().snapshot.remote()) if not e["draining"]]
            time.sleep(0.5)
        assert engines, "no engine replica registered"
        addresses = {
            ("head", "serve"): [("qwen-head", _hostport(url))],
            ("head", "metrics"): [("qwen-head", f"127.0.0.1:{ray_metrics}")],
            ("worker", "engine"): [
                (re.sub(r"[^a-z0-9-]", "-", e["replica_id"].lower()), _hostport(e["url"])) for e in engines
            ],
        }
        config = _scrape_config(docs, addresses, rules)
        prom = Prometheus(work, config, free_port())
        try:
            expected = sum(len(c["targets"]) for j in config["scrape_configs"] for c in j["static_configs"])
            up = _wait_for(prom, f"count(up == 1) == {expected}", 30)
            assert up, prom.api("targets")  # every target scraped once before the load starts
            running: list[float] = []
            statuses = _drive_load(url, engines[0]["url"], running)
            yield prom, statuses, len(engines), running
        finally:
            prom.stop()
            assert prom.proc.poll() is not None


def _wait_for(prom: Prometheus, expr: str, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = prom.query(expr)
        if result and all(math.isfinite(v) for v in _value(result)):
            return result
        time.sleep(SCRAPE_S)
    return result


def test_prometheus_scrapes_every_servicemonitor_endpoint_of_the_stack(observed):
    prom, _, n_engines, _ = observed
    targets = _wait_for(prom, f'up{{namespace="{NAMESPACE}"}} == 1', 30)
    endpoints = sorted(t["metric"]["endpoint"] for t in targets)
    assert endpoints == sorted(["gateway", "ray-metrics", *["engine"] * n_engines]), prom.api("targets")


def test_load_had_successes_a_rejection_and_a_client_error(observed):
    _, statuses, _, _ = observed
    assert statuses.get("200") == REQUESTS, statuses
    assert statuses["huge"] == 429
    assert statuses["unknown"] == 404


def test_every_rule_of_the_prometheusrule_is_valid_and_evaluates_cleanly(observed):
    prom, _, _, _ = observed
    groups = _wait_rules_evaluated(prom)
    rendered = {r.get("record") or r["alert"] for g in rendered_rules()["groups"] for r in g["rules"]}
    loaded = {r["name"] for g in groups for r in g["rules"]}
    assert loaded == rendered
    for g in groups:
        for r in g["rules"]:
            assert r["health"] == "ok", (r["name"], r.get("lastError"))
            prom.query(r["query"])  # the query language accepts it through the HTTP API too


def _wait_rules_evaluated(prom: Prometheus) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        groups = prom.api("rules")["groups"]
        if all(r["health"] != "unknown" for g in groups for r in g["rules"]) or time.monotonic() > deadline:
            return list(groups)
        time.sleep(SCRAPE_S)


@pytest.mark.timeout(600)
def test_every_dashboard_panel_returns_data_for_the_running_stack(observed):
    prom, _, _, _ = observed
    targets = dashboard_targets()
    values: dict[tuple[str, str], list[float]] = {}
    deadline = time.monotonic() + 120  # rates over 1m/5m windows need a few scrapes after the load
    while True:
        for title, ref, expr in targets:
            if (title, ref) not in values:
                got = _value(prom.query(expr))
                if got and all(math.isfinite(v) for v in got):
                    values[title, ref] = got
        if len(values) == len(targets) or time.monotonic() > deadline:
            break
        time.sleep(SCRAPE_S)
    table = os.environ.get(TABLE_ENV)
    if table:
        lines = ["| panel | query | value in the test run |", "|---|---|---|"]
        for title, ref, expr in targets:
            got = values.get((title, ref), [])
            shown = ", ".join(f"{v:.4g}" for v in got[:4]) + (" …" if len(got) > 4 else "")
            cell = expr.replace("|", "\\|")
            lines.append(f"| {title} ({ref}) | `{cell}` | {shown or '—'} |")
        Path(table).write_text("\n".join(lines) + "\n")
    empty = [(t, r, e, prom.query(e)) for t, r, e in targets if (t, r) not in values]
    assert not empty, "\n".join(f"{t} ({r}): {e} → {res}" for t, r, e, res in empty)


def test_engine_neutral_rules_carry_the_engines_values(observed):
    prom, _, _, _ = observed
    assert _value(_wait_for(prom, "sum(qwen_serve:engine_generation_tokens:rate1m)", 30))[0] > 0
    assert _value(_wait_for(prom, "max(qwen_serve:engine_spec_accept_length)", 30))[0] > 1  # MTP on
    # more concurrent clients than max_running_requests: the rules saw requests run and queue
    assert _value(_wait_for(prom, "max(max_over_time(qwen_serve:engine_running_requests[5m]))", 30))[0] == MAX_RUNNING
    # ... and queue: in the gateway's admission queue, which holds requests once the engine's running
    # slots are full (so the engine's own queue may stay empty; its rule must still evaluate)
    assert _value(_wait_for(prom, "max(max_over_time(qwen_serve:engine_queued_requests[5m]))", 30))[0] >= 0
    assert _value(_wait_for(prom, "max(max_over_time(qwen_serve_requests_queued[5m]))", 30))[0] > 0
    assert _value(_wait_for(prom, "max(max_over_time(qwen_serve:engine_kv_usage_ratio[5m]))", 30))[0] > 0
    assert _value(_wait_for(prom, "max(qwen_serve:engine_prefix_cache_hit_ratio)", 30))[0] > 0  # shared prefix
    rejected = _wait_for(prom, 'qwen_serve:gateway_admission_rejections:rate5m{reason="rate_limit_exceeded"} > 0', 30)
    assert rejected
    assert _value(_wait_for(prom, 'sum(qwen_serve:gateway_requests:rate1m{status="200"})', 30))[0] > 0


def test_the_engine_stays_full_while_requests_queue_at_the_gateway(observed):
    """The gateway holds requests past the engine's running slots, and lets the next one through
    as soon as one of its own ends, not when the replica's next load sample (seconds later) says
    so: with more requests in flight than slots, the engine runs a full batch nearly always (the
    gaps are the moments between a request's end and its successor's arrival)."""
    _, _, _, running = observed
    assert len(running) >= 20, running  # the load kept requests queued for over a second
    full = sum(r == MAX_RUNNING for r in running) / len(running)
    assert full >= 0.8, (full, Counter(running))
