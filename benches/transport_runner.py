"""Measures one transport at one concurrency in a process of its own and prints one JSON
object: requests/s, latency percentiles, CPU time per request (the whole process: Python and
the Rust runtime's threads)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import threading
import time

from percentiles import nearest_rank

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

PAYLOAD = {"model": "gpt-bench", "messages": [{"role": "user", "content": "Hello!"}]}


# Through a forward proxy (benches/test_proxied.py): BENCH_PROXY, and BENCH_CA to trust the target.
PROXY = os.environ.get("BENCH_PROXY")
CA = os.environ.get("BENCH_CA")


def _through_proxy() -> dict:
    """The transports' arguments for BENCH_PROXY / BENCH_CA (none when unset)."""
    if PROXY is None:
        return {}
    return {"proxy": PROXY, "verify": CA}


def _httpx_arguments() -> dict:
    import ssl

    arguments = _through_proxy()
    if arguments.get("verify"):
        arguments["verify"] = ssl.create_default_context(cafile=arguments["verify"])
    return arguments


def async_transport(name):
    import httpx

    if name == "fast_litellm":
        import fast_litellm

        return fast_litellm.AsyncHTTPTransport(fast_litellm.SimpleConnectionPool("bench", reaper_interval=None),
                                               **_through_proxy())
    if name == "httpx":
        return httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000),
                                        **_httpx_arguments())
    if name == "litellm-aiohttp":
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

        return AsyncHTTPHandler._create_aiohttp_transport()
    raise ValueError(name)


def sync_transport(name):
    import httpx

    if name == "fast_litellm":
        import fast_litellm

        return fast_litellm.HTTPTransport(fast_litellm.SimpleConnectionPool("bench", reaper_interval=None),
                                          **_through_proxy())
    if name == "httpx":
        return httpx.HTTPTransport(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000),
                                   **_httpx_arguments())
    raise ValueError(name)


def summarize(latencies, wall, cpu):
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "rps": n / wall,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": nearest_rank(latencies, 99) * 1e3,
        "cpu_ms_per_request": cpu / n * 1e3,
    }


async def run_async(name, url, concurrency, total):
    import httpx

    latencies = []
    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))

        async def one():
            start = time.perf_counter()
            async with session.post(url, json=PAYLOAD) as r:
                await r.read()
            latencies.append(time.perf_counter() - start)
    else:
        session = httpx.AsyncClient(transport=async_transport(name), timeout=60)

        async def one():
            start = time.perf_counter()
            r = await session.post(url, json=PAYLOAD)
            r.raise_for_status()
            latencies.append(time.perf_counter() - start)

    async def worker(count):
        for _ in range(count):
            await one()

    await asyncio.gather(*[worker(20) for _ in range(min(concurrency, 64))])  # warm up
    latencies.clear()
    per_worker = total // concurrency
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*[worker(per_worker) for _ in range(concurrency)])
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if name == "aiohttp":
        await session.close()
    else:
        await session.aclose()
    return summarize(latencies, wall, cpu)


def run_sync(name, url, threads, total):
    import httpx

    client = httpx.Client(transport=sync_transport(name), timeout=60)
    latencies = []
    lock = threading.Lock()

    def worker(count):
        mine = []
        for _ in range(count):
            start = time.perf_counter()
            client.post(url, json=PAYLOAD).raise_for_status()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    worker(50)
    latencies.clear()
    per_thread = total // threads
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ts = [threading.Thread(target=worker, args=(per_thread,)) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return summarize(latencies, wall, cpu)


def main():
    mode, name, url, concurrency, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    if mode == "async":
        result = asyncio.run(run_async(name, url, concurrency, total))
    else:
        result = run_sync(name, url, concurrency, total)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
