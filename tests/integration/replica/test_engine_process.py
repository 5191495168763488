"""EngineProcess with real child processes: log capture, group kill, death with its parent."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from serving.replica import process
from serving.replica.process import EngineProcess

pytestmark = pytest.mark.integration


def poll(pred, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_output_goes_to_the_log_and_the_tail(caplog):
    caplog.set_level(logging.INFO, logger="qwen_serve.engine")
    code = "import sys; print('hello from rank', flush=True); print('oops', file=sys.stderr, flush=True); sys.exit(3)"
    p = EngineProcess([sys.executable, "-c", code], {}, rank=1, replica_id="r-1")
    p.start()
    assert poll(lambda: not p.alive() and len(p.tail()) == 2)
    assert p.tail() == ["hello from rank", "oops"]
    assert p.returncode() == 3
    assert "exited with code 3" in p.describe_exit()
    assert "oops" in p.describe_exit()
    records = [r for r in caplog.records if r.getMessage() == "hello from rank"]
    assert records
    assert (records[0].rank, records[0].replica_id) == (1, "r-1")  # type: ignore[attr-defined]
    p.stop(grace_s=1)


def test_env_reaches_the_engine(tmp_path):
    out = tmp_path / "env.txt"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ['CUDA_VISIBLE_DEVICES'])"
    p = EngineProcess([sys.executable, "-c", code], {"CUDA_VISIBLE_DEVICES": "4,5"}, rank=0)
    p.start()
    assert poll(lambda: not p.alive())
    assert out.read_text() == "4,5"


def test_stop_kills_the_whole_process_group_even_if_sigterm_is_ignored():
    # The engine ignores SIGTERM and leaves a grandchild that ignores it too (like an engine's
    # scheduler subprocesses): both must be gone after stop().
    code = textwrap.dedent(
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        print(child.pid, flush=True)
        time.sleep(600)
        """
    )
    p = EngineProcess([sys.executable, "-c", code], {}, rank=0)
    pid = p.start()
    assert poll(lambda: bool(p.tail()))
    grandchild = int(p.tail()[0])
    assert psutil.pid_exists(grandchild)
    code_ = p.stop(grace_s=0.5)
    assert code_ is not None
    assert code_ < 0  # killed by a signal
    assert gone(pid)
    assert poll(lambda: gone(grandchild))
    assert p.stop(grace_s=0.5) == code_  # idempotent


def test_no_supervisor_code_runs_in_the_engine_before_exec(tmp_path):
    # A supervisor with an at-fork hook (as a Ray worker has, through the gRPC it loads) starts an
    # engine. Started through a preexec_fn, the child would be a fork() that runs the hook before
    # exec; gRPC's hook restarts a poller there, and close_fds then makes it abort. The launcher
    # path is vfork + exec: the hook never runs, yet the engine still starts.
    marker = tmp_path / "hook-ran-in-child"
    out = tmp_path / "engine-ran"
    sup = textwrap.dedent(
        f"""
        import os, sys, time
        from serving.replica.process import EngineProcess
        os.register_at_fork(after_in_child=lambda: open({str(marker)!r}, "a").write("forked"))
        p = EngineProcess([sys.executable, "-c", "open({str(out)!r}, 'w').write('ok')"], {{}}, rank=0)
        p.start()
        while p.alive():
            time.sleep(0.05)
        sys.exit(p.returncode())
        """
    )
    done = subprocess.run([sys.executable, "-c", sup], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "ok"
    assert not marker.exists()


def test_launcher_kills_itself_when_its_supervisor_is_already_gone():
    # The supervisor died between spawning the launcher and the launcher arming the death signal:
    # its parent is then no longer the supervisor (here: pid 0, never its parent), and the
    # launcher must not become an orphan engine.
    launcher = process._LAUNCHER
    done = subprocess.run([sys.executable, launcher, "0", "/bin/true", "true"], check=False, timeout=30)
    assert done.returncode == -signal.SIGKILL


def test_launcher_names_a_program_it_cannot_execute(tmp_path):
    data = tmp_path / "not-a-program"
    data.write_text("plain text")
    data.chmod(0o755)
    launcher = process._LAUNCHER
    done = subprocess.run([sys.executable, launcher, str(os.getpid()), str(data), "x"], check=False,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 126
    assert f"cannot execute {str(data)!r}" in done.stderr


def test_a_missing_engine_program_names_engine_binary():
    p = EngineProcess(["no-such-engine-program"], {}, rank=0)
    with pytest.raises(FileNotFoundError, match=re.escape("engine.binary: 'no-such-engine-program' not found")):
        p.start()
    assert not p.alive()


def test_engine_dies_when_its_supervisor_is_killed():
    # A supervisor process starts an engine through EngineProcess, then is SIGKILLed (as Ray does
    # to a replica past its deadline): PR_SET_PDEATHSIG takes the engine down with it.
    sup = textwrap.dedent(
        """
        import sys, time
        from serving.replica.process import EngineProcess
        p = EngineProcess([sys.executable, "-c", "import time; time.sleep(600)"], {}, rank=0)
        print(p.start(), flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", sup], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        engine_pid = int(proc.stdout.readline())
        assert psutil.pid_exists(engine_pid)
        proc.kill()
        proc.wait(timeout=30)
        assert poll(lambda: gone(engine_pid))
    finally:
        proc.kill()
