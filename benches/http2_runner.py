"""Measures one HTTP/2-capable transport (or an HTTP/1.1 one for comparison) over TLS at one
concurrency, in a process of its own, and prints one JSON object: requests/s, latency
percentiles, CPU per request, and the connections the server accepted meanwhile.

    http2_runner.py TRANSPORT BASE_URL CA_FILE CONCURRENCY TOTAL {json|sse}
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, os.path.dirname(__file__))

from nginx_server import Nginx  # noqa: E402
from transport_runner import PAYLOAD, summarize  # noqa: E402


def transport(name: str, ca_file: str):
    import httpx

    if name.startswith("fast_litellm"):
        import fast_litellm

        pool = fast_litellm.SimpleConnectionPool("bench", reaper_interval=None, max_connections=1000,
                                                 max_connections_per_endpoint=1000)
        return fast_litellm.AsyncHTTPTransport(pool, verify=ca_file, http2=name == "fast_litellm-h2")
    context = ssl.create_default_context(cafile=ca_file)
    if name == "httpx-h2":
        return httpx.AsyncHTTPTransport(verify=context, http2=True,
                                        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000))
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

    if name == "litellm-h2":  # LiteLLM's own HTTP/2 path (httpx + h2 over "lanes" of connections)
        return AsyncHTTPHandler._create_httpx_transport(http2=True, verify=context)
    if name == "litellm-aiohttp":  # its default async transport, HTTP/1.1
        return AsyncHTTPHandler.create_aiohttp_transport(ssl_context=context)
    raise ValueError(name)


async def run(name, base, ca_file, concurrency, total, kind):
    import httpx

    client = httpx.AsyncClient(transport=transport(name, ca_file), timeout=60)
    url = f"{base}/sse" if kind == "sse" else f"{base}/v1/chat/completions"
    latencies = []
    versions = set()

    async def one():
        start = time.perf_counter()
        if kind == "sse":
            async with client.stream("POST", url, json=PAYLOAD) as r:
                r.raise_for_status()
                events = 0
                async for line in r.aiter_lines():
                    events += line.startswith("data:")
                assert events == 21, events
        else:
            r = await client.post(url, json=PAYLOAD)
            r.raise_for_status()
        versions.add(r.http_version)
        latencies.append(time.perf_counter() - start)

    async def worker(count):
        for _ in range(count):
            await one()

    await asyncio.gather(*[worker(5) for _ in range(concurrency)])  # warm up: connections opened
    latencies.clear()
    per_worker = max(1, total // concurrency)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*[worker(per_worker) for _ in range(concurrency)])
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await client.aclose()
    result = summarize(latencies, wall, cpu)
    result["versions"] = sorted(versions)
    return result


def main():
    name, base, ca_file, concurrency, total, kind = sys.argv[1:7]
    status = Nginx.status_reader(base, ca_file)
    before = status()
    result = asyncio.run(run(name, base, ca_file, int(concurrency), int(total), kind))
    result["connections"] = status() - before - 1  # less the status request of its own
    print(json.dumps(result))


if __name__ == "__main__":
    main()
