"""The simulator's command line: SGLang 0.5.23's option table plus the ``--sim-*`` knobs.

Every SGLang option is declared from SGLang's own option table, shipped with the package
(``serving/engines/reference/sglang-serve-0.5.23.flags.json``, or ``$SIM_SGLANG_FLAGS``), so an option
SGLang would reject is rejected here too. Without a table (``build_parser`` given a missing file), the
options the launch plan uses are declared and any other ``--name [value]`` is accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from serving.config.hardware import GpuType
from serving.config.presets import PRESETS
from serving.config.settings import SimulatorSettings
from serving.engines.reference import SGLANG_FLAGS


def _flags_table() -> Path:
    env = os.environ.get("SIM_SGLANG_FLAGS")
    return Path(env) if env else SGLANG_FLAGS


def _human_int(v: str) -> int:
    v = v.strip().lower()
    mult = {"k": 1000, "m": 1000_000, "g": 1000_000_000}
    if v and v[-1] in mult:
        return int(float(v[:-1]) * mult[v[-1]])
    return int(v)


_TYPES: dict[str, Any] = {"int": int, "float": float, "human_readable_int": _human_int}

# The options the simulator itself reads (and the launch plan always passes): declared even without the table.
_CORE: list[tuple[str, Any, Any]] = [
    ("--model-path", str, None),
    ("--served-model-name", str, None),
    ("--host", str, "127.0.0.1"),
    ("--port", int, 30000),
    ("--tp-size", int, 1),
    ("--pp-size", int, 1),
    ("--dp-size", int, 1),
    ("--context-length", _human_int, None),
    ("--kv-cache-dtype", str, "auto"),
    ("--quantization", str, None),
    ("--reasoning-parser", str, None),
    ("--tool-call-parser", str, None),
    ("--speculative-algorithm", str, None),
    ("--speculative-num-steps", int, None),
    ("--speculative-num-draft-tokens", int, None),
    ("--max-running-requests", int, None),
    ("--mem-fraction-static", float, None),
    ("--mamba-ssm-dtype", str, None),
    ("--chunked-prefill-size", int, None),
    ("--api-key", str, None),
    ("--nnodes", int, 1),
    ("--node-rank", int, 0),
    ("--dist-init-addr", str, None),
]
_CORE_FLAGS = ["--enable-metrics", "--enable-cache-report"]


def sim_flag(field: str) -> str:
    """The command-line flag of one ``SimulatorSettings`` field: ``time_scale`` → ``--sim-time-scale``."""
    return "--sim-" + field.replace("_", "-")


def _field_type(ann: Any) -> Any:
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    return args[0] if args else ann


def _add_sim_args(p: argparse.ArgumentParser) -> None:
    """``--sim-gpu``/``--sim-preset`` (the launch plan fills them from other sections), then one flag
    per :class:`SimulatorSettings` field, typed and documented from the field itself."""
    g = p.add_argument_group("simulator")
    g.add_argument("--sim-gpu", choices=[g.value for g in GpuType], default="h100")
    g.add_argument("--sim-preset", choices=sorted(PRESETS), default=None)
    for name, f in SimulatorSettings.model_fields.items():
        typ = _field_type(f.annotation)
        if typ is bool:
            g.add_argument(sim_flag(name), dest=f"sim_{name}", action="store_true", help=f.description)
        else:
            g.add_argument(sim_flag(name), dest=f"sim_{name}", type=typ, default=f.default, help=f.description)


def _add_from_table(p: argparse.ArgumentParser, table: Path) -> None:
    options = json.loads(table.read_text())["options"]
    for o in options:
        opts, action, typ = o["opts"], o["action"], o["type"]
        if action in ("_StoreTrueAction", "DeprecatedStoreTrueAction", "DeprecatedStoreConstAction"):
            p.add_argument(*opts, dest=o["dest"], action="store_true")
        elif action == "BooleanOptionalAction":
            p.add_argument(*opts[:1], dest=o["dest"], action=argparse.BooleanOptionalAction, default=None)
        elif action == "LoRAPathAction":
            p.add_argument(*opts, dest=o["dest"], nargs="*", default=None)
        else:
            conv = _TYPES.get(typ, str)
            default = next((d for f, _, d in _CORE if f in opts), None)
            p.add_argument(*opts, dest=o["dest"], type=conv, choices=o["choices"], default=default)


def build_parser(table: Path | None = None) -> tuple[argparse.ArgumentParser, bool]:
    """The parser, and whether it is strict (built from SGLang's option table)."""
    p = argparse.ArgumentParser(prog="python -m serving.engines.simulator", description=__doc__, allow_abbrev=False)
    table = table or _flags_table()
    if table is not None and table.is_file():
        _add_from_table(p, table)
        strict = True
    else:
        for flag, conv, default in _CORE:
            p.add_argument(flag, type=conv, default=default)
        for flag in _CORE_FLAGS:
            p.add_argument(flag, action="store_true")
        strict = False
    _add_sim_args(p)
    return p, strict


def _lenient_rest(rest: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    i = 0
    while i < len(rest):
        a = rest[i]
        if not a.startswith("--"):
            raise SystemExit(f"error: unexpected argument {a!r}")
        name = a[2:].split("=", 1)
        if len(name) == 2:
            out[name[0].replace("-", "_")] = name[1]
            i += 1
        elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            out[name[0].replace("-", "_")] = rest[i + 1]
            i += 2
        else:
            out[name[0].replace("-", "_")] = True
            i += 1
    return out


@dataclass(frozen=True)
class SimArgs:
    """What the simulator reads from its argv (everything else is accepted and kept in ``extra``)."""

    host: str
    port: int
    model_path: str
    served_model_name: str
    preset: str
    gpu: GpuType
    tp: int
    pp: int
    context_length: int
    kv_cache_dtype: str
    quantization: str | None
    reasoning_parser: str | None
    tool_call_parser: str | None
    speculative_algorithm: str | None
    speculative_num_draft_tokens: int | None
    max_running_requests: int | None
    mem_fraction_static: float
    mamba_ssm_dtype: str
    chunked_prefill_size: int | None
    api_key: str | None
    enable_metrics: bool
    enable_cache_report: bool
    nnodes: int
    node_rank: int
    dist_init_addr: str | None
    dist_timeout_s: float
    extra: dict[str, Any]
    sim: SimulatorSettings  # every --sim-* knob, validated by the settings model itself

    def __getattr__(self, name: str) -> Any:  # a.time_scale etc.: the knobs read as plain fields
        if name != "sim" and name in SimulatorSettings.model_fields:
            return getattr(self.sim, name)
        raise AttributeError(name)


def _guess_preset(model_path: str | None, served: str | None) -> str:
    for cand in (served, Path(model_path).name.lower() if model_path else None):
        if cand and cand.lower() in PRESETS:
            return cand.lower()
    return "qwen3.6-27b"


def parse_args(argv: list[str], table: Path | None = None) -> SimArgs:
    """Parse the simulator argv; exits with status 2 and a message on bad input (like argparse)."""
    parser, strict = build_parser(table)
    if strict:
        ns = parser.parse_args(argv)
        extra: dict[str, Any] = {}
    else:
        ns, rest = parser.parse_known_args(argv)
        extra = _lenient_rest(rest)
    v = vars(ns)
    preset = ns.sim_preset or _guess_preset(ns.model_path, ns.served_model_name)
    served = ns.served_model_name or ns.model_path or preset
    if ns.nnodes < 1 or not 0 <= ns.node_rank < ns.nnodes:
        parser.error(f"--node-rank {ns.node_rank} must be in 0..{ns.nnodes - 1}")
    if ns.nnodes > 1 and not ns.dist_init_addr:
        parser.error("--dist-init-addr is required with --nnodes > 1")
    try:
        sim = SimulatorSettings(**{name: v[f"sim_{name}"] for name in SimulatorSettings.model_fields})
    except ValidationError as e:
        bad = "; ".join(f"{sim_flag(str(err['loc'][0]))}: {err['msg']}" for err in e.errors())
        parser.error(bad)
    ctx = ns.context_length or PRESETS[preset].max_context
    return SimArgs(
        host=ns.host,
        port=ns.port,
        model_path=ns.model_path or PRESETS[preset].repo_id,
        served_model_name=served,
        preset=preset,
        gpu=GpuType(ns.sim_gpu),
        tp=ns.tp_size or 1,
        pp=v.get("pp_size") or 1,
        context_length=ctx,
        kv_cache_dtype=ns.kv_cache_dtype or "auto",
        quantization=ns.quantization,
        reasoning_parser=ns.reasoning_parser,
        tool_call_parser=ns.tool_call_parser,
        speculative_algorithm=ns.speculative_algorithm,
        speculative_num_draft_tokens=v.get("speculative_num_draft_tokens"),
        max_running_requests=ns.max_running_requests,
        mem_fraction_static=ns.mem_fraction_static or 0.88,
        mamba_ssm_dtype=ns.mamba_ssm_dtype or "float32",
        chunked_prefill_size=v.get("chunked_prefill_size"),
        api_key=ns.api_key,
        enable_metrics=bool(ns.enable_metrics),
        enable_cache_report=bool(ns.enable_cache_report),
        nnodes=ns.nnodes,
        node_rank=ns.node_rank,
        dist_init_addr=ns.dist_init_addr,
        dist_timeout_s=float(v.get("dist_timeout") or 600),
        extra=extra,
        sim=sim,
    )
