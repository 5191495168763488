"""The load client, run as its own process so its CPU is measured apart from the servers.

``python -m bench.client '<json spec>'``. Protocol on stdio with the harness: the client warms up,
prints ``{"phase": "warm"}``, waits for a line on stdin, runs the measured load, prints one JSON
result line and exits. The harness snapshots every process's CPU between those two lines.

Streams are read with aiohttp (C HTTP parser, pooled HTTP/1.1 connections) and counted without
decoding JSON: a token is an SSE event carrying non-empty ``content`` or ``reasoning_content``.
Conversation mode (routing workload) decodes events, since each turn's answer goes into the next
turn's prompt.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import aiohttp

from bench.stats import RequestResult
from loadtest.sse import parse_data_line, split_delta

TOKEN_RE = re.compile(rb'content":\s*"(?!")')  # content or reasoning_content, non-empty
USAGE_RE = re.compile(rb'"usage":\s*\{')


@dataclass
class Spec:
    url: str  # base URL, e.g. http://127.0.0.1:8000
    model: str
    concurrency: int = 64
    requests: int = 512  # measured requests (stream mode)
    duration_s: float = 0.0  # stream mode: closed-loop streams for this long instead of ``requests``
    warmup: int = 64
    max_tokens: int = 128
    prompt: str = "Write a short story about a lighthouse keeper."
    timeout_s: float = 120.0
    mode: str = "stream"  # stream | conversations | step
    # step mode: closed-loop streams following [[duration_s, concurrency], ...]
    schedule: list[list[float]] = field(default_factory=list)
    # conversations mode: ``conversations`` agent sessions of ``turns`` turns, ``concurrency`` at once
    conversations: int = 16
    turns: int = 6
    extra_body: dict[str, Any] = field(default_factory=dict)
    result_path: str = ""  # where the results JSON goes (stdout only carries the short protocol lines)


def _payload(spec: Spec, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "model": spec.model,
        "messages": messages,
        "max_tokens": spec.max_tokens,
        "stream": True,
        "ignore_eos": True,
        "temperature": 0.0,
        # tokens are counted from usage: with MTP one event carries several tokens (SGLang's shape)
        "stream_options": {"include_usage": True},
        **spec.extra_body,
    }


async def stream_once(
    session: aiohttp.ClientSession, spec: Spec, messages: list[dict[str, str]], *, want_text: bool = False
) -> tuple[RequestResult, str]:
    """One streamed chat completion; (result, answer text if ``want_text``)."""
    t0 = time.perf_counter()
    ttft: float | None = None
    events = 0
    text: list[str] = []
    usage: dict[str, Any] = {}
    buf = b""
    try:
        async with session.post(f"{spec.url}/v1/chat/completions", json=_payload(spec, messages)) as resp:
            if resp.status != 200:
                body = (await resp.read())[:300].decode(errors="replace")
                return RequestResult(False, None, time.perf_counter() - t0, 0, f"HTTP {resp.status}: {body}"), ""
            async for chunk in resp.content.iter_any():
                buf += chunk
                if b"\n\n" not in buf:
                    continue
                *chunks, buf = buf.split(b"\n\n")
                for ev in chunks:
                    if want_text:
                        n = _decode_event(ev, text, usage)
                    else:
                        n = 1 if TOKEN_RE.search(ev) else 0
                        if USAGE_RE.search(ev):
                            _decode_event(ev, text, usage)
                    if n:
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        events += n
    except (aiohttp.ClientError, TimeoutError) as exc:
        return RequestResult(False, ttft, time.perf_counter() - t0, events, f"{type(exc).__name__}: {exc}"), ""
    if events == 0:
        return RequestResult(False, None, time.perf_counter() - t0, 0, "stream ended without a token"), ""
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    tokens = int(usage.get("completion_tokens") or events)
    res = RequestResult(True, ttft, time.perf_counter() - t0, tokens, None, usage.get("prompt_tokens"), cached,
                        events=events)  # fmt: skip
    return res, "".join(text)


def _decode_event(ev: bytes, text: list[str], usage: dict[str, Any] | None = None) -> int:
    """1 when the event carries a token (reasoning or answer), else 0; the answer text goes to
    ``text`` and any usage to ``usage``. Parsed by the load tester's SSE reader."""
    data = parse_data_line(ev)
    if data is None or data.done or data.malformed is not None:
        return 0
    if usage is not None and isinstance(data.obj.get("usage"), dict):
        usage.update(data.obj["usage"])
    n = 0
    for choice in data.obj.get("choices") or []:
        reasoning, answer = split_delta(choice.get("delta") or {})
        if reasoning or answer:
            n = 1
        if answer:
            text.append(answer)
    return n


