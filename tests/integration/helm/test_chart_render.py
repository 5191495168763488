"""The chart, rendered and linted by the real Helm Go SDK, every object validated offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_support import (
    CHART,
    CRD_KINDS,
    EVERYTHING_ON,
    K8S_VERSION,
    PROFILES,
    deep_merge,
    merged_values,
    profile_values,
    render,
    validate_object,
)

from serving.app import deployment_options
from serving.config import load_settings
from serving.deploy import serve_config
from serving.deploy.serve_config import GATEWAY_RESOURCE
from serving.engines import plan_instance

pytestmark = pytest.mark.integration

DIST_ADDR = "10.0.0.1:20000"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {p: render(profile_values(p)) for p in PROFILES}


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _serve_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(_one(docs, "RayService")["spec"]["serveConfigV2"])


def test_every_profile_is_present() -> None:
    names = set(PROFILES)
    for wanted in ("values-h100-tp8.yaml", "values-h200-tp1.yaml", "values-35b-a3b.yaml", "values-cpu-dev.yaml"):
        assert wanted in names
    assert any("2node" in n for n in names)


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_lints_clean_in_strict_mode(profile: str) -> None:
    import helm_python as helm

    report = helm.lint(CHART, profile_values(profile), strict=True, kube_version=f"v{K8S_VERSION}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, json.dumps(problems, indent=2)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_object_validates(profile: str, rendered: dict[str, list[dict[str, Any]]], reference_dir: Path) -> None:
    docs = rendered[profile]
    assert {"RayService", "ServiceAccount", "Secret", "NetworkPolicy"} <= {d["kind"] for d in docs}
    for doc in docs:
        validate_object(doc, reference_dir)


def test_optional_objects_validate_too(reference_dir: Path) -> None:
    docs = render(EVERYTHING_ON)
    kinds = {d["kind"] for d in docs}
    assert {"Ingress", "ServiceMonitor", "PrometheusRule", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    assert {"PersistentVolumeClaim", "Pod"} <= kinds  # the cache claim and the helm test pod
    for doc in docs:
        validate_object(doc, reference_dir)
    rule = _one(docs, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {
        "QwenServeEngineDown",
        "QwenServeTTFTBudgetBurn",
        "QwenServeQueueDepthHigh",
        "QwenServeErrorRateHigh",
        "QwenServeTTFTp95High",
        "QwenServeReplicaRestarts",
    }


def test_kubernetes_validate_refuses_a_broken_object(reference_dir: Path) -> None:
    """The validator in use does catch mistakes (strict: unknown fields)."""
    import kubernetes_validate

    pdb = next(d for d in render({}) if d["kind"] == "PodDisruptionBudget")
    pdb["spec"]["maxUnavailabel"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(pdb, reference_dir)
    ray = _one(render({}), "RayService")
    ray["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplica"] = 1
    with pytest.raises(AssertionError, match="minReplica"):
        validate_object(ray, reference_dir)


@pytest.mark.parametrize("profile", PROFILES)
def test_serve_config_passes_rays_own_schema(profile: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    from ray.serve.schema import ServeDeploySchema

    cfg = _serve_config(rendered[profile])
    parsed = ServeDeploySchema.parse_obj(cfg)
    app = parsed.applications[0]
    assert app.import_path == "serving.app:app_builder"
    # The names the builders in code give their deployments, or Serve refuses the config.
    # The real builder accepts these args (what Serve calls on the head when the config lands) and
    # derives both deployments, the gateway pinned to the head pod's resource.
    from ray.serve._private.build_app import build_app

    from serving.app import app_builder

    built = {d.name: d for d in build_app(app_builder(cfg["applications"][0]["args"]), name=app.name).deployments}
    assert set(built) == {"gateway", "EngineReplica"}
    assert built["gateway"].ray_actor_options["resources"] == {GATEWAY_RESOURCE: 1}


@pytest.mark.parametrize("profile", PROFILES)
def test_serve_config_equals_the_python_derivation(profile: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """One source of truth: the template and serving.deploy.serve_config agree for the same values."""
    settings = merged_values(profile_values(profile))["settings"]
    assert _serve_config(rendered[profile]) == serve_config(settings)


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_settings_pass_settings_validation(profile: str) -> None:
    settings = merged_values(profile_values(profile))["settings"]
    s = load_settings(overrides=settings, env={})
    assert s.engine.port > 0


@pytest.mark.parametrize("profile", PROFILES)
def test_pods_run_the_launch_plan_the_cli_prints(
    profile: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """What a worker's replica computes (serveConfigV2 args + the pod's env) equals `serving launch-plan`."""
    docs = rendered[profile]
    ray = _one(docs, "RayService")
    cfg = _serve_config(docs)
    settings = cfg["applications"][0]["args"]["settings"]
    group = ray["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    container = group["template"]["spec"]["containers"][0]
    pod_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    s = load_settings(overrides=settings, env=pod_env)
    multi = s.parallelism.nodes > 1
    in_pod = json.loads(plan_instance(s, dist_init_addr=DIST_ADDR if multi else None).to_json())

    # The CLI, as a user runs it, on the values' settings block written as a settings file.
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(profile_values(profile)))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    cli = [sys.executable, "-m", "serving.cli.main"]
    settings_yaml = subprocess.run(
        [*cli, "deploy", "settings", *([] if profile == "values.yaml" else ["-f", str(values_file)])],
        capture_output=True, text=True, check=True, env=env, timeout=120,
    ).stdout  # fmt: skip
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(settings_yaml)
    args = ["launch-plan", "-c", str(settings_file), "--json", *(["--dist-init-addr", DIST_ADDR] if multi else [])]
    printed = json.loads(
        subprocess.run([*cli, *args], capture_output=True, text=True, check=True, env=env, timeout=120).stdout
    )
    assert in_pod == printed

    # The pods match the plan: one rank per pod, its GPUs requested, the engine port exposed.
    assert group["numOfHosts"] == len(printed["ranks"])
    gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu", 0)
    assert gpus == printed["gpus_per_rank"]
    assert {"name": "engine", "containerPort": printed["port"]} in container["ports"]
    bundles = deployment_options(s)["EngineReplica"]["placement_group_bundles"]
    assert len(bundles) == len(printed["ranks"])
    assert all(b.get("GPU", 0) == printed["gpus_per_rank"] for b in bundles)


@pytest.mark.parametrize(
    "settings",
    [
        {"parallelism": {"tp": 4, "dp": 2}},
        {"parallelism": {"tp": 2, "gpu_type": "h200"}, "engine": {"kind": "vllm"}},
        {"parallelism": {"tp": 8, "pp": 4, "nodes": 4}, "speculative": {"enabled": False}},
        {"parallelism": {"tp": 1, "gpu_type": "h100"}, "engine": {"kind": "llamacpp"}, "model": {"path": "/m.gguf"}},
        {
            "parallelism": {"tp": 1, "gpu_type": "cpu"},
            "engine": {"kind": "simulator"},
            "model": {"preset": "qwen3-tiny"},
        },
    ],
    ids=["tp4-dp2", "vllm-tp2", "4-nodes", "llamacpp-on-a-gpu-type", "simulator-on-cpu"],
)
def test_worker_pods_get_the_gpus_and_spread_python_places(settings: dict[str, Any]) -> None:
    """Layouts no profile uses: each pod asks for the GPUs of one placement bundle, and ranks of a
    multi-node instance must land on distinct nodes exactly when placement spreads them."""
    from serving.replica.placement import placement

    docs = render({"settings": settings, "modelCache": {"enabled": False}})
    group = _one(docs, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    pod = group["template"]["spec"]
    merged = merged_values({"settings": settings})["settings"]
    pl = placement(load_settings(overrides=merged, env={}))
    assert pod["containers"][0]["resources"].get("limits", {}).get("nvidia.com/gpu", 0) == pl.gpus_per_rank
    assert group["numOfHosts"] == pl.nodes
    spread = pod["topologySpreadConstraints"][0]["whenUnsatisfiable"]
    assert (spread == "DoNotSchedule") == (pl.strategy == "STRICT_SPREAD")
    assert (group["rayStartParams"].get("num-gpus") == "0") == (pl.gpus_per_rank == 0)


def test_multinode_profile_spreads_ranks_over_nodes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    profile = next(p for p in PROFILES if "2node" in p)
    ray = _one(rendered[profile], "RayService")
    group = ray["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert group["numOfHosts"] == 2
    spread = group["template"]["spec"]["topologySpreadConstraints"][0]
    assert (spread["topologyKey"], spread["whenUnsatisfiable"]) == ("kubernetes.io/hostname", "DoNotSchedule")
    settings = _serve_config(rendered[profile])["applications"][0]["args"]["settings"]
    engine = deployment_options(load_settings(overrides=settings, env={}))["EngineReplica"]
    assert engine["placement_group_strategy"] == "STRICT_SPREAD"


def test_security_defaults_on_every_container(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ray = _one(rendered["values.yaml"], "RayService")
    cluster = ray["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["securityContext"]["readOnlyRootFilesystem"] is True
    assert "nvidia.com/gpu" not in json.dumps(head["resources"])
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
    shm = next(v for v in worker["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    env = {e["name"]: e for e in worker["containers"][0]["env"]}
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_secrets_stay_out_of_the_serve_config() -> None:
    docs = render(deep_merge({}, {"secrets": {"apiKeys": ["sk-secret-key-0123456789"], "hfToken": "hf_secret_token"}}))
    ray = json.dumps(_one(docs, "RayService"))
    assert "sk-secret-key-0123456789" not in ray
    assert "hf_secret_token" not in ray
    secret = _one(docs, "Secret")
    assert secret["stringData"]["api-keys"] == "sk-secret-key-0123456789"
    with_existing = render({"secrets": {"existingSecret": "team-credentials"}})
    assert "Secret" not in {d["kind"] for d in with_existing}
    assert "team-credentials" in json.dumps(_one(with_existing, "RayService"))


@pytest.mark.parametrize("kind", sorted(CRD_KINDS))
def test_crd_kinds_are_rendered_when_enabled(kind: str) -> None:
    assert kind in {d["kind"] for d in render(EVERYTHING_ON)}


@pytest.mark.parametrize("ingress", ["haproxy", "direct", "proxy"])
def test_every_ray_container_gets_the_ingress_env_the_settings_choose(ingress: str) -> None:
    from serving.config.settings import IngressPath
    from serving.gateway.ingress import env_for, ingress_env

    knobs = {k for path in IngressPath for k in env_for(path)}  # what any ingress path sets
    values = profile_values("values.yaml")
    values = deep_merge(values, {"settings": {"gateway": {"ingress": ingress}}})
    docs = render(values)
    expected = ingress_env(load_settings(overrides=values["settings"], env={}))
    cluster = _one(docs, "RayService")["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        ray_container = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in ray_container.get("env", [])}
        got = {k: v for k, v in env.items() if k in knobs}
        assert got == expected, ray_container["name"]


def test_tenants_render_into_the_secret_as_the_tenants_file_the_gateway_reads() -> None:
    from serving.gateway.auth import Priority, digest, parse_tenants

    acme, nightly = digest("sk-acme-0123456789abcdef"), digest("sk-nightly-0123456789abcdef")
    tenants = [
        {"name": "acme", "weight": 4, "requests_per_min": 600, "keys": [f"sha256:{acme}"]},
        {"name": "nightly", "priority": "batch", "tokens_per_min": 50000, "keys": [nightly]},
    ]
    docs = render({"secrets": {"tenants": tenants}})
    text = _one(docs, "Secret")["stringData"]["api-keys"]
    got = parse_tenants(text, "the chart's Secret")
    assert (got[acme].name, got[acme].weight, got[acme].requests_per_min) == ("acme", 4.0, 600)
    assert (got[nightly].name, got[nightly].priority, got[nightly].tokens_per_min) == (
        "nightly",
        Priority.BATCH,
        50000,
    )
    # the file the gateway reads is the one the Secret's key is mounted as
    ray = _one(docs, "RayService")
    head = ray["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    items = next(v for v in head["volumes"] if v["name"] == "secrets")["secret"]["items"]
    assert items == [{"key": "api-keys", "path": "api-keys"}]


def test_notes_explain_rotation_and_key_digests() -> None:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        out = chart.render(
            values={"settings": {"gateway": {"api_keys": {"reload_s": 7}}}}, name="qwen", namespace="llm"
        )
    notes = next(v for k, v in out.items() if k.endswith("NOTES.txt"))
    assert 'printf %s "$API_KEY" | sha256sum' in notes
    assert "reload_s (7 s)" in notes  # the setting as given …
    assert "qwen-qwen-serve-credentials" in notes
    with helm.Chart.load(CHART) as chart:
        default = next(
            v for k, v in chart.render(values={}, name="q", namespace="n").items() if k.endswith("NOTES.txt")
        )
    reload_s = load_settings(env={}).gateway.api_keys.reload_s
    assert f"reload_s ({reload_s:g} s)" in default  # … or its default, from the settings (_generated.tpl)
