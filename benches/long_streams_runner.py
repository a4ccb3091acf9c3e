"""Runs N concurrent long chat-completion streams through one client, in a process of its own,
and prints one JSON object: CPU per event, memory per open stream, event lateness, errors, and
the descriptors and memory before, at the peak and after.

    long_streams_runner.py CLIENT BASE_URL N [ROUNDS]

CLIENT: fast_litellm-h1, fast_litellm-h2 (cleartext HTTP/2, prior knowledge), aiohttp (a raw
ClientSession, no httpx), litellm-aiohttp (LiteLLM's aiohttp transport under httpx), httpx
(httpx's own transport), litellm-plain / litellm-fast (`litellm.acompletion(stream=True)`
without / with fast_litellm imported). Pools are uncapped (N connections may really be open at
once), except in litellm-plain / litellm-fast, which run with LiteLLM's and fast_litellm's
defaults as a user gets them. ROUNDS > 1 runs the N streams again and again and reports the
memory and descriptors after each round (the leak check).

Each event carries the server's CLOCK_MONOTONIC when it was sent (benches/long_streams_server.rs);
its lateness is the client's clock when the event is read minus that.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# LiteLLM's aiohttp connector, uncapped for the transport rows (a value <= 0 means aiohttp's 100).
UNCAPPED = 1_000_000
sys.path.insert(0, os.path.dirname(__file__))

from percentiles import nearest_rank  # noqa: E402

PAYLOAD = {"model": "gpt-bench", "messages": [{"role": "user", "content": "Hello!"}], "stream": True}
ACOMPLETION = ("litellm-plain", "litellm-fast")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") / 1024


def rss_kb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_KB


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def python_kb() -> float:
    """What Python's allocator holds, when BENCH_TRACEMALLOC=1 (a diagnostic run: it costs CPU)."""
    import tracemalloc

    return tracemalloc.get_traced_memory()[0] / 1024 if tracemalloc.is_tracing() else 0.0


def sent_at(text: str) -> float:
    """The server's send time in an event (or a chunk's content): the number after 't='."""
    start = text.index("t=") + 2
    return float(text[start:text.index(" ", start)])


class Client:
    """Opens one stream and hands each event's text to `on_event`; `close()` at the end."""

    def __init__(self, name: str, base: str, n: int):
        self.name, self.url = name, f"{base}/v1/chat/completions"
        self.pool = None
        if name == "aiohttp":
            import aiohttp

            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            return
        if name in ACOMPLETION:
            if name == "litellm-fast":
                import fast_litellm  # noqa: F401  (its hooks carry LiteLLM's requests)
            import litellm

            self.litellm, self.base = litellm, f"{base}/v1"
            return
        import httpx

        if name.startswith("fast_litellm"):
            import fast_litellm

            self.pool = fast_litellm.SimpleConnectionPool("long-streams", max_connections=n + 10,
                                                          max_connections_per_endpoint=n + 10)
            h2 = name == "fast_litellm-h2"
            transport = fast_litellm.AsyncHTTPTransport(self.pool, http1=not h2, http2=h2)
        elif name == "httpx":
            transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))
        elif name == "litellm-aiohttp":
            from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

            transport = AsyncHTTPHandler.create_aiohttp_transport()
        else:
            raise ValueError(name)
        self.client = httpx.AsyncClient(transport=transport, timeout=120)

    async def stream(self, on_event) -> None:
        if self.name == "aiohttp":
            async with self.session.post(self.url, json=PAYLOAD) as r:
                r.raise_for_status()
                async for line in r.content:
                    if line.startswith(b"data: {"):
                        on_event(line.decode())
        elif self.name in ACOMPLETION:
            response = await self.litellm.acompletion(
                model="openai/gpt-bench", api_base=self.base, api_key="sk-bench", stream=True,
                messages=PAYLOAD["messages"])
            async for chunk in response:
                content = chunk.choices[0].delta.content
                if content:
                    on_event(content)
        else:
            async with self.client.stream("POST", self.url, json=PAYLOAD) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        on_event(line)

    async def close(self) -> None:
        if self.name == "aiohttp":
            await self.session.close()
        elif self.name not in ACOMPLETION:
            await self.client.aclose()
        if self.pool is not None:  # the pool outlives its transports: its idle connections close here
            self.pool.configure(idle_timeout=1e-6)
            await asyncio.sleep(0.01)
            self.pool.cleanup()


