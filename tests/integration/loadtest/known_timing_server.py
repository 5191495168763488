"""A tiny OpenAI-style SSE server with exactly known timing, for proving the load generator's clock.

    python known_timing_server.py PORT TTFT_S TPOT_S

Each chat completion sleeps TTFT_S, sends the first token, then one token every TPOT_S until
``max_tokens``, then a usage chunk and ``data: [DONE]`` — each event in its own HTTP chunk, so a
reader that waits for a fixed-size buffer to fill would see several tokens at once.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: object) -> bytes:
    return _chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ttft: float, tpot: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method = lines[0].split(" ", 1)[0]
            headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "GET":
                msg = b'{"status":"ok"}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(msg), msg)
                )
                await writer.drain()
                continue
            req = json.loads(body)
            n = int(req.get("max_tokens") or 16)
            t0 = time.monotonic()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(_event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}))
            await writer.drain()
            for i in range(n):
                await _sleep_until(t0 + ttft + i * tpot)
                delta = {"reasoning_content": "think"} if i == 0 else {"content": f" w{i}"}
                writer.write(_event({"choices": [{"index": 0, "delta": delta}], "usage": None}))
                await writer.drain()
            usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": n + 7}
            writer.write(_event({"choices": [], "usage": usage}))
            writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    port, ttft, tpot = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    server = await asyncio.start_server(lambda r, w: handle(r, w, ttft, tpot), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
