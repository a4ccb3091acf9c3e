"""fast_litellm's httpx transports against servers on 127.0.0.1 that count what they see."""

import _thread
import asyncio
import gc
import signal
import ssl
import threading
import time
import weakref

import httpx
import pytest
import trustme

import fast_litellm
from fast_litellm import AsyncHTTPTransport, HTTPTransport, _loops
from fast_litellm._transport import Outgoing
from helpers import active, new_pool
from servers import Blackhole, FullBacklog, Server, refused_port, wait_for


def client(pool=None, **kw):
    return httpx.Client(transport=HTTPTransport(pool or new_pool(), **kw))


def aclient(pool=None, **kw):
    return httpx.AsyncClient(transport=AsyncHTTPTransport(pool or new_pool(), **kw))


# --- interface ------------------------------------------------------------------------------


def test_transports_are_httpx_base_transports():
    assert isinstance(HTTPTransport(), httpx.BaseTransport)
    assert not isinstance(HTTPTransport(), httpx.HTTPTransport)
    assert isinstance(AsyncHTTPTransport(), httpx.AsyncBaseTransport)
    assert not isinstance(AsyncHTTPTransport(), httpx.AsyncHTTPTransport)


def test_request_goes_out_as_given(server):
    with client() as c:
        r = c.post(f"{server.url}/echo?x=1&y=2", json={"a": 1}, headers={"Authorization": "Bearer k"})
    echo = r.json()
    assert r.status_code == 200 and r.http_version == "HTTP/1.1" and r.reason_phrase == "OK"
    assert (echo["method"], echo["target"], echo["body"]) == ("POST", "/echo?x=1&y=2", '{"a":1}')
    assert echo["headers"]["authorization"] == "Bearer k"
    assert echo["headers"]["host"] == f"127.0.0.1:{server.port}"
    assert r.headers["content-type"] == "application/json"


# --- reuse and bodies ----------------------------------------------------------------------


def test_100_sequential_requests_use_one_connection(server):
    pool = new_pool()
    with client(pool) as c:
        for _ in range(100):
            assert c.get(f"{server.url}/json").json()["ok"] is True
    assert (server.connections, server.requests) == (1, 100)
    s = pool.get_stats()
    assert (s["connections_created"], s["connections_reused"], s["idle_connections"]) == (1, 99, 1)


async def test_async_sequential_requests_use_one_connection(server):
    async with aclient() as c:
        for _ in range(50):
            assert (await c.get(f"{server.url}/json")).status_code == 200
    assert (server.connections, server.requests) == (1, 50)


def test_content_length_chunked_and_sse_bodies(server):
    with client() as c:
        assert len(c.get(f"{server.url}/big?size=3000000").content) == 3_000_000
        assert c.get(f"{server.url}/chunked?n=50").text == "".join(f"chunk-{i}\n" for i in range(50))
        with c.stream("GET", f"{server.url}/sse?n=20") as r:
            lines = [line for line in r.iter_lines() if line]
    assert lines[:2] == ['data: {"i": 0}', 'data: {"i": 1}'] and lines[-1] == "data: [DONE]"
    assert len(lines) == 21
    assert server.connections == 1


async def test_async_bodies_stream_chunk_by_chunk(server):
    async with aclient() as c:
        async with c.stream("GET", f"{server.url}/sse?n=200") as r:
            events = [line async for line in r.aiter_lines() if line]
        big = await c.get(f"{server.url}/big?size=2000000")
    assert len(events) == 201 and len(big.content) == 2_000_000
    assert server.connections == 1


