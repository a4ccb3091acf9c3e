"""Long runs (`make stress`): stale keep-alive connections, and memory over a million pool
cycles and a hundred thousand HTTP requests."""

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import httpx

from fast_litellm import AsyncHTTPTransport, HTTPTransport, SimpleConnectionPool
from local_server import Server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from pool_ledger import run_id_api_stress  # noqa: E402 - shared with tests/python

MB = 1024 * 1024


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def new_pool(**settings):
    return SimpleConnectionPool(f"stress-{uuid.uuid4()}", reaper_interval=None, **settings)


def spaced_requests(client, url, gaps):
    failures = 0
    for gap in gaps:
        time.sleep(gap)
        try:
            client.get(url).raise_for_status()
        except httpx.HTTPError:
            failures += 1
    return failures


def test_stale_connections_around_the_servers_keepalive_timeout(figures):
    """The server closes idle connections after 1 s; requests come 0.9 to 1.1 s apart: the
    field's "Server disconnected without sending a response". Zero failures through
    fast_litellm; httpx's stock transport, in the same run, for comparison."""
    gaps = [0.9 + 0.01 * (i % 21) for i in range(40)]
    with Server(close_idle_after=1.0) as server:
        # idle_timeout above the server's, so the pool's own expiry does not hide the race.
        with httpx.Client(transport=HTTPTransport(new_pool(idle_timeout=5))) as ours:
            our_failures = spaced_requests(ours, f"{server.url}/json", gaps)
        with httpx.Client(transport=httpx.HTTPTransport(), timeout=5) as stock:
            stock_failures = spaced_requests(stock, f"{server.url}/json", gaps)
    figures(f"stale connections: {len(gaps)} requests spaced 0.9-1.1 s against a 1 s server keep-alive",
            f"fast_litellm: {our_failures} failed; httpx's stock transport, same run: {stock_failures} failed")
    assert our_failures == 0


def test_memory_over_a_million_pool_cycles(figures):
    pool = new_pool()
    endpoints = [f"https://api-{i}.example.com" for i in range(5)]
    for _ in range(20_000):  # warm up: caches, maps at their working size
        for e in endpoints:
            pool.return_connection(pool.get_connection(e))
    before = rss()
    for _ in range(200_000):
        for e in endpoints:
            pool.return_connection(pool.get_connection(e))
    grown = rss() - before
    figures("1,000,000 pool checkouts and returns", f"resident memory grew by {grown / MB:.2f} MB (limit 10 MB)")
    assert pool.get_stats()["active_connections"] == 0
    assert grown < 10 * MB, f"resident memory grew by {grown / MB:.1f} MB"


def test_memory_over_a_hundred_thousand_http_requests(figures):
    pool = new_pool(max_connections_per_endpoint=32)

    async def run(total, concurrency=32):
        async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
            async def worker():
                for _ in range(total // concurrency):
                    (await c.get(f"{server.url}/json")).raise_for_status()
            await asyncio.gather(*[worker() for _ in range(concurrency)])

    with Server() as server:
        asyncio.run(run(5_000))
        before = rss()
        asyncio.run(run(100_000))
        grown = rss() - before
    figures("100,000 HTTP requests, 32 concurrent", f"resident memory grew by {grown / MB:.2f} MB (limit 10 MB)")
    assert pool.get_stats()["active_connections"] == 0
    assert grown < 10 * MB, f"resident memory grew by {grown / MB:.1f} MB"


def test_the_id_api_under_a_minute_of_random_use_against_a_ledger(figures):
    """8 threads: get / acquire / connection() / return / remove / connect / stale ids / health /
    cleanup / configure on 3 endpoints (local servers that keep every connection open), checked
    against the test's own ledger of held ids (see tests/python/pool_ledger.py).
    FAST_LITELLM_LEDGER_SECONDS sets the length (default 60), FAST_LITELLM_LEDGER_SEED the seed
    (default: a new one each run, named in any failure)."""
    seconds = float(os.environ.get("FAST_LITELLM_LEDGER_SECONDS", "60"))
    seed = int(os.environ.get("FAST_LITELLM_LEDGER_SEED", time.time_ns() % 1_000_000))
    summary = run_id_api_stress(seconds=seconds, workers=8, seed=seed)
    ops = summary["ops"]
    figures(f"the id API under random use: 8 threads, 3 endpoints, {seconds:.0f} s (seed {seed})",
            f"{sum(ops.values()):,} operations, every one as the ledger expected "
            f"({', '.join(f'{k} {v:,}' for k, v in ops.items())}); "
            f"{summary['healthy_connected']:,} connected ids healthy, "
            f"{summary['server_connections']:,} connections accepted by the servers")
    assert summary["healthy_connected"] > 0 and ops["stale_connect"] > 0, summary


def test_every_async_request_finishes_under_tiny_timeouts_and_cancellations(figures):
    """never_hang.py at length: 3 seeds x 30,000 requests (10,000 each over HTTP/1.1 with
    connection churn, HTTP/2 over TLS, and under trio), timeouts of 1 us to 5 ms on every phase,
    cancellations at random."""
    from never_hang import run_never_hang

    totals: dict = {}
    requests, seconds, active = 0, 0.0, 0
    for seed in range(3):
        result = run_never_hang(10_000, seed=seed * 10)
        for k, v in result["outcomes"].items():
            totals[k] = totals.get(k, 0) + v
        requests += result["requests"]
        seconds += result["seconds"]
        active += result["active_connections"]
    shown = ", ".join(f"{k} {v}" for k, v in sorted(totals.items(), key=lambda kv: -kv[1]))
    figures("90,000 async requests (HTTP/1.1 with churn, HTTP/2, trio), timeouts 1 us-5 ms, "
            "cancellations at random", f"{requests} requests in {seconds:.0f} s: {shown}; active left {active}")
    assert totals.get("hung", 0) == 0 and totals.get("tasks left pending", 0) == 0 and active == 0, totals


def test_rounds_of_long_streams_leave_nothing_behind(figures):
    """stream_rounds.py at length: 20 rounds of 2000 concurrent streams of 20 events 50 ms
    apart, over HTTP/1.1 and HTTP/2; from the second round on, nothing more than the first left."""
    from stream_rounds import StreamServer, run_rounds

    server = StreamServer()
    measured, outcomes = [], []
    try:
        for http2 in (False, True):
            rounds = run_rounds(server, 2000, 20, http2=http2, events=20)["rounds"]
            rss = [round(r["rss_kb"] / 1024) for r in rounds]
            measured.append(f"HTTP/{'2' if http2 else '1.1'}: connections accepted {rounds[0]['connections']}, "
                            f"then none more: {all(r['connections'] == rounds[0]['connections'] for r in rounds)}; "
                            f"descriptors {sorted({r['fds'] for r in rounds})}; RSS MB after each round {rss}")
            outcomes.append(rounds)
    finally:
        server.close()
    figures("20 rounds of 2000 long streams (20 events 50 ms apart), HTTP/1.1 then HTTP/2", "; ".join(measured))
    for rounds in outcomes:
        assert all(r["events"] == 2000 * 20 and r["active"] == 0 and r["tasks"] == 0 for r in rounds), rounds
        assert all(r["connections"] == rounds[0]["connections"] and r["fds"] == rounds[0]["fds"] for r in rounds)
        # The allocator settles within the first rounds; a leak grows every round alike.
        assert rounds[-1]["rss_kb"] - rounds[9]["rss_kb"] < 8 * 1024, rounds
