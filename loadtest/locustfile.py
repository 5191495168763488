"""The locustfile for Locust's own command line: web UI, headless and distributed runs.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --scenario chat --model qwen3.6-27b
    locust -f loadtest/locustfile.py --master …   /   locust -f loadtest/locustfile.py --worker
    (``loadtest locust …`` runs the same with this file filled in.)

Every process writes its own JSON lines (``--records DIR`` → ``DIR/records-<host>-<pid>.jsonl``);
``--arrival-rate R`` switches to open loop with R requests/s *per process* (Poisson, shared pacer).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from locust import events

from loadtest.pacer import PoissonPacer
from loadtest.records import JsonlWriter
from loadtest.scenarios import load_scenario
from loadtest.user import OpenAIStreamUser, UserConfig

_WRITER: list[JsonlWriter] = []


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    g = parser  # Locust's parser: include_in_web_ui / is_secret work on top-level options only
    g.add_argument("--scenario", default="chat", help="built-in scenario or YAML file", include_in_web_ui=True)
    g.add_argument("--model", default="qwen3.6-27b", help="model name sent in requests", include_in_web_ui=True)
    g.add_argument("--api-key", default=os.environ.get("LOADTEST_API_KEY", ""), help="bearer key", is_secret=True)
    g.add_argument("--records", default="runs/locust", help="directory for per-request JSON lines")
    g.add_argument("--arrival-rate", type=float, default=0.0, help="open loop: requests/s per process (0: closed)")
    g.add_argument("--seed", type=int, default=0)
    for name, default in (
        ("--step-start", 4), ("--step-users", 4), ("--step-seconds", 60), ("--steps", 8),
        ("--burst-base", 4), ("--burst-peak", 32), ("--burst-period", 300), ("--burst-seconds", 60),
        ("--burst-total", 1200),
    ):  # fmt: skip
        g.add_argument(name, type=float, default=default, help="load shape parameter (profiles/step.py, burst.py)")


@events.init.add_listener
@events.test_start.add_listener
def _configure(environment: Any, **_: Any) -> None:
    """At start-up (shapes spawn before test_start reaches every listener) and again at each test
    start, so options edited in the web UI apply."""
    o = environment.parsed_options
    if o is None:
        return
    if not _WRITER:
        _WRITER.append(JsonlWriter(Path(o.records) / f"records-{socket.gethostname()}-{os.getpid()}.jsonl"))
    writer = _WRITER[0]
    StreamUser.config = UserConfig(
        scenario=load_scenario(o.scenario),
        model=o.model,
        api_key=o.api_key or None,
        writer=writer,
        pacer=PoissonPacer(o.arrival_rate, seed=o.seed) if o.arrival_rate > 0 else None,
        load=o.arrival_rate or float(o.num_users or 0),
        seed=o.seed,
    )


@events.test_stop.add_listener
def _flush(**_: Any) -> None:
    for w in _WRITER:
        w.flush()


@events.quit.add_listener
def _close(**_: Any) -> None:
    while _WRITER:
        _WRITER.pop().close()


class StreamUser(OpenAIStreamUser):
    """Configured from the command line at start-up and at each test start."""

    abstract = False
