"""The async transport under every anyio backend (asyncio and trio): the same scenarios, each
run with `anyio.run(..., backend=...)` against servers on 127.0.0.1 that count what they see."""

import asyncio
import gc
import os
import threading
import time
import warnings
import weakref

import anyio
import httpx
import pytest
import trio

from fast_litellm import AsyncHTTPTransport
from helpers import active, eventually, new_pool
from servers import Server

BACKENDS = ["asyncio", "trio"]
backends = pytest.mark.parametrize("backend", BACKENDS)


class DripServer(Server):
    """Adds /drip[n, t]: n chunks of b"drip-<i>\\n", chunked encoding, t seconds apart, so each
    one reaches the client on its own (the reader waits for every chunk)."""

    def _respond(self, conn, method, target, headers, body):
        if not target.startswith("/drip"):
            return super()._respond(conn, method, target, headers, body)
        q = dict(p.split("=") for p in target.partition("?")[2].split("&") if p)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(int(q.get("n", 5))):
            time.sleep(float(q.get("t", 0.02)))
            chunk = f"drip-{i}\n".encode()
            conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        conn.sendall(b"0\r\n\r\n")
        return True


@pytest.fixture
def server():
    with DripServer() as s:
        yield s


async def wait_until(condition, timeout=5.0):
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


@backends
def test_get(server, backend):
    pool = new_pool()

    async def main():
        async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
            r = await c.get(f"{server.url}/json")
        assert r.status_code == 200 and r.json()["ok"] is True

    anyio.run(main, backend=backend)
    assert (server.connections, server.requests) == (1, 1)
    assert active(pool) == 0


@backends
def test_50_concurrent_gets(server, backend):
    pool = new_pool()
    statuses = []

    async def main():
        async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
            async def get():
                statuses.append((await c.get(f"{server.url}/sleep?t=0.05")).status_code)

            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(get)

    anyio.run(main, backend=backend)
    assert statuses == [200] * 50
    assert server.requests == 50 and server.max_open_connections > 1
    assert active(pool) == 0


@backends
def test_streamed_body_chunk_by_chunk(server, backend):
    pool = new_pool()

    async def main():
        async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
            async with c.stream("GET", f"{server.url}/drip?n=10&t=0.02") as r:
                chunks = [chunk async for chunk in r.aiter_raw()]
            big = await c.get(f"{server.url}/big?size=3000000")
        return chunks, big

    chunks, big = anyio.run(main, backend=backend)
    assert b"".join(chunks) == b"".join(f"drip-{i}\n".encode() for i in range(10))
    assert len(chunks) > 1  # handed over as they came, not buffered to the end
    assert len(big.content) == 3_000_000
    assert (server.connections, server.requests) == (1, 2)
    assert active(pool) == 0


@backends
def test_cancelled_request_leaves_no_active_connection(server, backend):
    pool = new_pool()

    async def main():
        async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
            with anyio.move_on_after(0.3) as scope:
                await c.get(f"{server.url}/sleep?t=5")
            assert scope.cancelled_caught
            await wait_until(lambda: active(pool) == 0)
            assert (await c.get(f"{server.url}/json")).status_code == 200

    anyio.run(main, backend=backend)
    assert server.requests == 2
    assert active(pool) == 0


@backends
def test_cancelled_stream_leaves_no_active_connection(server, backend):
    pool = new_pool()

    async def main():
        async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
            got = []
            with anyio.move_on_after(0.5) as scope:
                async with c.stream("GET", f"{server.url}/drip?n=10&t=0.2") as r:
                    async for chunk in r.aiter_raw():
                        got.append(chunk)
            assert scope.cancelled_caught and 0 < len(got) < 10
            await wait_until(lambda: active(pool) == 0)

    anyio.run(main, backend=backend)
    assert server.requests == 1


@backends
def test_read_timeout(server, backend):
    pool = new_pool()

    async def main():
        async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.get(f"{server.url}/slow-head?t=2", timeout=httpx.Timeout(5, read=0.2))
            with pytest.raises(httpx.ReadTimeout):
                async with c.stream("GET", f"{server.url}/drip?n=3&t=1", timeout=httpx.Timeout(5, read=0.2)) as r:
                    await r.aread()

    start = time.monotonic()
    anyio.run(main, backend=backend)
    assert time.monotonic() - start < 1.8
    assert server.requests == 2
    assert active(pool) == 0