def test_one_connection_carried_by_sync_callers_and_async_tasks_in_turn(server):
    # A sync caller reads and writes its connection on its own thread, a task on the runtime's:
    # the socket moves between the two with the connection, and nothing is lost on the way
    # (a body closed early by a sync caller is drained on the runtime).
    pool = new_pool(max_connections_per_endpoint=1)
    sse = "".join(f'data: {{"i": {i}}}\n\n' for i in range(30)) + "data: [DONE]\n\n"
    with client(pool, drain_timeout=5) as c:
        async def async_turn():
            async with aclient(pool) as ac:
                big = await ac.get(f"{server.url}/big?size=1000000")
                async with ac.stream("GET", f"{server.url}/sse?n=30") as r:
                    text = "".join([chunk async for chunk in r.aiter_text()])
            return len(big.content), text

        for _ in range(5):
            assert len(c.get(f"{server.url}/big?size=1000000").content) == 1_000_000
            with c.stream("GET", f"{server.url}/sse?n=30") as r:
                next(r.iter_lines())  # closed early: the rest is drained in the background
            wait_for(lambda: active(pool) == 0, timeout=10)
            assert asyncio.run(async_turn()) == (1_000_000, sse)
            assert c.get(f"{server.url}/chunked?n=50").text == "".join(f"chunk-{i}\n" for i in range(50))
    assert (server.connections, server.requests) == (1, 25)
    assert c._transport.stats()["bodies_not_drained"] == 0


def test_early_close_drains_and_reuses(server):
    # At its limit, the endpoint's next request queues for the connection being drained.
    pool = new_pool(max_connections_per_endpoint=1)
    # A generous drain bound: on a loaded machine the rest of a stream may take a while.
    with client(pool, drain_timeout=5) as c:
        for _ in range(20):
            with c.stream("GET", f"{server.url}/sse?n=30") as r:
                for line in r.iter_lines():
                    if line == 'data: {"i": 2}':
                        break
    assert server.connections == 1
    # Each body was either drained after the early close, or had already arrived whole.
    wait_for(lambda: active(pool) == 0, timeout=10)
    assert c._transport.stats()["bodies_not_drained"] == 0


def test_early_close_past_the_drain_bound_closes(server):
    pool = new_pool()
    with client(pool, drain_bytes=1000) as c:
        with c.stream("GET", f"{server.url}/big?size=5000000") as r:
            next(r.iter_bytes())
        wait_for(lambda: c._transport.stats()["bodies_not_drained"] == 1)
        c.get(f"{server.url}/json")
    assert server.connections == 2
    assert active(pool) == 0


def test_connection_close_is_honoured(server):
    pool = new_pool()
    with client(pool) as c:
        for _ in range(3):
            assert c.get(f"{server.url}/close").text == "bye"
    assert server.connections == 3
    s = pool.get_stats()
    assert s["total_connections"] == 0 and s["connections_closed"]["not_reusable"] == 3


def test_idle_connections_closed_by_the_server_never_fail_a_request():
    with Server(close_idle_after=0.1) as server:
        pool = new_pool()
        with client(pool) as c:
            for _ in range(5):
                assert c.get(f"{server.url}/json").status_code == 200
                time.sleep(0.25)
        assert server.connections == 5
        assert pool.get_stats()["connections_closed"]["unhealthy"] >= 4


@pytest.mark.parametrize("method, headers", [("GET", {}), ("POST", {"Idempotency-Key": "k1"})])
def test_a_silently_closed_connection_is_retried_on_a_fresh_one(method, headers):
    # Replayable requests only (an idempotent method, or an idempotency key): a plain POST is
    # never sent twice behind the caller's back (see test_http1.py).
    with Server(close_every=1) as server:
        pool = new_pool()
        with client(pool) as c:
            for _ in range(10):
                r = c.request(method, f"{server.url}/echo", content=b"payload", headers=headers)
                assert r.json()["body"] == "payload"
        assert server.requests == 10
        assert active(pool) == 0


# --- limits, waiting, timeouts -------------------------------------------------------------


async def test_200_concurrent_requests_with_a_per_endpoint_limit_of_8(server):
    pool = new_pool(max_connections_per_endpoint=8)
    async with aclient(pool) as c:
        responses = await asyncio.gather(*[c.get(f"{server.url}/sleep?t=0.01") for _ in range(200)])
    assert all(r.text == "slept" for r in responses)
    assert server.max_open_connections <= 8
    assert server.requests == 200
    s = pool.get_stats()
    assert s["active_connections"] == 0 and s["total_connections"] <= 8 and s["waits"] > 0


