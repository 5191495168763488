"""Default ``--max-running-requests`` vs the best of a sweep (issue 15.1), in the simulator.

For each layout × scenario × concurrency, the same closed-loop workload is replayed in virtual time
(``serving.engines.simulator.replay``: the server's scheduler, timing model, prefix cache and
admission/retraction) once with the launch plan's default (``resolved_max_running``), once with the
full-context reservation opt-in, and once per swept value. Goal: the default reaches ≥ 95 % of the
best output tokens/s found (the sweep and the default) with 0 failed requests. The default depends
on ``memory.kv_share_tokens``; :func:`share_sensitivity` reports the cells met at other values.
"""

from __future__ import annotations

from typing import Any

from loadtest.scenarios import load_scenario
from serving.capacity.timing import Deployment, TimingModel
from serving.config import load_settings, resolved_max_running
from serving.engines.simulator.replay import replay_workload

LAYOUTS = {"h200-tp1": ("h200", 1), "8xh100-tp8": ("h100", 8)}
SCENARIOS = ("chat", "coding_agent")
CONCURRENCY = (16, 64)
SWEEP = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
GOAL = 0.95
PRESET = "qwen3.6-27b"
SHARES = (0, 8192, 12288, 16384, 24576, 32768)  # memory.kv_share_tokens values compared


def _settings(gpu: str, tp: int, **memory: Any) -> Any:
    return load_settings(
        overrides={
            "model": {"preset": PRESET},
            "engine": {"kind": "simulator"},
            "parallelism": {"tp": tp, "gpu_type": gpu, "gpus_per_node": 8},
            "memory": memory,
        },
        env={},
    )


def _model(s: Any, max_running: int) -> TimingModel:
    m, sp = s.memory, s.speculative
    d = Deployment.of(
        PRESET,
        gpu=s.parallelism.gpu_type,
        tp=s.parallelism.tp,
        ssm_dtype=m.mamba_ssm_dtype,
        mem_fraction=m.mem_fraction,
        max_running=max_running,
        draft_tokens=sp.num_draft_tokens if sp.enabled else None,
        accept_length=s.engine.simulator.mtp_accept_length,
        extra_buffer=m.radix_cache_strategy != "no_buffer",
    )
    return TimingModel(d)


def _ratio(d: dict[str, Any], best: dict[str, Any]) -> float:
    return d["output_tok_s"] / best["output_tok_s"] if best["output_tok_s"] else 0.0


def cell(layout: str, scenario: str, concurrency: int, requests_per_client: int = 4) -> dict[str, Any]:
    """One cell: the sweep, the default, the full-context opt-in, and the default at each of
    :data:`SHARES` (a replay per distinct ``max_running``, each run once)."""
    gpu, tp = LAYOUTS[layout]
    s = _settings(gpu, tp)
    bound = _model(s, 1 << 20).capacity().max_running
    wl = load_scenario(scenario)
    n = concurrency * requests_per_client
    runs: dict[int, dict[str, Any]] = {}

    def run(mr: int) -> dict[str, Any]:
        if mr not in runs:
            r = replay_workload(_model(s, mr), wl, clients=concurrency, requests=n, max_running=mr)
            runs[mr] = {"max_running": r.max_running, "output_tok_s": r.output_tok_s, "failed": r.failed,
                        "retractions": r.retractions, "finished": r.finished}  # fmt: skip
        return runs[mr]

    sweep = [run(v) for v in sorted({*(v for v in SWEEP if v <= bound), min(bound, max(SWEEP))})]
    swept_best = max(sweep, key=lambda x: x["output_tok_s"])
    d = run(resolved_max_running(s))
    full = run(resolved_max_running(_settings(gpu, tp, reserve_full_context=True)))
    best = max(swept_best, d, key=lambda x: x["output_tok_s"])
    ratio = _ratio(d, best)
    by_share = {}
    for share in SHARES:
        ds = run(resolved_max_running(_settings(gpu, tp, kv_share_tokens=share)))
        r = _ratio(ds, max(swept_best, ds, key=lambda x: x["output_tok_s"]))
        by_share[share] = {"max_running": ds["max_running"], "ratio": r, "ok": r >= GOAL and ds["failed"] == 0}
    return {
        "layout": layout, "scenario": scenario, "concurrency": concurrency, "requests": n,
        "default": d, "reserve_full_context": full, "best": best, "sweep": sweep,
        "default_vs_best": ratio, "ok": ratio >= GOAL and d["failed"] == 0, "by_share": by_share,
    }  # fmt: skip


def share_sensitivity(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each ``memory.kv_share_tokens``: the defaults it gives and how many cells meet the goal."""
    return [
        {
            "kv_share_tokens": share,
            "defaults": {c["layout"]: c["by_share"][share]["max_running"] for c in cells},
            "cells_met": sum(c["by_share"][share]["ok"] for c in cells),
            "cells": len(cells),
            "worst_default_vs_best": min(c["by_share"][share]["ratio"] for c in cells),
        }
        for share in SHARES
    ]


def run() -> dict[str, Any]:
    cells = [cell(lay, sc, c) for lay in LAYOUTS for sc in SCENARIOS for c in CONCURRENCY]
    return {
        "status": "measured",
        "goal": f"default ≥ {GOAL:.0%} of the best output tok/s found (sweep and default), 0 failed",
        "met": all(c["ok"] for c in cells),
        "kv_share_tokens": _settings(*LAYOUTS["h200-tp1"]).memory.kv_share_tokens,
        "cells": cells,
        "share_sensitivity": share_sensitivity(cells),
    }


def main() -> None:
    res = run()
    for c in res["cells"]:
        d, b, f = c["default"], c["best"], c["reserve_full_context"]
        print(
            f"{c['layout']:11} {c['scenario']:12} c={c['concurrency']:<3} default mr={d['max_running']:<3} "
            f"{d['output_tok_s']:8.0f} tok/s (failed {d['failed']}, retracted {d['retractions']}) | best mr="
            f"{b['max_running']:<3} {b['output_tok_s']:8.0f} | full-context mr={f['max_running']:<3} "
            f"{f['output_tok_s']:8.0f} | {c['default_vs_best']:.1%} {'ok' if c['ok'] else 'MISS'}"
        )
    for row in res["share_sensitivity"]:
        print(f"kv_share_tokens={row['kv_share_tokens']:<6} defaults {row['defaults']}: "
              f"{row['cells_met']}/{row['cells']} cells, worst {row['worst_default_vs_best']:.1%}")  # fmt: skip
    print("goal met" if res["met"] else "goal NOT met")


if __name__ == "__main__":
    main()
