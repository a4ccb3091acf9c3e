"""Behaviour under trouble: faults injected by the server, load, bad input, fork, secrets.

After every fault workload: active_connections == 0, and once the pool's idle connections are
closed, the process holds no more file descriptors and no more threads than before."""

import asyncio
import logging
import os
import random
import signal
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fast_litellm
from fast_litellm import AsyncHTTPTransport, HTTPTransport, SimpleConnectionPool
from fast_litellm._transport import Outgoing
from fast_litellm.litellm.state import state
from servers import ForwardProxy, Server, refused_port
from helpers import eventually, new_pool

SECRET = "sk-PLANTED-0123456789abcdef"


def fds():
    """Open sockets (an event loop's bridge eventfd lives as long as its loop, legitimately)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def threads():
    return len(os.listdir("/proc/self/task"))


def wait_for(condition, timeout=10.0):
    return eventually(condition, timeout)


def close_idle(pool):
    pool.configure(idle_timeout=0.001)
    time.sleep(0.01)
    pool.cleanup()


class Leaks:
    """Counts file descriptors and threads around a workload (the runtime warmed up first)."""

    def __init__(self, server):
        warm = new_pool()
        with httpx.Client(transport=HTTPTransport(warm)) as c:
            c.get(f"{server.url}/json")
        close_idle(warm)
        assert wait_for(lambda: server.open_connections == 0)
        self.server = server
        self.fds = fds()
        self.threads = threads()

    def check(self, pool):
        stats = pool.get_stats()
        assert stats["active_connections"] == 0, stats
        close_idle(pool)
        assert pool.get_stats()["total_connections"] == 0
        # The server's threads and sockets (in this process) wind down once ours are closed.
        assert wait_for(lambda: self.server.open_connections == 0)
        assert wait_for(lambda: fds() <= self.fds), (fds(), self.fds)
        assert wait_for(lambda: threads() <= self.threads), (threads(), self.threads)


# --- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("close_every, close_header", [(3, False), (3, True), (1, False)])
def test_server_closing_after_every_k_requests(close_every, close_header):
    with Server(close_every=None if close_header else close_every) as server:
        leaks = Leaks(server)
        pool = new_pool()
        path = "/close" if close_header else "/json"
        with httpx.Client(transport=HTTPTransport(pool)) as c:
            for _ in range(30):
                assert c.get(f"{server.url}{path}").status_code == 200
        assert server.requests >= 30
        leaks.check(pool)


def test_idle_timeout_of_the_server():
    with Server(close_idle_after=0.05) as server:
        leaks = Leaks(server)
        pool = new_pool()
        with httpx.Client(transport=HTTPTransport(pool)) as c:
            for i in range(10):
                assert c.get(f"{server.url}/json").status_code == 200
                time.sleep(0.1 if i % 2 else 0)
        leaks.check(pool)


def test_reset_in_the_middle_of_a_body(server):
    leaks = Leaks(server)
    pool = new_pool()
    with httpx.Client(transport=HTTPTransport(pool)) as c:
        for _ in range(10):
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                c.get(f"{server.url}/reset")
            assert c.get(f"{server.url}/json").status_code == 200
    leaks.check(pool)


async def test_stream_that_stops_mid_event(server):
    leaks = Leaks(server)
    pool = new_pool()
    async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
        for _ in range(10):
            with pytest.raises(httpx.RemoteProtocolError, match="peer closed connection"):
                async with c.stream("GET", f"{server.url}/cut-stream") as r:
                    async for _ in r.aiter_lines():
                        pass
    leaks.check(pool)


def test_half_closed_sockets_are_never_reused(server):
    leaks = Leaks(server)
    pool = new_pool()
    with httpx.Client(transport=HTTPTransport(pool)) as c:
        for _ in range(10):
            assert c.get(f"{server.url}/half-close").text == "half"
            time.sleep(0.02)  # the EOF reaches the idle connection
    assert server.connections == 10 + 1  # each half-closed one replaced (+1: Leaks' warm-up)
    leaks.check(pool)


async def test_storms_of_429_and_503(server):
    leaks = Leaks(server)
    pool = new_pool(max_connections_per_endpoint=16)
    async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
        rs = await asyncio.gather(*[c.get(f"{server.url}/status?code={429 if i % 2 else 503}") for i in range(400)])
    assert sorted({r.status_code for r in rs}) == [429, 503]
    assert server.connections <= 16 + 1
    leaks.check(pool)


async def test_random_cancellations_mid_stream(server):
    leaks = Leaks(server)
    pool = new_pool(max_connections_per_endpoint=32)
    rng = random.Random(7)
    async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
        async def read(n):
            async with c.stream("GET", f"{server.url}/sse?n={n}") as r:
                async for _ in r.aiter_lines():
                    await asyncio.sleep(0)

        tasks = [asyncio.ensure_future(read(rng.randint(1, 200))) for _ in range(300)]
        await asyncio.sleep(0.05)
        for t in tasks:
            if rng.random() < 0.5:
                t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results)
    assert wait_for(lambda: pool.get_stats()["active_connections"] == 0)
    leaks.check(pool)


def test_server_restart_with_idle_connections():
    server = Server()
    port = server.port
    pool = new_pool()
    with httpx.Client(transport=HTTPTransport(pool)) as c:
        for _ in range(3):
            assert c.get(f"{server.url}/json").status_code == 200
        server.close()  # the idle connection's peer goes away; a new server takes the port
        assert wait_for(lambda: server.open_connections == 0)
        restarted = None
        deadline = time.monotonic() + 5
        while restarted is None:
            try:
                restarted = Server(port=port)
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        try:
            for _ in range(5):
                assert c.get(f"http://127.0.0.1:{port}/json").status_code == 200
        finally:
            restarted.close()
    assert pool.get_stats()["active_connections"] == 0


# --- load -----------------------------------------------------------------------------------


def test_64_threads_hammering_the_pool_api():
    # Pool calls hold the GIL, so these threads make one pool call at a time: this checks the
    # Python API's bookkeeping under thread switches. Real concurrency inside the pool is
    # tested in Rust (cargo test: src/pool/tests.rs).
    pool = new_pool(max_connections=40, max_connections_per_endpoint=10)
    endpoints = [f"http://host-{i}.example" for i in range(6)]
    leased, lock, errors = set(), threading.Lock(), []
    stop = threading.Event()

    def hammer(n):
        rng = random.Random(n)
        for _ in range(1500):
            endpoint = rng.choice(endpoints)
            conn_id = pool.acquire(endpoint, timeout=10) if rng.random() < 0.2 else pool.get_connection(endpoint)
            if conn_id is None:
                continue
            with lock:
                if conn_id in leased:
                    errors.append("leased twice")
                leased.add(conn_id)
            with lock:
                leased.discard(conn_id)
            (pool.remove_connection if rng.random() < 0.1 else pool.return_connection)(conn_id)

    def observe():
        while not stop.is_set():
            s = pool.get_stats()
            # Counted from independent sources: connections opened less those closed.
            if s["total_connections"] != s["connections_created"] - sum(s["connections_closed"].values()):
                errors.append(s)
            if any(e["total"] > 10 for e in s["endpoints"].values()):
                errors.append(s)
            time.sleep(0.0005)

    observer = threading.Thread(target=observe)
    observer.start()
    workers = [threading.Thread(target=hammer, args=(n,)) for n in range(64)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert not w.is_alive(), "a worker hung"
    stop.set()
    observer.join()
    assert errors == []
    s = pool.get_stats()
    assert (s["active_connections"], s["waiting_requests"]) == (0, 0)
    assert s["total_connections"] <= 40


async def test_2000_concurrent_requests_with_random_cancellations(server):
    pool = new_pool(max_connections_per_endpoint=64)
    rng = random.Random(3)
    most = 0

    async def observe():
        nonlocal most
        while True:
            most = max(most, pool.get_stats()["total_connections"])
            await asyncio.sleep(0.001)

    async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool), timeout=30) as c:
        observer = asyncio.ensure_future(observe())
        tasks = [asyncio.ensure_future(c.get(f"{server.url}/sleep?t={rng.random() / 50}")) for _ in range(2000)]
        for _ in range(20):
            await asyncio.sleep(0.01)
            for t in rng.sample(tasks, 25):
                t.cancel()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=120)
        observer.cancel()
    ok = [r for r in results if isinstance(r, httpx.Response)]
    assert all(r.status_code == 200 for r in ok) and len(ok) > 1000
    assert all(isinstance(r, (httpx.Response, asyncio.CancelledError)) for r in results)
    assert wait_for(lambda: pool.get_stats()["active_connections"] == 0)
    # The pool's side: never above its limit. (The server may briefly count more: a connection
    # closed on cancellation stays open on its side until its handler notices.)
    assert most <= 64


# --- bad input --------------------------------------------------------------------------------

anything = st.one_of(st.none(), st.text(), st.binary(), st.integers(), st.floats(), st.booleans(),
                     st.lists(st.integers(), max_size=3), st.text(min_size=5000, max_size=20000))
CLEAN = (ValueError, TypeError, OverflowError)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=anything)
def test_any_endpoint_or_id_gives_a_clean_result(value):
    pool = SimpleConnectionPool("hypothesis", reaper_interval=None)
    before = pool.get_stats()
    for call in (pool.get_connection, pool.return_connection, pool.remove_connection, pool.health_check,
                 pool.connect):
        try:
            result = call(value)
        except CLEAN:
            continue
        if call is pool.get_connection and result is not None:
            assert pool.return_connection(result)
    after = pool.get_stats()
    assert after["active_connections"] == before["active_connections"] == 0
    assert after["total_connections"] == after["idle_connections"]


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(["max_connections", "max_connections_per_endpoint", "idle_timeout", "max_lifetime",
                            "reaper_interval", "bogus"]), value=anything)
def test_any_setting_gives_a_clean_result(key, value):
    pool = SimpleConnectionPool("hypothesis-settings", reaper_interval=None)
    before = pool.settings
    try:
        pool.configure(**{key: value})
    except CLEAN:
        assert pool.settings == before  # a refused setting changes nothing
    pool.configure(**before)


@settings(max_examples=200, deadline=None)
@given(name=st.binary(max_size=40), before=st.binary(max_size=100), after=st.binary(max_size=100))
def test_any_header_gives_a_clean_result(name, before, after):
    # The planted key is in every value sent, among any bytes (CR, LF, NUL, non-ASCII...).
    value = before + SECRET.encode() + after
    engine = fast_litellm._core.HttpEngine(new_pool())
    try:
        # A refused port: a header that passes validation fails at connect, cleanly too.
        engine.send(Outgoing("GET", "http", "127.0.0.1", 9, b"/", [(name, value)], b"", (0.5, 0.5, 0.5, 0.5), None, None))
    except (fast_litellm._core.TransportError, *CLEAN) as e:
        assert SECRET not in str(e) and SECRET not in repr(e)


def test_crlf_in_header_values_is_refused_without_echo(server):
    with httpx.Client(transport=HTTPTransport(new_pool())) as c:
        request = c.build_request("GET", f"{server.url}/echo")
        request.headers["x-injected"] = "ok"
        raw = [(k, v) for k, v in request.headers.raw] + [(b"authorization", f"{SECRET}\r\nX-Evil: 1".encode())]
        engine = c._transport._engine
        with pytest.raises(fast_litellm._core.LocalProtocolError) as info:
            engine.send(Outgoing("GET", "http", "127.0.0.1", server.port, b"/echo", raw, b"", (1, 1, 1, 1), None, None))
    assert SECRET not in str(info.value) and "authorization" in str(info.value)
    assert server.requests == 0


# URLs that reach the transport, and nothing but 127.0.0.1 / ::1 on a port with nothing on it:
# odd schemes, hosts and paths, and ports httpx.URL accepts though no socket can use them.
NOTHING_THERE = refused_port()
urls = st.builds(
    "{}://{}:{}/{}".format,
    st.sampled_from(["http", "https", "HTTP", "ftp", "ws", "", "http:"]),
    st.sampled_from(["127.0.0.1", "[::1]", "", "127.0.0.1\x00", "[::1", "user:pw@127.0.0.1", "127.0.0.1 ", "127.1"]),
    st.sampled_from([NOTHING_THERE, 0, 65536, 123456, 2**32 + NOTHING_THERE, -1, "x"]),
    st.text(max_size=60),
)


@settings(max_examples=150, deadline=None)
@given(url=urls)
def test_any_url_through_the_transport_gives_an_httpx_error_or_a_response(url):
    # Only httpx's own exceptions (InvalidURL comes from httpx.URL, before the transport): a
    # ValueError or OverflowError escaping the transport is a bug, not a clean result.
    with httpx.Client(transport=HTTPTransport(new_pool()), timeout=0.5) as c:
        try:
            c.get(url)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            assert not isinstance(e, httpx.TransportError) or e.request is not None


# --- fork -------------------------------------------------------------------------------------


def test_a_transport_used_before_fork_works_in_parent_and_child(server):
    pool = new_pool()
    transport = HTTPTransport(pool)
    with httpx.Client(transport=transport) as c:
        assert c.get(f"{server.url}/json").status_code == 200
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                ok = all(c.get(f"{server.url}/json").status_code == 200 for _ in range(5))
                ok = ok and SimpleConnectionPool(pool.pool_name).get_stats()["connections_created"] == 1
                os.write(write_fd, b"ok" if ok else b"bad")
            finally:
                os._exit(0)
        os.close(write_fd)
        os.waitpid(pid, 0)
        assert os.read(read_fd, 8) == b"ok"
        for _ in range(5):
            assert c.get(f"{server.url}/json").status_code == 200
    s = pool.get_stats()
    assert s["connections_created"] == 1 and s["active_connections"] == 0


def test_a_lock_held_by_another_thread_at_a_fork_does_not_hang_the_child(server):
    # A child keeps only the forking thread: a lock another thread held then is never released
    # there. Held here: the integration's lock (install/uninstall) and a proxied transport's.
    with ForwardProxy() as proxy:
        transport = HTTPTransport(new_pool(), proxy=proxy.url)
        with httpx.Client(transport=transport) as c:
            assert c.get(f"{server.url}/json").status_code == 200
            held, release = threading.Event(), threading.Event()

            def hold():
                with state.lock, transport._proxies._lock:
                    held.set()
                    release.wait()

            holder = threading.Thread(target=hold)
            holder.start()
            held.wait()
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    fast_litellm.install()
                    ok = c.get(f"{server.url}/json").status_code == 200
                    os.write(write_fd, b"ok" if ok else b"bad")
                finally:
                    os._exit(0)
            release.set()
            holder.join()
            os.close(write_fd)
            deadline = time.monotonic() + 20
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.05)
            assert os.read(read_fd, 8) == b"ok", "the child hung on a lock held at the fork"
            assert c.get(f"{server.url}/json").status_code == 200


# --- secrets ------------------------------------------------------------------------------------


def test_a_planted_key_appears_nowhere(server, caplog):
    caplog.set_level(logging.DEBUG, logger="fast_litellm")
    pool = new_pool()
    transport = HTTPTransport(pool)
    seen = []
    with httpx.Client(transport=transport) as c:
        r = c.get(f"http://user:{SECRET}@127.0.0.1:{server.port}/json?key={SECRET}",
                  headers={"Authorization": f"Bearer {SECRET}"})
        assert r.status_code == 200
        for url in (f"http://user:{SECRET}@127.0.0.1:9/x?key={SECRET}", f"http://127.0.0.1:{server.port}/reset?k={SECRET}"):
            try:
                c.get(url, headers={"Authorization": f"Bearer {SECRET}"})
            except httpx.HTTPError as e:
                seen += [str(e), repr(e)]
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("fast_litellm")]
    seen += [repr(pool.get_stats()), repr(pool), repr(transport.stats()), repr(fast_litellm.status()), *ours]
    assert not [s for s in seen if SECRET in s]