def test_16_threads_with_a_limit_of_4(server):
    pool = new_pool(max_connections_per_endpoint=4)
    errors = []

    def work():
        with client(pool) as c:
            for _ in range(20):
                if c.get(f"{server.url}/json").status_code != 200:
                    errors.append("status")

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and server.requests == 320 and server.max_open_connections <= 4


def test_pool_timeout(server):
    pool = new_pool(max_connections_per_endpoint=1)
    with client(pool) as c:
        # Larger than what is handed over with the head, so the connection stays in use.
        with c.stream("GET", f"{server.url}/big?size=5000000"):
            with pytest.raises(httpx.PoolTimeout):
                c.get(f"{server.url}/json", timeout=httpx.Timeout(5, pool=0.1))
    assert pool.get_stats()["wait_timeouts"] == 1
    wait_for(lambda: active(pool) == 0)  # the unread stream is drained in the background


def test_connect_refused():
    pool = new_pool()
    with client(pool) as c:
        with pytest.raises(httpx.ConnectError, match="Connection refused"):
            c.get(f"http://127.0.0.1:{refused_port()}/")
    s = pool.get_stats()
    assert s["total_connections"] == 0 and s["connections_closed"]["connect_failed"] == 1


def test_connect_timeout():
    hole = FullBacklog()
    try:
        with client() as c:
            start = time.monotonic()
            with pytest.raises(httpx.ConnectTimeout):
                c.get(f"http://127.0.0.1:{hole.port}/", timeout=httpx.Timeout(5, connect=0.3))
            assert time.monotonic() - start < 3
    finally:
        hole.close()


def test_read_timeout(server):
    pool = new_pool()
    with client(pool) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.get(f"{server.url}/slow-head?t=2", timeout=httpx.Timeout(5, read=0.2))
        with pytest.raises(httpx.ReadTimeout):
            c.get(f"{server.url}/slow-body?t=2", timeout=httpx.Timeout(5, read=0.2)).read()
        assert c.get(f"{server.url}/json").status_code == 200
    assert active(pool) == 0


async def test_async_read_timeout(server):
    pool = new_pool()
    async with aclient(pool) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(f"{server.url}/slow-head?t=2", timeout=httpx.Timeout(5, read=0.2))
    assert active(pool) == 0


def test_write_timeout():
    hole = Blackhole()
    pool = new_pool()
    try:
        with client(pool) as c:
            with pytest.raises(httpx.WriteTimeout):
                c.post(f"http://127.0.0.1:{hole.port}/", content=b"x" * 50_000_000,
                       timeout=httpx.Timeout(5, write=0.3))
    finally:
        hole.close()
    assert active(pool) == 0


# --- cancellation ---------------------------------------------------------------------------


async def test_cancelled_request_leaves_no_active_connection(server):
    pool = new_pool()
    async with aclient(pool) as c:
        task = asyncio.ensure_future(c.get(f"{server.url}/sleep?t=5"))
        await asyncio.sleep(0.2)
        assert active(pool) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        wait_for(lambda: active(pool) == 0)
        assert (await c.get(f"{server.url}/json")).status_code == 200


async def test_cancelled_stream_leaves_no_active_connection(server):
    pool = new_pool()
    async with aclient(pool) as c:
        async def read_slowly():
            async with c.stream("GET", f"{server.url}/slow-body?t=5") as r:
                async for _ in r.aiter_raw():
                    pass

        task = asyncio.ensure_future(read_slowly())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    wait_for(lambda: active(pool) == 0)


