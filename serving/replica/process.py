"""One engine rank as an operating-system process, supervised.

- The process starts in its own session (its own process group), so stopping it signals the whole
  group: SIGTERM, a grace period, then SIGKILL to whatever is left.
- On Linux it also gets ``PR_SET_PDEATHSIG = SIGKILL``: if the actor that started it dies (killed
  by Ray, OOM, crash) the kernel kills the engine too. No orphan engines. The signal is armed by
  :mod:`serving.replica.launch`, which then becomes the engine (``exec``), so no code of the
  supervisor runs between ``fork`` and ``exec`` (that module says why).
- Its stdout/stderr go line by line to the logger (with ``replica_id``, ``rank`` and ``pid`` as
  structured fields) and to a log file of its own (:func:`engine_log_path`); the last lines are
  kept, so a failure can say why (:class:`serving.replica.failure.EngineFailure`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from serving.replica.failure import EngineFailure

logger = logging.getLogger("qwen_serve.engine")

_LAUNCHER = str(Path(__file__).with_name("launch.py"))


class EngineStartError(RuntimeError):
    """An engine rank did not become ready; the message is the rendered :class:`EngineFailure`."""


def engine_log_path(replica_id: str, rank: int) -> Path:
    """``$TMPDIR/qwen-serve/engines/<replica>-rank<N>.log``, one file per rank of a replica."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", replica_id or "engine").strip("_")
    return Path(tempfile.gettempdir()) / "qwen-serve" / "engines" / f"{safe}-rank{rank}.log"


class EngineProcess:
    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        rank: int,
        replica_id: str = "",
        engine: str = "",
        tail_lines: int = 40,
        log_path: Path | None = None,
    ):
        self.argv = list(argv)
        self.env = dict(env)
        self.rank = rank
        self.replica_id = replica_id
        self.engine = engine or Path(self.argv[0]).name
        self.log_path = log_path or engine_log_path(replica_id, rank)
        self._log: IO[str] | None = None
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> int:
        if self._proc is not None:
            raise RuntimeError("engine process already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        program = shutil.which(self.argv[0], path=env.get("PATH", os.defpath))
        if program is None:
            raise FileNotFoundError(
                f"engine.binary: {self.argv[0]!r} not found on this node (not an executable file, not on "
                "PATH): set engine.binary to the engine program's path or install it in the image"
            )
        self._log = self.log_path.open("a", buffering=1)  # line-buffered: readable while it runs
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", _LAUNCHER, str(os.getpid()), program, *self.argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, name=f"engine-rank{self.rank}-log", daemon=True)
        self._reader.start()
        logger.info(
            "engine rank %d started (pid %d)",
            self.rank,
            self._proc.pid,
            extra={"replica_id": self.replica_id, "rank": self.rank, "pid": self._proc.pid},
        )
        return self._proc.pid

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM the process group, wait up to ``grace_s``, then SIGKILL the group. Idempotent."""
        proc = self._proc
        if proc is None:
            return None
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        if proc.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
        _signal_group(pgid, signal.SIGKILL)  # the leader or any child it left behind
        code = proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        logger.info(
            "engine rank %d stopped (exit %s)",
            self.rank,
            code,
            extra={"replica_id": self.replica_id, "rank": self.rank, "pid": proc.pid},
        )
        return code

    # state ---------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def tail(self) -> list[str]:
        return list(self._tail)

    def failure(self, what: str = "exited") -> EngineFailure:
        if self._reader is not None and self.returncode() is not None:
            self._reader.join(timeout=1.0)  # the last lines a dying process wrote
        return EngineFailure(self.engine, self.rank, what, self.returncode(), self.tail(), str(self.log_path))

    def describe_exit(self) -> str:
        return self.failure().render()

    def _pump(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        extra = {"replica_id": self.replica_id, "rank": self.rank, "pid": self._proc.pid, "stream": "engine"}
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self._tail.append(line)
            if self._log is not None:
                self._log.write(line + "\n")
            logger.info("%s", line, extra=extra)
        if self._log is not None:
            self._log.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