async def run_streams(
    session: aiohttp.ClientSession, spec: Spec, n: int, duration_s: float = 0.0
) -> list[RequestResult]:
    """``n`` requests over ``spec.concurrency`` closed-loop streams; with ``duration_s``, as many as
    the streams complete in that time (none starts after it)."""
    results: list[RequestResult] = []
    deadline = time.perf_counter() + duration_s
    counter = (
        iter(range(n))
        if duration_s <= 0
        else itertools.takewhile(lambda _: time.perf_counter() < deadline, itertools.count())
    )

    async def worker(w: int) -> None:
        for i in counter:
            msg = [{"role": "user", "content": f"{spec.prompt} (request {i}, stream {w})"}]
            r, _ = await stream_once(session, spec, msg)
            results.append(r)

    await asyncio.gather(*(worker(w) for w in range(min(spec.concurrency, n) if duration_s <= 0 else spec.concurrency)))
    return results


# --- the multi-turn coding-agent workload (routing gain) ---------------------------------------

AGENT_SYSTEM = (
    "You are a coding agent working inside a git repository. You can call tools: read_file(path), "
    "write_file(path, content), run(cmd), search(pattern). Think step by step, keep edits minimal, "
    "run the tests after every change, and explain what you changed. Never invent file contents: "
    "read a file before editing it. "
) * 3


def agent_task(conv: int) -> str:
    files = "\n".join(f"src/module_{conv}_{k}.py  ({(conv * 37 + k * 11) % 900 + 100} lines)" for k in range(24))
    return (
        f"Repository #{conv}: a service with {24} modules.\n{files}\n"
        f"Task {conv}: the function parse_config in src/module_{conv}_3.py rejects valid YAML anchors; "
        "find the cause, fix it and add a regression test."
    )


def tool_result(conv: int, turn: int) -> str:
    body = "\n".join(f"    line_{i} = compute_{conv}_{turn}({i}, cache=cache_{i % 7})" for i in range(18))
    return f"[tool result: read_file src/module_{conv}_{turn}.py]\ndef handler_{conv}_{turn}(cache):\n{body}\n"


async def run_conversations(session: aiohttp.ClientSession, spec: Spec) -> list[RequestResult]:
    results: list[RequestResult] = []
    gate = asyncio.Semaphore(spec.concurrency)
    conv_spec = Spec(**{**asdict(spec), "extra_body": {**spec.extra_body, "stream_options": {"include_usage": True}}})

    async def conversation(c: int) -> None:
        async with gate:
            messages = [{"role": "system", "content": AGENT_SYSTEM}, {"role": "user", "content": agent_task(c)}]
            for t in range(spec.turns):
                r, answer = await stream_once(session, conv_spec, messages, want_text=True)
                results.append(replace(r, turn=t))
                if not r.ok:
                    return
                messages.append({"role": "assistant", "content": answer or f"(turn {t})"})
                messages.append({"role": "user", "content": tool_result(c, t)})

    await asyncio.gather(*(conversation(c) for c in range(spec.conversations)))
    return results


async def run_schedule(session: aiohttp.ClientSession, spec: Spec) -> list[RequestResult]:
    """Closed-loop streams whose number follows ``spec.schedule``; each result carries its start."""
    results: list[RequestResult] = []
    t0 = time.perf_counter()
    bounds: list[tuple[float, int]] = []
    end = 0.0
    for duration, conc in spec.schedule:
        end += duration
        bounds.append((end, int(conc)))

    def wanted(now: float) -> int:
        return next((c for e, c in bounds if now < e), -1)

    async def worker(w: int) -> None:
        i = 0
        while True:
            now = time.perf_counter() - t0
            want = wanted(now)
            if want < 0:
                return
            if w >= want:
                await asyncio.sleep(0.05)
                continue
            msg = [{"role": "user", "content": f"{spec.prompt} (stream {w}, request {i})"}]
            r, _ = await stream_once(session, spec, msg)
            results.append(replace(r, start_s=now))
            i += 1

    top = max((c for _, c in bounds), default=0)
    await asyncio.gather(*(worker(w) for w in range(top)))
    return results


async def main_async(spec: Spec) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    top = max([spec.concurrency, *(int(c) for _, c in spec.schedule)])
    connector = aiohttp.TCPConnector(limit=top + 8, force_close=False)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        if spec.warmup:
            warm = Spec(**{**asdict(spec), "requests": spec.warmup, "max_tokens": min(spec.max_tokens, 16)})
            await run_streams(session, warm, spec.warmup)
        print(json.dumps({"phase": "warm"}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        t0 = time.perf_counter()
        if spec.mode == "conversations":
            results = await run_conversations(session, spec)
        elif spec.mode == "step":
            results = await run_schedule(session, spec)
        else:
            results = await run_streams(session, spec, spec.requests, spec.duration_s)
        wall = time.perf_counter() - t0
    return {"phase": "done", "wall_s": wall, "results": [asdict(r) for r in results]}


def main() -> None:
    spec = Spec(**json.loads(sys.argv[1]))
    try:
        import uvloop

        out = uvloop.run(main_async(spec))
    except ImportError:
        out = asyncio.run(main_async(spec))
    if spec.result_path:
        with open(spec.result_path, "w") as f:
            json.dump(out, f)
        print(json.dumps({"phase": "done", "result_path": spec.result_path}), flush=True)
    else:
        print(json.dumps(out), flush=True)
    sys.stdin.readline()  # stay alive until the harness has read this process's CPU


if __name__ == "__main__":
    main()