@pytest.mark.parametrize("gone", ["before", "after"], ids=["rest-arrives-later", "rest-arrived-while-nobody-waited"])
async def test_a_body_read_given_up_loses_no_byte(server, gone):
    """A task that stops waiting for the next body bytes (a timeout, a cancellation) leaves them
    to the body's next read, also when they arrive while nobody waits: the read stops before it
    takes them. Then the body ends and the connection goes back to the pool."""
    pool = new_pool()
    transport = AsyncHTTPTransport(pool)
    response = await transport.handle_async_request(httpx.Request("GET", f"{server.url}/slow-body?t=0.3"))
    reader = response.stream.__aiter__()  # the transport's own body stream: it can be read on
    assert await reader.__anext__() == b"hello"
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.__anext__(), 0.05)
    if gone == "after":
        await asyncio.sleep(0.6)  # "world" arrives, and wakes the read nobody waits for any more
    assert b"".join([chunk async for chunk in reader]) == b"world"
    assert active(pool) == 0 and pool.get_stats()["idle_connections"] == 1
    await response.aclose()
    await transport.aclose()


def test_keyboard_interrupt_in_sync_code_gives_the_connection_back(server):
    pool = new_pool()
    done = threading.Event()

    def interrupt():
        # Ctrl-C after 0.3 s, and again each second while the request still runs: one simulated
        # interrupt was seen lost once in a full run under load (make test on a fresh clone),
        # the request then answering after its 5 s. A transport that ignores Ctrl-C still fails.
        while not done.wait(0.3 if not interrupt.sent else 1.0):
            interrupt.sent += 1
            _thread.interrupt_main()

    interrupt.sent = 0
    # A handler left behind by another test would make this test meaningless: say so.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with client(pool) as c:
        threading.Thread(target=interrupt, daemon=True).start()
        started = time.monotonic()
        try:
            c.get(f"{server.url}/sleep?t=5")
        except KeyboardInterrupt:
            pass
        else:
            pytest.fail(f"the request answered after {time.monotonic() - started:.1f} s, "
                        f"{interrupt.sent} Ctrl-C sent during it")
        finally:
            done.set()
    assert active(pool) == 0


# --- event loops and threads ----------------------------------------------------------------


