"""Processes of a benchmark: start with a deadline, wait until they answer, stop, read their CPU.

Each process is started in its own session (process group) so stopping it also stops whatever it
spawned (Ray workers, engine children). Logs go to files under the run's log folder and their tail
is surfaced when a start fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench.stats import ProcCpu

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]  # the checkout: `python -m bench.*` children import from here
# Where `make llama-server` builds llama.cpp in a checkout; development runs (benchmarks, tests, `make
# serve`) put it on PATH, where the engine looks for its program.
LLAMA_DEV_BIN = ROOT / ".cache" / "llama.cpp" / "bin"


def dev_path(path: str | None = None) -> str:
    """``PATH`` with the checkout's llama.cpp build first."""
    rest = os.environ.get("PATH", "") if path is None else path
    return f"{LLAMA_DEV_BIN}{os.pathsep}{rest}" if rest else str(LLAMA_DEV_BIN)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PATH": dev_path(),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
        **(extra or {}),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@dataclass
class Proc:
    """One started process (and its descendants), labelled with the role its CPU is charged to."""

    name: str
    role: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    stdin_shutdown: bool = False  # closes its stdin to shut down cleanly (Ray drivers)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("wb")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,
            env=child_env(self.env),
            cwd=ROOT,
            start_new_session=True,
        )
        out.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} not started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def _exited(self) -> str:
        return f"{self.name} exited (rc={self.popen and self.popen.returncode}):\n{log_tail(self.log)}"

    def wait_http(self, url: str, timeout_s: float, ok: Callable[[httpx.Response], bool] | None = None) -> None:
        """Poll ``url`` until it answers 200 (or ``ok(response)``), the process dies, or the deadline."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(self._exited())
            try:
                r = httpx.get(url, timeout=5.0)
                if (ok or (lambda resp: resp.status_code == 200))(r):
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.25)
        raise TimeoutError(f"{self.name}: {url} not ready after {timeout_s:.0f}s ({last}):\n{log_tail(self.log)}")

    def wait_log(self, needle: str, timeout_s: float) -> str:
        """Wait until the process's log has a line containing ``needle``; the rest of that line."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(self._exited())
            for line in self.log.read_text(errors="replace").splitlines():
                if needle in line:
                    return line.split(needle, 1)[1].strip()
            time.sleep(0.25)
        raise TimeoutError(f"{self.name}: no {needle!r} after {timeout_s:.0f}s:\n{log_tail(self.log)}")

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``grace_s``."""
        if self.popen is None:
            return
        if self.stdin_shutdown and self.popen.stdin is not None and self.popen.poll() is None:
            try:  # drivers shut down cleanly when their stdin closes
                self.popen.stdin.close()
                self.popen.wait(timeout=grace_s)
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:
            procs = [psutil.Process(self.popen.pid), *psutil.Process(self.popen.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        for p in procs[1:]:  # descendants that left the process group (Ray starts its own sessions)
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.popen.kill()


@dataclass(frozen=True)
class RoleRule:
    """A descendant whose command line contains ``needle`` (and its own descendants) is ``role``."""

    needle: str
    role: str


def snapshot_cpu(procs: Sequence[Proc], rules: Sequence[RoleRule] = ()) -> list[ProcCpu]:
    """user + system CPU of every process in each tree, each charged to its tree's role unless a
    rule reassigns a subtree (e.g. the engine that a Ray replica spawned is charged to "engine")."""
    out: list[ProcCpu] = []
    seen: set[int] = set()

    def visit(p: psutil.Process, role: str) -> None:
        if p.pid in seen:
            return
        seen.add(p.pid)
        try:
            cmd = " ".join(p.cmdline())
            for rule in rules:
                if rule.needle in cmd:
                    role = rule.role
                    break
            t = p.cpu_times()
            out.append(ProcCpu(p.pid, p.create_time(), role, t.user + t.system))
            kids = p.children()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return
        for c in kids:
            visit(c, role)

    for proc in procs:
        if proc.alive():
            try:
                visit(psutil.Process(proc.pid), proc.role)
            except psutil.NoSuchProcess:
                continue
    return out


class ProcGroup:
    """Processes of one arm, stopped together (last started, first stopped)."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc.start())
        return proc

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()
