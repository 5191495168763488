"""``helm/qwen-serve/templates/_generated.tpl``: the facts the chart needs at render time, written
from Python so the chart never restates them by hand. Helm cannot run Python, so every fact that
depends on a value is written out as a table over that value's domain and the templates only look
it up.

- ``qwen-serve.presetRepos`` / ``qwen-serve.presetServedNames``: each model preset's Hugging Face
  repository (the download init container fetches it) and default served name (the ``helm test``
  pod asks for it);
- ``qwen-serve.rankLayouts``: for each parallel layout ``tp/pp/dp/nodes`` the placement rules of
  :mod:`serving.config.validation` accept, the GPUs one rank (one pod) holds and whether ranks
  spread over nodes (:func:`serving.replica.placement.placement`);
- ``qwen-serve.usesGpus``: per ``engine.kind/parallelism.gpu_type``, whether ranks get GPUs at all;
- ``qwen-serve.ingressEnvByPath``: the environment every Ray container needs for each
  ``gateway.ingress`` path (:mod:`serving.gateway.ingress`);
- ``qwen-serve.gatewayResource`` / ``qwen-serve.gatewayResourceCapacity``: the custom Ray
  resource only the head pod advertises, which pins the gateway there, and how much of it the head
  advertises (:mod:`serving.deploy.serve_config`);
- ``qwen-serve.podGraceBeyondDrainS``: seconds a pod's termination grace adds to
  ``replica.drain_grace_s`` so Serve's graceful shutdown finishes first;
- ``qwen-serve.settingDefaults``: the defaults of the few settings the templates read (the Serve
  application's name, the gateway's port and ingress path) for values that leave them out.

``serving deploy helpers --write`` refreshes the file; a test fails when it drifts.
"""

from __future__ import annotations

import itertools
import math

import yaml

from serving.config import PRESETS
from serving.config.settings import EngineKind, EngineSettings, GpuType, IngressPath, ParallelismSettings, Settings
from serving.deploy.paths import CHART_DIR
from serving.deploy.serve_config import GATEWAY_RESOURCE, GATEWAY_RESOURCE_CAPACITY

HELPERS_FILE = CHART_DIR / "templates" / "_generated.tpl"

# The layouts the chart places: at most this many GPUs on one pod (an 8-GPU HGX board) and this
# many nodes per engine instance. A bigger node or instance: raise them and run
# `serving deploy helpers --write`.
MAX_GPUS_PER_POD = 8
MAX_NODES = 16
# Kubernetes kills a pod this long after Serve's graceful-shutdown timeout would have ended.
POD_SLACK_S = 10.0


def _define(name: str, data: object, doc: str) -> str:
    body = yaml.safe_dump(data, sort_keys=True, default_flow_style=False).rstrip()
    return f'{{{{/* {doc} */}}}}\n{{{{- define "qwen-serve.{name}" -}}}}\n{body}\n{{{{- end }}}}\n'


def _define_scalar(name: str, value: object, doc: str) -> str:
    return f'{{{{/* {doc} */}}}}\n{{{{- define "qwen-serve.{name}" -}}}}{value}{{{{- end }}}}\n'


def layout_key(tp: int, pp: int, dp: int, nodes: int) -> str:
    """The key the chart builds from ``settings.parallelism`` (``printf "%v/%v/%v/%v"``)."""
    return f"{tp}/{pp}/{dp}/{nodes}"


