"""The load client of benches/test_litellm_proxy.py, in a process of its own (neither the backend's
threads nor pytest share its interpreter): N chat completions through a LiteLLM Proxy at a fixed
concurrency, over httpx.AsyncClient with httpx's own transport (fast_litellm is not imported here).
Prints one JSON line: requests/s, p50/p99 in ms (client side, every request; and every latency),
and what the
clients saw, counted by kind: "ok", "HTTP <status>", "stream without [DONE]", "error event in
stream", or the exception's name.

usage: proxy_load.py URL MASTER_KEY MODE N CONCURRENCY
  MODE: plain (non-streaming) | stream | mixed (every other request streams)
"""

import asyncio
import collections
import json
import statistics
import sys
import time

import httpx

from percentiles import nearest_rank

URL, KEY, MODE, N, CONCURRENCY = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])


def wants_stream(i: int) -> bool:
    return MODE == "stream" or (MODE == "mixed" and i % 2 == 1)


async def one(client: httpx.AsyncClient, i: int) -> str:
    stream = wants_stream(i)
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": f"hello {i}"}], "stream": stream}
    if not stream:
        r = await client.post("/v1/chat/completions", json=body)
        if r.status_code != 200:
            return f"HTTP {r.status_code}"
        return "ok" if r.json()["choices"][0]["message"]["content"] == f"echo: hello {i}" else "wrong answer"
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return f"HTTP {r.status_code}"
        events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return "stream without [DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    if any("error" in c for c in chunks):
        return "error event in stream"
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    return "ok" if text == f"echo: hello {i}" else "wrong answer"


async def main() -> None:
    outcomes: collections.Counter = collections.Counter()
    latencies: list = []
    queue = iter(range(N))
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=URL, headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
                                 limits=limits, transport=httpx.AsyncHTTPTransport(limits=limits)) as client:
        async def worker():
            for i in queue:
                start = time.perf_counter()
                try:
                    outcome = await one(client, i)
                except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                    outcome = type(exc).__name__
                latencies.append(time.perf_counter() - start)
                outcomes[outcome] += 1

        wall = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(CONCURRENCY)])
        wall = time.perf_counter() - wall
    latencies.sort()
    print(json.dumps({"requests": len(latencies), "rps": len(latencies) / wall, "seconds": wall,
                      "p50_ms": statistics.median(latencies) * 1e3,
                      "p99_ms": nearest_rank(latencies, 99) * 1e3,
                      "outcomes": dict(outcomes), "latencies_ms": [round(x * 1e3, 2) for x in latencies]}))


if __name__ == "__main__":
    asyncio.run(main())
