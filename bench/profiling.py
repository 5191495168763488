"""py-spy profiles of a stack process under the benchmark load, summarised as top frames.

Sampling is done in a separate repeat of the arm (py-spy itself needs CPU, which would distort the
measured window on a 2-core machine). The raw output is py-spy's collapsed-stack format:
``frame;frame;…;leaf count`` per line.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from bench.procs import Proc


def py_spy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def find_pid(procs: list[Proc], needle: str) -> int | None:
    """The pid of the first process in the trees whose command line contains ``needle``."""
    for proc in procs:
        if not proc.alive():
            continue
        try:
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                if needle in " ".join(p.cmdline()):
                    return p.pid
        except psutil.NoSuchProcess:
            continue
    return None


class Profiler:
    def __init__(self, pid: int, out: Path, rate_hz: int = 250) -> None:
        self.pid, self.out, self.rate_hz = pid, out, rate_hz
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy not found (pip install py-spy)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        argv = [exe, "record", "--pid", str(self.pid), "--format", "raw", "--rate", str(self.rate_hz)]
        argv += ["--nonblocking", "--output", str(self.out)]
        self.popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.popen is None:
            return
        self.popen.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``func (module.py)``: line numbers split one function."""
    name, _, loc = frame.partition(" (")
    file = loc.rstrip(")").rsplit(":", 1)[0].rsplit("/", 1)[-1] if loc else ""
    return f"{name} ({file})" if file else name


CHAIN_SHARE = 0.95  # inclusive frames on at least this share of samples are the event-loop chain: left out


def summarize_collapsed(text: str, top: int = 15) -> dict[str, Any]:
    """Top frames by self share (leaf) and by inclusive share (anywhere on the stack, once per
    sample; frames on ≥ 95 % of samples — the server's event-loop chain — are left out)."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl_c[f] += n
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}
    return {
        "samples": total,
        "self": [(f, c / total) for f, c in self_c.most_common(top)],
        "inclusive": [(f, c / total) for f, c in incl_c.most_common() if c / total < CHAIN_SHARE][:top],
    }