async def server_stats(base: str) -> dict:
    """The server's count of connections (a raw request: no client of the run is used)."""
    host, port = base.split("//")[1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /stats HTTP/1.1\r\nhost: bench\r\ncontent-length: 0\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    body = await reader.readexactly(length)
    writer.close()
    return json.loads(body)


async def one_round(client: Client, n: int) -> dict:
    lateness: list[tuple[float, float]] = []  # (sent, late): every event after a stream's first
    first_lateness: list[float] = []  # a stream's first event: connecting and queueing show here
    ramp_end = 0.0  # when the last stream's first event arrived: every stream is open from here
    errors: dict[str, int] = {}
    open_now = 0
    peak = {"open": 0, "rss_kb": 0.0, "fds": 0, "python_kb": 0.0}
    events = 0

    async def one() -> None:
        nonlocal open_now, events
        first = True

        def on_event(text: str) -> None:
            nonlocal open_now, events, first, ramp_end
            now, sent = time.monotonic(), sent_at(text)
            events += 1
            if first:
                first = False
                open_now += 1
                first_lateness.append(now - sent)
                ramp_end = max(ramp_end, now)
            else:
                lateness.append((sent, now - sent))

        try:
            await client.stream(on_event)
        except Exception as exc:  # counted and reported: a benchmark row with errors says so
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        finally:
            if not first:
                open_now -= 1

    async def sample() -> None:
        # The memory with the most streams open at once (every stream open, unless some wait).
        while True:
            await asyncio.sleep(0.2)
            if open_now >= peak["open"]:
                peak.update(open=open_now, rss_kb=rss_kb(), fds=fds(), python_kb=python_kb())

    sampler = asyncio.create_task(sample())
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    sampler.cancel()
    # Steady: the events sent once every stream was open. Before that the client is still
    # sending requests (its event loop busy with them), which shows in every event of the time.
    steady = sorted(late for sent, late in lateness if sent > ramp_end)
    first_lateness.sort()
    every = sorted([late for _, late in lateness] + first_lateness)
    return {
        "events": events, "errors": errors, "wall_s": wall, "cpu_s": cpu,
        "cpu_us_per_event": cpu / max(events, 1) * 1e6, "cores_used": cpu / wall,
        "lateness_p50_ms": nearest_rank(every, 50) * 1e3 if every else None,
        "lateness_p99_ms": nearest_rank(every, 99) * 1e3 if every else None,
        "steady_p99_ms": nearest_rank(steady, 99) * 1e3 if steady else None,
        "first_p99_ms": nearest_rank(first_lateness, 99) * 1e3 if first_lateness else None,
        "peak_open": peak["open"], "peak_rss_kb": peak["rss_kb"], "peak_fds": peak["fds"],
        "peak_python_kb": peak["python_kb"],
    }


async def main(name: str, base: str, n: int, rounds: int) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    client = Client(name, base, n)
    # Warm-up: imports, the first connection and any lazily built state, out of the figures.
    await asyncio.gather(*(client.stream(lambda _: None) for _ in range(2)))
    gc.collect()
    connections0 = (await server_stats(base))["connections"]
    if os.environ.get("BENCH_TRACEMALLOC") == "1":
        import tracemalloc

        tracemalloc.start()
    start = {"rss_kb": rss_kb(), "fds": fds(), "python_kb": python_kb()}
    result = await one_round(client, n)
    result["python_kb_per_stream"] = (result["peak_python_kb"] - start["python_kb"]) / max(result["peak_open"], 1)
    result["connections"] = (await server_stats(base))["connections"] - connections0
    result["rss_kb_per_stream"] = (result["peak_rss_kb"] - start["rss_kb"]) / max(result["peak_open"], 1)
    after = []  # each later round: what is left once it has ended (the client still open)
    for _ in range(rounds - 1):
        gc.collect()
        after.append({"rss_kb": rss_kb(), "fds": fds()})
        await one_round(client, n)
    gc.collect()
    after.append({"rss_kb": rss_kb(), "fds": fds()})
    await client.close()
    await asyncio.sleep(0.2)  # closed sockets leave
    gc.collect()
    result.update(start=start, after_rounds=after, closed={"rss_kb": rss_kb(), "fds": fds()}, n=n,
                  client=name)
    return result


if __name__ == "__main__":
    name, base, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    if name == "litellm-aiohttp":
        os.environ["AIOHTTP_CONNECTOR_LIMIT"] = os.environ["AIOHTTP_CONNECTOR_LIMIT_PER_HOST"] = str(UNCAPPED)
    print(json.dumps(asyncio.run(main(name, base, n, rounds))))