@backends
def test_two_runs_share_one_transport(server, backend):
    pool = new_pool()
    transport = AsyncHTTPTransport(pool)
    statuses = []

    async def burst():
        c = httpx.AsyncClient(transport=transport)
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(get, c)

    async def get(c):
        statuses.append((await c.get(f"{server.url}/json")).status_code)

    anyio.run(burst, backend=backend)
    anyio.run(burst, backend=backend)
    assert statuses == [200] * 20
    assert server.requests == 20 and server.connections <= 10  # the second run reused them
    assert active(pool) == 0


def test_a_trio_run_forgets_its_bridge(server):
    pool = new_pool()

    def eventfds():
        fds = os.listdir("/proc/self/fd")
        return sum(1 for fd in fds if _readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]")

    async def main():
        async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
            assert (await c.get(f"{server.url}/json")).status_code == 200

    gc.collect()
    before = eventfds()
    for _ in range(3):
        trio.run(main)
    gc.collect()
    # Each run's bridge (and its eventfd) goes with the run: three runs leave none behind.
    assert eventfds() <= before
    assert server.requests == 3 and active(pool) == 0


def test_an_abandoned_loop_with_an_undelivered_result_is_collected(server):
    """An asyncio loop left without being closed while a result waits in its bridge (the answer
    came after the loop's last run): the loop, its reader, the bridge and the waiting future are
    a cycle, which the garbage collector frees only if it can see inside the bridge."""
    pool = new_pool()
    transport = AsyncHTTPTransport(pool)
    loop = asyncio.new_event_loop()

    async def send():
        task = asyncio.ensure_future(transport.handle_async_request(httpx.Request("GET", f"{server.url}/sleep?t=0.2")))
        await wait_until(lambda: server.requests == 1)  # sent; its answer comes after this run
        return weakref.ref(task)

    task = loop.run_until_complete(send())
    assert task() is not None and not task().done()
    gone = weakref.ref(loop)
    time.sleep(0.5)  # the answer is in the bridge now, the loop not running to take it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # "unclosed event loop": the point here
        del loop, send
        gc.collect()
    assert gone() is None and task() is None
    # The result was dropped with the bridge: its connection went back to the pool.
    assert active(pool) == 0


def test_an_abandoned_loop_with_a_body_read_woken_is_collected(server):
    """The same for a body read, which runs on the loop's own thread: the rest of the body
    arrives after the loop's last run, so the read is queued in the bridge to be polled again.
    The garbage collector frees it all, and the connection leaves the pool's active count."""
    pool = new_pool()
    transport = AsyncHTTPTransport(pool)
    loop = asyncio.new_event_loop()

    async def start_reading():
        client = httpx.AsyncClient(transport=transport)
        response = await client.send(client.build_request("GET", f"{server.url}/slow-body?t=0.2"), stream=True)
        chunks = response.aiter_raw()
        assert await chunks.__anext__() == b"hello"
        task = asyncio.ensure_future(chunks.__anext__())  # waits for "world", 0.2 s away
        await asyncio.sleep(0.05)
        assert not task.done()
        return weakref.ref(task)

    task = loop.run_until_complete(start_reading())
    gone = weakref.ref(loop)
    time.sleep(0.5)  # "world" has arrived: the read was woken, and waits in the bridge
    assert active(pool) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del loop, start_reading
        gc.collect()
    assert gone() is None and task() is None
    assert eventually(lambda: active(pool) == 0), pool.get_stats()


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


def test_asyncio_and_trio_runs_in_threads_share_one_transport(server):
    pool = new_pool(max_connections_per_endpoint=4)
    transport = AsyncHTTPTransport(pool)
    statuses = []

    async def burst():
        c = httpx.AsyncClient(transport=transport)
        for _ in range(5):
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(get, c)

    async def get(c):
        statuses.append((await c.get(f"{server.url}/sleep?t=0.01")).status_code)

    threads = [threading.Thread(target=anyio.run, args=(burst,), kwargs={"backend": b}) for b in BACKENDS * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 160
    assert server.requests == 160 and server.max_open_connections <= 4
    assert active(pool) == 0
