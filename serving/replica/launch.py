"""The engine's launcher: arm the parent-death signal, then become the engine (``exec``).

:class:`serving.replica.process.EngineProcess` runs
``python -I -S launch.py <supervisor pid> <program> <argv0> [args...]``. It imports nothing of the
package, so it starts in milliseconds and works from any interpreter.

Why a launcher and not ``subprocess``'s ``preexec_fn``: a ``preexec_fn`` makes ``subprocess``
``fork()`` the supervisor (a Ray worker with gRPC threads) and run Python in the child before
``exec``. Every such spawn runs the at-fork handlers of the gRPC that Ray loads (in a Ray actor,
grpcio's ``fork_posix.cc`` logs on each one). Those handlers may restart gRPC threads in the child,
and ``close_fds`` then closes descriptors under them. That is the likely cause of an engine seen
aborting once before it started (SIGABRT, "epoll_wait ... Bad file descriptor", with Ray's modules
loaded in the aborting process). Without a ``preexec_fn``, ``subprocess`` takes its ``vfork`` +
``exec`` path: none of the supervisor's code runs in the child, and gRPC's handlers never fire.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with(parent: int, sig: int) -> None:
    """Have the kernel send ``sig`` to this process when its parent exits (Linux), and send it now if
    the parent is no longer ``parent`` (it died before the signal was armed). Raises OSError when the
    kernel refuses. Also used by ``serving serve``'s stack process (:mod:`serving.local`)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def main(argv: list[str]) -> None:
    supervisor, program, *args = argv
    try:
        die_with(int(supervisor), signal.SIGKILL)
    except OSError as e:
        sys.stderr.write(f"engine launcher: {e.strerror}\n")
        sys.exit(1)
    try:
        os.execv(program, args)
    except OSError as e:
        sys.stderr.write(f"engine launcher: cannot execute {program!r}: {e.strerror}\n")
        sys.exit(126)


if __name__ == "__main__":
    main(sys.argv[1:])