def test_one_async_transport_across_asyncio_runs_and_threads(server):
    pool = new_pool()
    transport = AsyncHTTPTransport(pool)
    results = []

    async def burst():
        c = httpx.AsyncClient(transport=transport)
        rs = await asyncio.gather(*[c.get(f"{server.url}/json") for _ in range(10)])
        results.extend(r.status_code for r in rs)

    for _ in range(3):
        asyncio.run(burst())
    threads = [threading.Thread(target=lambda: asyncio.run(burst())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 70
    assert active(pool) == 0


def collected(ref, pool):
    """Whether the object behind `ref` is gone after a garbage collection. The call into the
    extension first lets it release references its threads dropped without holding the GIL."""
    pool.get_stats()
    gc.collect()
    return ref() is None


def test_an_event_loop_that_has_ended_can_be_collected(server):
    pool = new_pool()
    loops = []

    async def one_request():
        loops.append(weakref.ref(asyncio.get_running_loop()))
        async with aclient(pool) as c:
            assert (await c.get(f"{server.url}/json")).status_code == 200

    asyncio.run(one_request())
    assert collected(loops[0], pool), "an ended event loop is kept alive"


def test_a_result_left_for_an_ended_loop_does_not_keep_it_alive(server):
    # A response that reaches the loop's bridge after the loop's last poll stays queued there
    # with its future, which refers to the loop: once the loop is closed, neither may stay.
    pool = new_pool()
    engine = AsyncHTTPTransport(pool)._engine
    loop = asyncio.new_event_loop()

    async def send_without_waiting():
        new_future, bridge = _loops.backend()
        host = f"127.0.0.1:{server.port}".encode()
        engine.send_async(bridge, new_future(), Outgoing("GET", "http", "127.0.0.1", server.port, b"/json",
                                                         [(b"host", host)], b"", (None, None, None, None), None, None))

    loop.run_until_complete(send_without_waiting())
    wait_for(lambda: server.requests == 1)
    time.sleep(0.2)  # the response reaches the bridge while the loop is not running
    loop.close()
    ended = weakref.ref(loop)
    del loop
    wait_for(lambda: collected(ended, pool))


def test_closing_a_client_leaves_the_shared_pool_working(server):
    pool = new_pool()
    transport = HTTPTransport(pool)
    httpx.Client(transport=transport).close()
    with httpx.Client(transport=transport) as c:
        assert c.get(f"{server.url}/json").status_code == 200


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_server(ca, tmp_path):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    with Server(tls=ctx) as s:
        yield s


def test_tls_verification_failure_is_a_clear_error(tls_server):
    with client() as c:
        with pytest.raises(httpx.ConnectError, match="TLS handshake failed.*(UnknownIssuer|certificate)"):
            c.get(f"{tls_server.url}/json")


def test_tls_with_a_custom_ca_bundle(ca, tls_server, tmp_path):
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    pool = new_pool()
    with client(pool, verify=str(bundle)) as c:
        for _ in range(5):
            assert c.get(f"{tls_server.url}/json").json()["ok"] is True
    assert tls_server.connections == 1
    (origin,) = pool.get_stats()["endpoints"]
    assert origin.startswith(f"https://127.0.0.1:{tls_server.port} (tls settings #")


def test_tls_verify_false(tls_server):
    with client(verify=False) as c:
        assert c.get(f"{tls_server.url}/json").status_code == 200


def test_tls_client_certificate(ca, tmp_path):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(ctx)
    bundle, cert, key = tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key"
    ca.cert_pem.write_to_path(str(bundle))
    client_cert = ca.issue_cert("client@example.com")
    client_cert.cert_chain_pems[0].write_to_path(str(cert))
    client_cert.private_key_pem.write_to_path(str(key))
    with Server(tls=ctx) as server:
        with client(verify=str(bundle), cert=(str(cert), str(key))) as c:
            assert c.get(f"{server.url}/json").status_code == 200
        with client(verify=str(bundle)) as c:
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                c.get(f"{server.url}/json")


def test_different_tls_settings_never_share_connections(ca, tls_server, tmp_path):
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    pool = new_pool()
    with client(pool, verify=str(bundle)) as a, client(pool, verify=False) as b:
        a.get(f"{tls_server.url}/json")
        b.get(f"{tls_server.url}/json")
        a.get(f"{tls_server.url}/json")
    assert tls_server.connections == 2
    assert len(pool.get_stats()["endpoints"]) == 2


def test_bad_tls_settings_raise_at_construction(tmp_path):
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match="verify: cannot read PEM file"):
        HTTPTransport(verify=str(missing))
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with pytest.raises(ValueError, match="no CA certificate"):
        HTTPTransport(verify=str(empty))
    with pytest.raises(TypeError, match="verify must be"):
        HTTPTransport(verify=3)


# --- the pool sees real sockets --------------------------------------------------------------


def test_health_check_cleanup_and_reaper_act_on_real_sockets(server):
    pool = new_pool(idle_timeout=0.2)
    with client(pool) as c:
        c.get(f"{server.url}/json")
    wait_for(lambda: server.open_connections == 1)
    time.sleep(0.3)
    assert pool.cleanup() == 1
    wait_for(lambda: server.open_connections == 0)  # the server saw it close
    assert pool.get_stats()["connections_closed"]["idle_timeout"] == 1


def test_proxies_from_the_environment_are_used_not_bypassed(server, monkeypatch):
    with Server() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        transport = HTTPTransport(new_pool())
        with httpx.Client(transport=transport) as c:
            r = c.get("http://example.invalid/echo")
        # The request reached the proxy, in absolute form.
        assert r.json()["target"] == "http://example.invalid/echo"
        assert transport.stats()["proxied_requests"] == 1
        assert server.requests == 0


def test_requests_are_counted(server):
    transport = HTTPTransport(new_pool())
    with httpx.Client(transport=transport) as c:
        for _ in range(3):
            c.get(f"{server.url}/json")
    assert transport.stats()["requests"] == 3


def test_module_default_transport_uses_the_default_pool(server):
    before = fast_litellm.get_connection_pool_stats()["connections_created"]
    with httpx.Client(transport=HTTPTransport()) as c:
        c.get(f"{server.url}/json")
    assert fast_litellm.get_connection_pool_stats()["connections_created"] == before + 1
