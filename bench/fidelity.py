"""Simulator fidelity: the simulator's own analytic report of predicted vs published figures for
the cells of the team notes ``qwen36.md``, checked against the ±15 % goal.

The report is produced by the simulator package (``serving simulator report --json``); this module
runs it as a separate process and only normalises and judges its rows.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from bench.procs import PY, ROOT, child_env

TOLERANCE = 0.15  # the fit set (the constants were chosen on it)
HELD_OUT_TOLERANCE = 0.20  # cells never used for fitting
CLI = [PY, "-c", "from serving.cli.main import app; app()", "simulator", "report", "--json"]


def _rows(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        for key in ("cells", "rows", "results"):
            if isinstance(data.get(key), list):
                return list(data[key])
    if isinstance(data, list):
        return list(data)
    raise ValueError(f"unrecognised report shape: {str(data)[:200]}")


def relative_error(predicted: float | None, published: float | None) -> float | None:
    if predicted is None or published is None or published == 0:
        return None
    return (predicted - published) / published


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    pred = row.get("predicted")
    pub = row.get("published")
    err = row.get("relative_error")
    if err is None:
        err = relative_error(pred, pub)
    label = (
        row.get("cell")
        or row.get("name")
        or row.get("label")
        or " ".join(str(row[k]) for k in ("gpu", "precision", "model", "concurrency", "metric") if k in row)
    )
    kind = str(row.get("set") or "fit")
    tol = HELD_OUT_TOLERANCE if kind == "held-out" else TOLERANCE
    return {"cell": label, "set": kind, "metric": row.get("metric"), "predicted": pred, "published": pub,
            "relative_error": err, "within": None if err is None else abs(err) <= tol}  # fmt: skip


def _goal(rows: list[dict[str, Any]], judged: list[dict[str, Any]], kind: str, tol: float) -> dict[str, Any]:
    part = [r for r in judged if r["set"] == kind]
    return {
        "goal": f"every {kind} cell within ±{tol:.0%}",
        "value": sum(r["within"] for r in part) / len(part) if part else None,
        "met": (all(r["within"] for r in part) and len(part) == sum(r["set"] == kind for r in rows)) if part else None,
    }


def run() -> dict[str, Any]:
    proc = subprocess.run(CLI, capture_output=True, text=True, timeout=300, cwd=ROOT, env=child_env(), check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"status": f"not measured: `serving simulator report --json` failed: {' | '.join(tail)[:400]}"}
    rows = [normalise(r) for r in _rows(json.loads(proc.stdout))]
    judged = [r for r in rows if r["within"] is not None]
    return {
        "status": "measured",
        "source": "serving simulator report --json",
        "tolerance": TOLERANCE,
        "cells": rows,
        "goals": [_goal(rows, judged, "fit", TOLERANCE), _goal(rows, judged, "held-out", HELD_OUT_TOLERANCE)],
    }
