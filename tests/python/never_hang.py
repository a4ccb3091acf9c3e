"""Every async request finishes: thousands of requests through fast_litellm's async transport with
timeouts of 1 us to a few ms on every phase (pool, connect, write, read) and cancellations landing
at random points (asyncio.wait_for, task.cancel(), anyio cancel scopes; trio runs too), each
watched by a bound far above its own timeouts. Shared by tests/python/reliability/test_never_hang.py (short)
and tests/stress/test_stress.py (long).

What is counted per request: a response read whole, an httpx error (which class), a
cancellation, or "hung" (still pending at the bound: the failure this exists to catch). After the
run: the pool holds no active connection, and no task or future is left pending.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid

import anyio
import httpx

import fast_litellm
from local_server import Server

# Far above any timeout drawn below (at most 5 ms per phase, a few phases, a 1 ms server
# delay): a request still pending after this long would never have finished.
BOUND = 10.0
PATHS = ["/json", "/chunked?n=20", "/sse?n=5", "/sleep?t=0.001", "/slow-head?t=0.002", "/slow-body?t=0.002",
         "/big?size=200000", "/echo", "/close"]
# The same over HTTP/2 (tests/python/h2server.py's paths).
H2_PATHS = ["/json", "/sse?events=5&delay=0.0005", "/slow?delay=0.002", "/big?size=200000", "/echo"]


def draw_timeout(rng: random.Random):
    """None, or a timeout from 1 us to 5 ms, spread evenly over its orders of magnitude."""
    if rng.random() < 0.2:
        return None
    return 10 ** rng.uniform(-6, -2.3)


def draw_request(rng: random.Random, paths: list = PATHS) -> dict:
    path = rng.choice(paths)
    method = "POST" if path == "/echo" else "GET"
    body = b"x" * rng.choice([0, 10, 1_000_000]) if method == "POST" else None
    if rng.random() < 0.1:  # every phase at 1 us at once
        timeout = httpx.Timeout(1e-6)
    else:
        timeout = httpx.Timeout(connect=draw_timeout(rng), read=draw_timeout(rng), write=draw_timeout(rng),
                                pool=draw_timeout(rng))
    return {"method": method, "path": path, "content": body, "timeout": timeout, "stream": rng.random() < 0.3,
            "cancel": rng.choice(["none", "none", "wait_for", "task_cancel", "anyio"]),
            "cancel_after": 10 ** rng.uniform(-6, -2.3)}


async def one_request(client: httpx.AsyncClient, url: str, spec: dict) -> str:
    """Sends one request as drawn; its outcome's name. Cancellations are the caller's."""
    try:
        if spec["stream"]:
            async with client.stream(spec["method"], url + spec["path"], content=spec["content"],
                                     timeout=spec["timeout"]) as response:
                async for _ in response.aiter_raw():
                    pass
        else:
            await client.request(spec["method"], url + spec["path"], content=spec["content"], timeout=spec["timeout"])
        return "response"
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def cancellable(client, url, spec) -> str:
    """One request with its cancellation applied (asyncio and anyio's asyncio backend)."""
    how, after = spec["cancel"], spec["cancel_after"]
    if how == "wait_for":
        try:
            return await asyncio.wait_for(one_request(client, url, spec), after)
        except asyncio.TimeoutError:
            return "cancelled"
    if how == "task_cancel":
        task = asyncio.ensure_future(one_request(client, url, spec))
        await asyncio.sleep(after)
        task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return "cancelled"
    if how == "anyio":
        with anyio.move_on_after(after) as scope:
            outcome = await one_request(client, url, spec)
        return "cancelled" if scope.cancelled_caught else outcome
    return await one_request(client, url, spec)


async def watched(client, url, spec, outcomes: collections.Counter) -> None:
    """The request under a bound far above its own timeouts: past it, it counts as hung."""
    try:
        outcomes[await asyncio.wait_for(cancellable(client, url, spec), BOUND)] += 1
    except asyncio.TimeoutError:
        outcomes["hung"] += 1


def pool_settings(rng: random.Random) -> dict:
    # Few connections: requests queue for them, so the pool timeout's phase is reached often.
    return {"max_connections": 4, "max_connections_per_endpoint": 4, "reaper_interval": None}


async def asyncio_run(n: int, seed: int, url: str, pool, paths: list = PATHS, **transport_args) -> collections.Counter:
    rng = random.Random(seed)
    outcomes: collections.Counter = collections.Counter()
    transport = fast_litellm.AsyncHTTPTransport(pool, **transport_args)
    async with httpx.AsyncClient(transport=transport) as client:
        concurrency = 32
        for start in range(0, n, concurrency):
            specs = [draw_request(rng, paths) for _ in range(min(concurrency, n - start))]
            await asyncio.gather(*(watched(client, url, spec, outcomes) for spec in specs))
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    outcomes["tasks left pending"] += len(leftover)
    return outcomes


def trio_run(n: int, seed: int, url: str, pool) -> collections.Counter:
    """The same requests under trio, cancelled by trio's cancel scopes (move_on_after)."""
    import trio

    rng = random.Random(seed)
    outcomes: collections.Counter = collections.Counter()

    async def main():
        transport = fast_litellm.AsyncHTTPTransport(pool)
        async with httpx.AsyncClient(transport=transport) as client:

            async def one(spec):
                with trio.move_on_after(BOUND) as bound:
                    with trio.move_on_after(spec["cancel_after"] if spec["cancel"] != "none" else BOUND) as scope:
                        outcome = await one_request(client, url, spec)
                    outcomes["cancelled" if scope.cancelled_caught else outcome] += 1
                if bound.cancelled_caught:
                    outcomes["hung"] += 1

            for start in range(0, n, 32):
                async with trio.open_nursery() as nursery:
                    for _ in range(min(32, n - start)):
                        nursery.start_soon(one, draw_request(rng))

    trio.run(main)
    return outcomes


def settle(pool, timeout: float = 10.0) -> int:
    """Active connections left once background drains had time to end (0 expected)."""
    deadline = time.monotonic() + timeout
    while pool.get_stats()["active_connections"] and time.monotonic() < deadline:
        time.sleep(0.01)
    return pool.get_stats()["active_connections"]


def run_never_hang(n: int, seed: int = 0, trio: bool = True) -> dict:
    """n requests under asyncio over HTTP/1.1 (a server that also closes every third connection
    unannounced), n over HTTP/2 with TLS, and n under trio: outcome counts, leftovers, time."""
    from h2server import H2Server

    pool = fast_litellm.SimpleConnectionPool(f"never-hang-{uuid.uuid4()}", **pool_settings(random.Random(seed)))
    started = time.monotonic()
    with Server(close_every=3) as server, H2Server(tls=True) as h2:
        outcomes = asyncio.run(asyncio_run(n, seed, server.url, pool))
        outcomes.update(asyncio.run(asyncio_run(n, seed + 1, h2.url, pool, H2_PATHS, http2=True, verify=h2.ca_path)))
        if trio:
            outcomes.update(trio_run(n, seed + 2, server.url, pool))
        active = settle(pool)
    return {"outcomes": dict(outcomes), "active_connections": active, "seconds": time.monotonic() - started,
            "requests": n * (3 if trio else 2)}
