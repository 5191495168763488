"""`make serve`'s path: the local default (llama.cpp on the shipped SmolLM2 GGUF) through Ray +
HAProxy ingress + gateway, real text from the official openai client, and no engine left behind
after shutdown."""

from __future__ import annotations

import time

import openai
import pytest

from tests.e2e.stack import engine_processes, running_stack, stack_settings

pytestmark = [pytest.mark.e2e, pytest.mark.llama_server]  # needs the llama-server build


def test_local_default_streams_real_text_and_stops_cleanly():
    before = {p.pid for p in engine_processes()}
    s = stack_settings()  # the defaults: llamacpp + smollm2-135m
    with running_stack(s) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        stream = client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=24,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert sum(ch.isalpha() for ch in text) >= 5, text  # words, from the real model
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens > 0
        ours = {p.pid for p in engine_processes()} - before
        assert ours, "no llama-server process was started"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and ours & {p.pid for p in engine_processes()}:
        time.sleep(0.5)
    assert not ours & {p.pid for p in engine_processes()}, "an engine outlived the stack"
