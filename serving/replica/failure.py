"""Why an engine failed, in one paragraph a person can act on.

An engine that dies or never becomes healthy is summarised as: the engine kind and rank, the exit
status with the signal's name, the last lines of its log with the log's path, and a hint where one
is known. The same text is the replica's exception (so Ray Serve's status message, ``serve status``
and KubeRay carry it) and what ``serving serve`` prints before it exits.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass

# Hints by the way a process ended: a signal name, or "exit <code>".
_HINTS: dict[str, str] = {
    "SIGILL": (
        "the binary executes an instruction this CPU does not support. For llama.cpp run "
        "`make llama-server`: the build smoke-tests each configuration on this machine and falls back "
        "(native → native-no-amx → portable); a binary copied from another machine must be rebuilt."
    ),
    "SIGKILL": "killed from outside, most often by the kernel's OOM killer: check `dmesg` and the memory settings.",
    "SIGSEGV": "the engine crashed; the log above usually names the failing model file or option.",
    "SIGBUS": "the model file may be truncated or on a filesystem that vanished; check model.path.",
    "exit 127": "the engine program was not found: set engine.binary or install it.",
    "exit 126": "the engine program is not executable: check engine.binary's permissions.",
}


def exit_status(returncode: int | None) -> str:
    """``exited with code 1``, ``killed by SIGILL (illegal instruction)``, or ``still running``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        return f"killed by {signal_name(-returncode)}"
    if returncode > 128 and returncode - 128 in _signal_numbers():  # a shell reports signals as 128+n
        return f"exited with code {returncode} ({signal_name(returncode - 128)})"
    return f"exited with code {returncode}"


def signal_name(number: int) -> str:
    try:
        sig = signal.Signals(number)
    except ValueError:
        return f"signal {number}"
    text = signal.strsignal(sig) or ""
    return f"{sig.name} ({text.lower()})" if text else sig.name


def _signal_numbers() -> set[int]:
    return {s.value for s in signal.Signals}


def hint_for(returncode: int | None) -> str | None:
    if returncode is None:
        return None
    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if number:
        try:
            hint = _HINTS.get(signal.Signals(number).name)
        except ValueError:
            hint = None
        if hint:
            return hint
    return _HINTS.get(f"exit {returncode}")


@dataclass(frozen=True)
class EngineFailure:
    """One engine rank that died or never became healthy."""

    engine: str
    rank: int
    what: str  # "exited during start-up", "did not become healthy within 600 s", …
    returncode: int | None
    log_tail: Sequence[str]
    log_path: str | None
    hint: str | None = None

    def render(self, tail_lines: int = 20) -> str:
        head = f"engine {self.engine} rank {self.rank} {self.what}: {exit_status(self.returncode)}"
        lines = list(self.log_tail)[-tail_lines:]
        where = f" ({self.log_path})" if self.log_path else ""
        body = "\n".join(f"  | {line}" for line in lines) if lines else "  | (no output)"
        hint = self.hint or hint_for(self.returncode)
        parts = [head, f"last {len(lines)} lines of its log{where}:", body]
        if hint:
            parts.append(f"hint: {hint}")
        return "\n".join(parts)
