"""The report of a run: JSON (everything), PNG (curves), HTML (tables + the figure).

Inputs are the run directory's ``records.jsonl`` and ``run.json`` (see :mod:`loadtest.runner`), so
a report can be rebuilt later with other SLOs or prices: ``loadtest report RUN_DIR --slo-ttft 0.5``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.cost import DEFAULT_INPUT_WEIGHT, PriceTable, token_cost
from loadtest.gpu_usage import gpu_hours
from loadtest.records import RequestRecord, read_records
from loadtest.runmeta import RECORDS, RUN_META, LevelWindow, RunMeta
from loadtest.stats import PointSummary, Slo, knee_index, slo_point_index, summarize

REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
REPORT_HTML = "report.html"


def window_gpu_hours(win: LevelWindow) -> float:
    """GPU-hours inside the measured window: the sampled counts clipped to it."""
    t0, t1 = win.start_ts, win.start_ts + win.window_s
    if not win.gpu_samples:
        return 0.0
    before = [s for s in win.gpu_samples if s[0] <= t0]
    inside = [(t, g) for t, g in win.gpu_samples if t0 < t < t1]
    first = (t0, before[-1][1] if before else win.gpu_samples[0][1])
    return gpu_hours([first, *inside], t1)


@dataclass
class Report:
    meta: RunMeta
    slo: Slo
    points: list[PointSummary]
    costs: list[dict[str, Any]]
    knee: int | None
    slo_point: int | None
    prices: PriceTable

    def to_json(self) -> dict[str, Any]:
        def at(i: int | None) -> dict[str, Any] | None:
            if i is None:
                return None
            p = self.points[i]
            return {
                "index": i,
                "load": p.load,
                "throughput_rps": p.throughput_rps,
                "output_tokens_per_s": p.output_tokens_per_s,
                "answer_tokens_per_s": p.answer_tokens_per_s,
            }

        return {
            "run": self.meta.to_json() | {"levels": [lv.load for lv in self.meta.levels]},
            "slo": {"ttft_s": self.slo.ttft_s, "tpot_s": self.slo.tpot_s, "percentile": self.slo.percentile},
            "points": [p.to_json() | {"cost": c} for p, c in zip(self.points, self.costs, strict=True)],
            "knee": at(self.knee),
            "slo_point": at(self.slo_point),
            "cost_at_slo_point": self.costs[self.slo_point] if self.slo_point is not None else None,
            "prices": {
                "as_of": self.prices.as_of,
                "basis": self.prices.basis,
                "usd_per_gpu_hour": self.prices.usd_per_gpu_hour,
            },
        }


def build_report(run_dir: Path, *, slo: Slo, prices: PriceTable, input_weight: float = DEFAULT_INPUT_WEIGHT) -> Report:
    meta = RunMeta.load(run_dir / RUN_META)
    by_load: dict[float, list[RequestRecord]] = defaultdict(list)
    for r in read_records(run_dir / RECORDS):
        by_load[r.load].append(r)
    points, costs = [], []
    for win in meta.levels:
        p = summarize(by_load.get(win.load, []), load=win.load, duration_s=win.window_s, slo=slo)
        points.append(p)
        hours = window_gpu_hours(win)
        price = prices.price(win.gpu_type) if win.gpu_type else math.nan
        if hours > 0 and not math.isnan(price):
            c = token_cost(
                hours, price, p.prompt_tokens, p.completion_tokens, input_weight, answer_tokens=p.answer_tokens
            ).to_json()
        else:
            c = {"gpu_hours": hours, "input_weight": input_weight}
            keys = ("usd_per_gpu_hour", "total_usd", "usd_per_million_output", "usd_per_million_input",
                    "usd_per_million_answer")  # fmt: skip
            c |= dict.fromkeys(keys)
        c |= {"replicas": win.replicas, "gpu_type": win.gpu_type}
        costs.append(c)
    knee = knee_index([p.load for p in points], [p.output_tokens_per_s for p in points])
    return Report(meta, slo, points, costs, knee, slo_point_index(points), prices)


def _plot(rep: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = rep.points
    x_label = "concurrency" if rep.meta.mode == "concurrency" else "offered load (requests/s)"
    loads = [p.load for p in pts]
    rps = [p.throughput_rps for p in pts]
    fig, grid = plt.subplots(2, 2, figsize=(14, 9))
    axes = [grid[0][0], grid[0][1], grid[1][0], grid[1][1]]
    ax = axes[0]
    ax.plot(loads, [p.output_tokens_per_s for p in pts], "o-", label="output tokens/s (reasoning + answer)")
    ax.plot(loads, [p.answer_tokens_per_s for p in pts], "s-", label="answer tokens/s")
    ax.set_xlabel(x_label)
    ax.set_ylabel("tokens/s")
    ax.set_title("throughput")
    q = rep.slo.percentile
    ax = axes[1]
    for key, style, name in (("ttft_s", "o-", "TTFT"), ("ttfa_s", "s-", "first answer token")):
        ax.plot(rps, [(getattr(p, key).get(f"p{q:g}") or math.nan) for p in pts], style, label=f"{name} p{q:g}")
        ax.plot(rps, [(getattr(p, key).get("p50") or math.nan) for p in pts], "." + style[1:], alpha=0.5,
                label=f"{name} p50")  # fmt: skip
    ax.axhline(rep.slo.ttft_s, color="red", linestyle=":", label=f"TTFT SLO {rep.slo.ttft_s:g} s")
    ax.set_title("TTFT and time to first answer token vs throughput")
    ax = axes[2]
    ax.plot(rps, [(p.tpot_s.get(f"p{q:g}") or math.nan) for p in pts], "o-", label=f"p{q:g}")
    ax.plot(rps, [(p.tpot_s.get("p50") or math.nan) for p in pts], ".--", alpha=0.6, label="p50")
    ax.axhline(rep.slo.tpot_s, color="red", linestyle=":", label=f"SLO {rep.slo.tpot_s:g} s")
    ax.set_title(f"TPOT p{q:g} vs throughput")
    for ax in axes[1:3]:
        ax.set_xlabel("throughput (requests/s)")
        ax.set_ylabel("seconds")
    ax = axes[3]
    idx = list(range(len(pts)))
    reasoning = [p.reasoning_tokens_per_s for p in pts]
    answer = [p.answer_tokens_per_s for p in pts]
    ax.bar(idx, reasoning, color="tab:gray", label="reasoning tokens/s")
    ax.bar(idx, answer, bottom=reasoning, color="tab:green", label="answer tokens/s")
    for j, p in enumerate(pts):
        if p.completion_tokens:
            share = p.answer_tokens / p.completion_tokens
            ax.annotate(f"{share:.0%} answer", (j, reasoning[j] + answer[j]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(idx, [f"{x:g}" for x in loads])
    ax.set_xlabel(x_label)
    ax.set_ylabel("output tokens/s")
    ax.set_title("output split: reasoning vs answer, per level")
    for k, color, name in ((rep.knee, "orange", "knee"), (rep.slo_point, "green", "SLO point")):
        if k is None:
            continue
        axes[0].axvline(loads[k], color=color, linestyle="--", label=f"{name} ({loads[k]:g})")
        for ax in axes[1:3]:
            ax.axvline(rps[k], color=color, linestyle="--", label=f"{name} ({rps[k]:.2f} rps)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{rep.meta.scenario} — {rep.meta.mode} sweep against {rep.meta.host}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v: Any, scale: float = 1.0, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v * scale:.{digits}f}"


_CSS = (
    "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} "
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
)


def _sources(counts: dict[str, int]) -> str:
    return ", ".join(f"{k or '?'} {v}" for k, v in sorted(counts.items())) or "–"


def _html(rep: Report, png: Path) -> str:
    q = f"p{rep.slo.percentile:g}"
    rows = []
    for i, (p, c) in enumerate(zip(rep.points, rep.costs, strict=True)):
        marks = " ".join(m for m, j in (("knee", rep.knee), ("SLO point", rep.slo_point)) if j == i)
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(x)}</td>"
                for x in (
                    f"{p.load:g}",
                    str(p.requests),
                    str(p.errors),
                    _fmt(p.throughput_rps, 1, 2),
                    _fmt(p.output_tokens_per_s, 1, 0),
                    _fmt(p.answer_tokens_per_s, 1, 0),
                    _fmt(p.answer_tokens / p.completion_tokens if p.completion_tokens else None, 100, 0) + " %",
                    f"{p.thinking_requests}/{p.requests - p.errors}",
                    _sources(p.reasoning_tokens_sources),
                    _fmt(p.image_tokens_expected / p.images if p.images else None, 1, 0),
                    _fmt(p.goodput_rps, 1, 2),
                    _fmt(p.slo_attainment, 100, 1) + " %",
                    _fmt(p.ttft_s.get("p50"), 1000),
                    _fmt(p.ttft_s.get(q), 1000),
                    _fmt(p.ttfa_s.get("p50"), 1000),
                    _fmt(p.ttfa_s.get(q), 1000),
                    _fmt(p.tpot_s.get("p50"), 1000),
                    _fmt(p.tpot_s.get(q), 1000),
                    _fmt(p.itl_s.get(q), 1000),
                    _fmt(p.pacer_lag_s.get(q), 1000),
                    "yes" if p.meets_slo else "no",
                    _fmt(c.get("usd_per_million_output"), 1, 3),
                    _fmt(c.get("usd_per_million_answer"), 1, 3),
                    _fmt(c.get("usd_per_million_input"), 1, 3),
                    marks,
                )
            )
            + "</tr>"
        )
    head = (
        "load", "requests", "errors", "req/s", "out tok/s", "answer tok/s", "answer share", "thinking",
        "reasoning count from", "image tok/image (expected)", "goodput req/s", "SLO attainment",
        "TTFT p50 ms", f"TTFT {q} ms", "1st answer p50 ms", f"1st answer {q} ms", "TPOT p50 ms", f"TPOT {q} ms",
        f"ITL {q} ms", f"pacer lag {q} ms", "meets SLO", "$/M output", "$/M answer", "$/M input", "",
    )  # fmt: skip
    img = base64.b64encode(png.read_bytes()).decode() if png.is_file() else ""
    m = rep.meta
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>load test report: {html.escape(m.scenario)}</title><style>{_CSS}</style></head>
<body><h1>Load test: {html.escape(m.scenario)} ({html.escape(m.mode)} sweep)</h1>
<p>target {html.escape(m.host)}, model {html.escape(m.model)}, warm-up {m.warmup_s:g} s + {m.duration_s:g} s per level.
SLO: TTFT {q} ≤ {rep.slo.ttft_s:g} s and TPOT {q} ≤ {rep.slo.tpot_s * 1000:g} ms.
Prices: {html.escape(rep.prices.basis)} (as of {html.escape(rep.prices.as_of)}).</p>
<table><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr>{"".join(rows)}</table>
<p><img alt="curves" src="data:image/png;base64,{img}" style="max-width:100%"></p>
</body></html>"""


def write_report(rep: Report, run_dir: Path) -> dict[str, Path]:
    paths = {"json": run_dir / REPORT_JSON, "png": run_dir / REPORT_PNG, "html": run_dir / REPORT_HTML}
    paths["json"].write_text(json.dumps(rep.to_json(), indent=2), encoding="utf-8")
    _plot(rep, paths["png"])
    paths["html"].write_text(_html(rep, paths["png"]), encoding="utf-8")
    return paths
