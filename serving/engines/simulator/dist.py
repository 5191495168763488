"""Multi-node rendezvous of one simulated instance over TCP (``--dist-init-addr host:port``).

Rank 0 listens on the dist-init port; rank r ≥ 1 connects, sends ``HELLO r``, then ``HB`` lines every
heartbeat period; rank 0 answers with ``HB`` lines. Rank 0 counts a rank as lost when its connection
closes or is silent for 3 periods — permanently: the instance must be replaced as a whole. A rank ≥ 1
exits (status 1) when rank 0 goes away, and gives up after ``--dist-timeout`` (default 600 s) if
rank 0 never answers. Ranks ≥ 1 serve no HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

log = logging.getLogger("serving.simulator.dist")


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class Rank0:
    def __init__(self, nnodes: int, addr: str, heartbeat_s: float) -> None:
        self.nnodes, self.addr, self.hb = nnodes, addr, heartbeat_s
        self.joined: set[int] = set()
        self.lost: set[int] = set()
        self._server: asyncio.Server | None = None

    @property
    def complete(self) -> bool:
        return len(self.joined) == self.nnodes - 1 and not self.lost

    def problem(self) -> str | None:
        if self.lost:
            return ", ".join(f"rank {r} lost" for r in sorted(self.lost))
        missing = [r for r in range(1, self.nnodes) if r not in self.joined]
        return f"waiting for ranks {missing} to join" if missing else None

    def status(self) -> dict[str, object]:
        return {"nnodes": self.nnodes, "joined": sorted(self.joined), "lost": sorted(self.lost), "ready": self.complete}

    async def start(self) -> None:
        host, port = split_addr(self.addr)
        self._server = await asyncio.start_server(self._serve, host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rank: int | None = None
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            parts = line.decode().split()
            if len(parts) != 2 or parts[0] != "HELLO" or not parts[1].isdigit():
                return
            rank = int(parts[1])
            if not 1 <= rank < self.nnodes or rank in self.joined or rank in self.lost:
                writer.write(b"REJECT\n")
                rank = None
                return
            self.joined.add(rank)
            log.info("rank %d joined (%d/%d)", rank, len(self.joined) + 1, self.nnodes)
            sender = asyncio.create_task(self._beat(writer))
            try:
                while True:
                    line = await asyncio.wait_for(reader.readline(), 3 * self.hb)
                    if not line:
                        break
            finally:
                sender.cancel()
        except (TimeoutError, OSError, UnicodeDecodeError):
            pass
        finally:
            if rank is not None:
                self.lost.add(rank)
                log.error("rank %d lost: the instance must be replaced", rank)
            writer.close()

    async def _beat(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                writer.write(b"HB\n")
                await writer.drain()
                await asyncio.sleep(self.hb)


async def follower(rank: int, addr: str, heartbeat_s: float, timeout_s: float) -> int:
    """Join rank 0 and stay joined; returns the exit status when rank 0 goes away."""
    host, port = split_addr(addr)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            break
        except OSError:
            if loop.time() > deadline:
                print(f"rank {rank}: rank 0 at {addr} did not answer in {timeout_s:.0f} s", file=sys.stderr)
                return 1
            await asyncio.sleep(0.2)
    writer.write(f"HELLO {rank}\n".encode())
    await writer.drain()
    print(f"rank {rank}: joined rank 0 at {addr}", file=sys.stderr, flush=True)

    async def beat() -> None:
        with contextlib.suppress(OSError):
            while True:
                writer.write(b"HB\n")
                await writer.drain()
                await asyncio.sleep(heartbeat_s)

    sender = asyncio.create_task(beat())
    try:
        while True:
            line = await asyncio.wait_for(reader.readline(), 3 * heartbeat_s)
            if not line or line.strip() == b"REJECT":
                break
    except (TimeoutError, OSError):
        pass
    sender.cancel()
    print(f"rank {rank}: lost rank 0; exiting", file=sys.stderr, flush=True)
    return 1


def run_follower(rank: int, addr: str, heartbeat_s: float, timeout_s: float) -> None:
    os._exit(asyncio.run(follower(rank, addr, heartbeat_s, timeout_s)))
