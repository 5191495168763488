"""In-process headless runs: one Locust ``Environment`` + local runner per load level.

A sweep runs its levels one after the other; each level spawns its users at once, runs warm-up +
duration, then stops issuing requests and lets in-flight ones finish (Locust's ``stop_timeout``).
Requests *started* inside the measured window count, so throughput = started / window is unbiased
in steady state (Little's law) whatever the request length. Records go to ``records.jsonl``; the
run's description (levels, windows, GPU samples) to ``run.json``; :mod:`loadtest.report` turns
both into the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from enum import StrEnum
from pathlib import Path

import gevent
from locust.env import Environment
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from loadtest.gpu_usage import GpuUsageSource
from loadtest.pacer import PoissonPacer
from loadtest.records import JsonlWriter
from loadtest.runmeta import RECORDS, RUN_META, LevelWindow, RunMeta
from loadtest.user import OpenAIStreamUser, UserConfig

__all__ = ["RECORDS", "RUN_META", "LevelWindow", "Mode", "RunMeta", "run_level", "run_sweep"]


class Mode(StrEnum):
    CONCURRENCY = "concurrency"  # closed loop: N users, each sends again when its reply ends
    RATE = "rate"  # open loop: Poisson arrivals at N requests/s, at most max_in_flight at once


def _user_class(cfg: UserConfig) -> type[OpenAIStreamUser]:
    return type("StreamUser", (OpenAIStreamUser,), {"config": cfg, "_serial": 0, "abstract": False})


def _sample(source: GpuUsageSource | None, win: LevelWindow) -> None:
    if source is None:
        return
    try:
        u = source.sample()
    except Exception:  # a failed sample must not stop the load; the gap holds the last count
        return
    win.gpu_samples.append((time.time(), u.gpus))
    win.replicas = max(win.replicas, u.replicas)
    win.gpu_type = u.gpu_type


def run_level(
    host: str,
    base: UserConfig,
    *,
    mode: Mode,
    load: float,
    duration_s: float,
    warmup_s: float,
    max_in_flight: int,
    gpu_source: GpuUsageSource | None = None,
    progress: Progress | None = None,
    stop_timeout_s: float = 120.0,
) -> LevelWindow:
    if mode is Mode.CONCURRENCY:
        users, pacer = int(load), None
        if users < 1 or users != load:
            raise ValueError(f"concurrency must be a positive integer, got {load}")
    else:
        users, pacer = max_in_flight, PoissonPacer(load, seed=base.seed)
    now = time.monotonic()
    cfg = replace(base, pacer=pacer, load=load, warmup_until=now + warmup_s, stop_at=now + warmup_s + duration_s)
    env = Environment(user_classes=[_user_class(cfg)], host=host, stop_timeout=stop_timeout_s)
    runner = env.create_local_runner()
    win = LevelWindow(load=load, start_ts=time.time() + warmup_s, window_s=duration_s, users=users)
    task = progress.add_task(f"{mode.value} {load:g}", total=warmup_s + duration_s) if progress else None
    _sample(gpu_source, win)
    runner.start(users, spawn_rate=min(users, 100))  # all within ~1 s; warm-up covers the ramp
    last_sample = time.monotonic()
    while (left := cfg.stop_at - time.monotonic()) > 0:
        gevent.sleep(min(0.5, left))
        if time.monotonic() - last_sample >= 5.0:
            _sample(gpu_source, win)
            last_sample = time.monotonic()
        if progress is not None and task is not None:
            total = env.stats.get(f"{cfg.scenario.name} stream", "POST")
            progress.update(
                task,
                completed=min(warmup_s + duration_s, time.monotonic() - now),
                description=f"{mode.value} {load:g}: {total.num_requests} req, {total.num_failures} err",
            )
    runner.stop()  # users finish the request in flight (stop_timeout), start no new one
    runner.quit()
    _sample(gpu_source, win)
    if base.writer is not None:
        base.writer.flush()
    if progress is not None and task is not None:
        progress.update(task, completed=warmup_s + duration_s)
    return win


def run_sweep(
    host: str,
    base: UserConfig,
    out_dir: Path,
    *,
    mode: Mode,
    levels: Sequence[float],
    duration_s: float,
    warmup_s: float,
    max_in_flight: int = 256,
    gpu_source: GpuUsageSource | None = None,
    show_progress: bool = True,
) -> RunMeta:
    """Run every level and write ``records.jsonl`` and ``run.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RECORDS).unlink(missing_ok=True)
    writer = JsonlWriter(out_dir / RECORDS)
    meta = RunMeta(
        mode=mode.value,
        scenario=base.scenario.name,
        host=host,
        model=base.model,
        levels=[],
        warmup_s=warmup_s,
        duration_s=duration_s,
        started=time.time(),
        gpu_source=type(gpu_source).__name__ if gpu_source is not None else "",
    )
    cfg = replace(base, writer=writer)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), disable=not show_progress, transient=False
    )
    try:
        with progress:
            for load in levels:
                meta.levels.append(
                    run_level(
                        host,
                        cfg,
                        mode=mode,
                        load=load,
                        duration_s=duration_s,
                        warmup_s=warmup_s,
                        max_in_flight=max_in_flight,
                        gpu_source=gpu_source,
                        progress=progress,
                    )
                )
    finally:
        writer.close()
        meta.finished = time.time()
        (out_dir / RUN_META).write_text(json.dumps(meta.to_json(), indent=2), encoding="utf-8")
    return meta
