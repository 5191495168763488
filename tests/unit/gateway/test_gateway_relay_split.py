"""The SSE rewriter's output and counts do not depend on how the engine's bytes are cut into reads
(the pass-through fast path and the event-by-event path must agree)."""

from __future__ import annotations

import random

import pytest

from serving.gateway.relay import SseRewriter, StreamStats

pytestmark = pytest.mark.unit


# Token chunks as engines send them: vLLM's reasoning field (renamed), SGLang's chunk with every
# field and nulls kept (its stream models drop unset ones such as tool_calls; an engine behind a
# serializer that keeps them must work too), reasoning deltas with text, empty and null, with and
# without a space.
TOKEN_EVENTS = (
    b'data: {"choices":[{"delta":{"reasoning":"t%d"}}],"usage":null}',
    b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":'
    b'{"role":null,"content":"t%d","reasoning_content":null,"tool_calls":null},"logprobs":null,'
    b'"finish_reason":null,"matched_stop":null}],"usage":null}',
    b'data: {"choices":[{"delta":{"role":null,"content":null,"reasoning_content":"r%d","tool_calls":null}}],'
    b'"usage":null}',
    b'data: {"choices":[{"delta":{"reasoning_content": "r%d"}}]}',
    b'data: {"choices":[{"delta":{"reasoning_content":"","content":"c%d"}}]}',
    b'data: {"choices":[{"text":"\\"usage\\":{ t%d"}]}',
)


def _stream(rng: random.Random) -> bytes:
    events = []
    for i in range(rng.randint(0, 30)):
        events.append(rng.choice(TOKEN_EVENTS) % i)
        if rng.random() < 0.05:
            events.append(b"")  # a blank event: dropped
    if rng.random() < 0.1:
        events.append(b'data: {"error": {"message": "boom"}}')
    if rng.random() < 0.3:
        events.insert(rng.randint(0, len(events)), b'data: {"choices":[{"delta":{}}],"usage": {"prompt_tokens":1}}')
    if rng.random() < 0.8:
        events.append(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":%d}}' % len(events))
    if rng.random() < 0.9:
        events.append(b"data: [DONE]")
    sep = b"\r\n\r\n" if rng.random() < 0.2 else b"\n\n"
    return sep.join(events) + sep


def _run(pieces: list[bytes], keep_usage: bool, rename: bytes | None) -> tuple[list[bytes], tuple[object, ...]]:
    stats = StreamStats()
    rw = SseRewriter(stats, keep_usage=keep_usage, rename_reasoning=rename)
    out = b"".join(rw.feed(p) for p in pieces) + rw.flush()
    events = [e for e in out.split(b"\n\n") if e.strip()]
    usage = None if stats.usage is None else (stats.usage.prompt_tokens, stats.usage.completion_tokens)
    return events, (stats.chunks, stats.reasoning_counted, usage, stats.error, stats.completed)


@pytest.mark.parametrize("seed", range(20))
def test_any_cut_into_reads_gives_the_events_and_counts_of_one_read(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        data = _stream(rng)
        keep, rename = rng.random() < 0.5, (b'"reasoning":' if rng.random() < 0.5 else None)
        whole = _run([data], keep, rename)
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data), rng.randint(1, 12))))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert _run(pieces, keep, rename) == whole, (data, pieces)
        sep = b"\r\n\r\n" if b"\r" in data else b"\n\n"
        one_event_each = [e + sep for e in data.split(sep)[:-1]]  # the common read: one whole event
        assert _run(one_event_each, keep, rename) == whole, (data, one_event_each)


def test_one_read_reference_is_right() -> None:
    """The whole-stream reference itself: usage taken and dropped, reasoning renamed, done."""
    data = (
        b'data: {"choices":[{"delta":{"reasoning":"a"}}],"usage":null}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
        b"data: [DONE]\n\n"
    )
    events, (chunks, reasoning, usage, error, completed) = _run([data], False, b'"reasoning":')
    assert events == [b'data: {"choices":[{"delta":{"reasoning_content":"a"}}],"usage":null}', b"data: [DONE]"]
    assert (chunks, reasoning, usage, error, completed) == (1, 1, (3, 1), None, True)


def test_one_read_reference_counts_reasoning_deltas_with_text_only() -> None:
    """SGLang's chunks carry ``"reasoning_content":null`` beside every answer token: only a delta
    with reasoning text counts, with or without a space after the colon, in one read or many."""
    data = b"".join(e % i + b"\n\n" for i, e in enumerate(TOKEN_EVENTS[1:5])) + b"data: [DONE]\n\n"
    whole = _run([data], True, None)
    assert whole[1][:2] == (4, 2)
    assert _run([e + b"\n\n" for e in data.split(b"\n\n")[:-1]], True, None) == whole