def rank_layouts() -> dict[str, dict[str, int | bool]]:
    """``tp/pp/dp/nodes`` → the GPUs of one rank (when ranks get GPUs: :func:`uses_gpus_table`) and
    whether ranks spread, for every layout the placement rules accept on a node of
    :data:`MAX_GPUS_PER_POD` GPUs (tp: any preset's choice)."""
    from serving.config.validation import no_dp_across_nodes, ranks_fill_nodes
    from serving.replica.placement import placement

    tps = sorted({tp for p in PRESETS.values() for tp in p.tp_choices})
    most = MAX_GPUS_PER_POD * MAX_NODES
    out: dict[str, dict[str, int | bool]] = {}
    shapes = [(tp, pp, dp) for tp in tps for pp in range(1, most // tp + 1) for dp in range(1, most // (tp * pp) + 1)]
    for (tp, pp, dp), nodes in itertools.product(shapes, range(1, MAX_NODES + 1)):
        par = ParallelismSettings(tp=tp, pp=pp, dp=dp, nodes=nodes, gpus_per_node=MAX_GPUS_PER_POD)
        # the layout rules read parallelism only; a GPU engine, so placement gives each rank its GPUs
        s = Settings.model_construct(engine=EngineSettings(kind=EngineKind.SGLANG), parallelism=par)
        if any(True for rule in (ranks_fill_nodes, no_dp_across_nodes) for _ in rule(s)):
            continue
        pl = placement(s)
        out[layout_key(tp, pp, dp, nodes)] = {"gpus": pl.gpus_per_rank, "spread": pl.strategy == "STRICT_SPREAD"}
    return out


def uses_gpus_table() -> dict[str, bool]:
    """``engine.kind/parallelism.gpu_type`` → :attr:`Settings.uses_gpus`."""
    out = {}
    for kind, gpu in itertools.product(EngineKind, GpuType):
        s = Settings.model_construct(engine=EngineSettings(kind=kind), parallelism=ParallelismSettings(gpu_type=gpu))
        out[f"{kind.value}/{gpu.value}"] = s.uses_gpus
    return out


def pod_grace_beyond_drain_s() -> int:
    from serving.replica.deployment import SHUTDOWN_BEYOND_DRAIN_S

    return math.ceil(SHUTDOWN_BEYOND_DRAIN_S + POD_SLACK_S)


def render_helpers() -> str:
    from serving.gateway.ingress import env_for

    repos = {name: p.repo_id for name, p in PRESETS.items()}
    served = {name: p.served_name for name, p in PRESETS.items()}
    defaults = Settings.model_construct()  # field defaults only: no preset filling, no validation
    gateway, ray = defaults.gateway, defaults.ray
    read = {
        "ray": {"app_name": ray.app_name},
        "gateway": {
            "port": gateway.port,
            "ingress": gateway.ingress.value,
            "api_keys": {"reload_s": gateway.api_keys.reload_s},  # NOTES: how soon a rotated key is refused
        },
    }
    env = {path.value: [{"name": k, "value": v} for k, v in env_for(path).items()] for path in IngressPath}
    layouts = "\n".join(
        f"{key}: {{gpus: {v['gpus']}, spread: {str(v['spread']).lower()}}}" for key, v in rank_layouts().items()
    )
    return "\n".join(
        [
            "{{/* GENERATED by `serving deploy helpers --write` from serving/ — do not edit. */}}\n",
            _define("presetRepos", repos, "Hugging Face repository of each model preset (serving/config/presets.py)."),
            _define(
                "presetServedNames", served, "Default served name of each model preset (serving/config/presets.py)."
            ),
            "{{/* GPUs of one rank (one pod) and whether ranks spread over nodes, per tp/pp/dp/nodes that the\n"
            f"placement rules accept with at most {MAX_GPUS_PER_POD} GPUs per pod and {MAX_NODES} nodes "
            "(serving/replica/placement.py). */}}\n"
            f'{{{{- define "qwen-serve.rankLayouts" -}}}}\n{layouts}\n{{{{- end }}}}\n',
            _define(
                "usesGpus",
                uses_gpus_table(),
                "Whether ranks get GPUs, per engine.kind/gpu_type (serving/replica/placement.py).",
            ),
            _define_scalar(
                "layoutLimits", f"{MAX_GPUS_PER_POD} GPUs per pod, {MAX_NODES} nodes", "Bounds of rankLayouts."
            ),
            _define(
                "ingressEnvByPath", env, "Ray container env per gateway.ingress path (serving/gateway/ingress.py)."
            ),
            _define_scalar(
                "gatewayResource",
                GATEWAY_RESOURCE,
                "Custom Ray resource only the head pod advertises (serving/deploy/serve_config.py).",
            ),
            _define_scalar(
                "gatewayResourceCapacity",
                GATEWAY_RESOURCE_CAPACITY,
                "How much of it the head advertises (serving/deploy/serve_config.py).",
            ),
            _define_scalar(
                "podGraceBeyondDrainS",
                pod_grace_beyond_drain_s(),
                "Pod termination grace beyond replica.drain_grace_s (serving/replica/deployment.py + slack).",
            ),
            _define(
                "settingDefaults", read, "Defaults of the settings the templates read (serving/config/settings.py)."
            ),
        ]
    )
