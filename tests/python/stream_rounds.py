"""Rounds of many concurrent event streams through one async transport, against the long-streams
server (benches/long_streams_server.rs, built with cargo, in a process of its own): after the
first round, every further round must find what the first left, no more. A finished stream that
kept its connection, its buffers or a future would show as connections the server accepted
again, descriptors or resident memory that grow from round to round, or tasks left pending.

Shared by tests/python/reliability/test_stream_rounds.py (short, in `make test`) and the stress run.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

import fast_litellm

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "target" / "release" / "examples" / "long_streams_server"
PAGE_KB = os.sysconf("SC_PAGE_SIZE") / 1024


class StreamServer:
    """The long-streams server, started on 127.0.0.1 for as long as the object lives."""

    def __init__(self) -> None:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "long_streams_server"], cwd=ROOT,
                       check=True)
        self._asked = 0
        self._scratch = tempfile.TemporaryDirectory()
        port_file = Path(self._scratch.name) / "port"
        self._process = subprocess.Popen([SERVER, port_file], stdin=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (port_file.exists() and port_file.read_text()):
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the long-streams server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port_file.read_text()}"

    def connections(self) -> int:
        """The connections the server accepted so far (counted on its side), less those of
        these questions (one each)."""
        self._asked += 1
        return json.loads(httpx.get(self.url + "/stats").text)["connections"] - self._asked

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=10)
        self._scratch.cleanup()


def rss_kb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_KB


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _round(client: httpx.AsyncClient, url: str, streams: int, events: int) -> int:
    # Each stream reads on only once every stream of the round has its first event: the round's
    # streams are then really open at once. Else, on a busy machine, the first could end before
    # the last begin, and a round would need fewer connections than it has streams.
    begun = 0
    all_begun = asyncio.Event()

    async def one() -> int:
        nonlocal begun
        received = 0
        async with client.stream("POST", url, json={"stream": True}) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                received += 1
                if received == 1:
                    begun += 1
                    if begun == streams:
                        all_begun.set()
                    await asyncio.wait_for(all_begun.wait(), 60)
        return received

    return sum(await asyncio.gather(*(one() for _ in range(streams))))


def run_rounds(server: StreamServer, streams: int, rounds: int, http2: bool = False, events: int = 5,
               interval: float = 0.05) -> dict:
    """`rounds` rounds of `streams` concurrent streams of `events` events: what each round left."""
    name = f"stream-rounds-{'h2' if http2 else 'h1'}-{os.getpid()}-{time.monotonic_ns()}"
    pool = fast_litellm.SimpleConnectionPool(name, max_connections=streams + 10,
                                             max_connections_per_endpoint=streams + 10, reaper_interval=None)
    url = f"{server.url}/v1/chat/completions?events={events}&interval={interval}"

    async def main() -> list:
        transport = fast_litellm.AsyncHTTPTransport(pool, http1=not http2, http2=http2)
        after = []
        async with httpx.AsyncClient(transport=transport, timeout=60) as client:
            before = server.connections()
            for _ in range(rounds):
                received = await _round(client, url, streams, events)
                gc.collect()
                stats = pool.get_stats()
                after.append({
                    "events": received, "connections": server.connections() - before, "fds": fds(),
                    "rss_kb": rss_kb(), "active": stats["active_connections"], "idle": stats["idle_connections"],
                    "tasks": len(asyncio.all_tasks()) - 1,
                })
        return after

    return {"streams": streams, "events": events, "rounds": asyncio.run(main())}
