"""The pool's id API does real work: a connection id held with get_connection /
acquire / connection() is a real connection. `pool.connect(id)` opens its socket, a request sent
through fast_litellm's transports with `extensions={CONNECTION_ID: id}` goes out on it, and
`health_check(id)` reports that socket. Every count of connections and requests here is the
server's own (demo/local_server.py counts them on its side)."""

import asyncio
import threading
import time
import uuid

import httpx
import pytest

import fast_litellm
from fast_litellm import CONNECTION_ID, AsyncHTTPTransport, HTTPTransport, _core
from helpers import active, new_pool
from servers import ForwardProxy, FullBacklog, Server, refused_port, wait_for


def settle():
    """Time for the server's handler threads to count what has reached them (and no more)."""
    time.sleep(0.05)


class DropServer(Server):
    """Also `/drop`: the request is read (and counted), then the connection closes without an
    answer."""

    def _respond(self, conn, method, target, headers, body):
        if target.startswith("/drop"):
            return False
        return super()._respond(conn, method, target, headers, body)


class InFlightServer(Server):
    """Also `/work`: answers after 50 ms, and counts the requests in flight at once."""

    def __init__(self, **kw):
        self.in_flight = 0
        self.max_in_flight = 0
        super().__init__(**kw)

    def _respond(self, conn, method, target, headers, body):
        if not target.startswith("/work"):
            return super()._respond(conn, method, target, headers, body)
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(0.05)
        finally:
            with self.lock:
                self.in_flight -= 1
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        return True


# --- health_check reports the socket ----------------------------------------------------------


def test_a_never_connected_id_is_not_healthy(server):
    pool = new_pool()
    cid = pool.get_connection(server.url)
    assert pool.health_check(cid) is False
    settle()
    assert server.connections == 0, "get_connection opens no socket"
    assert pool.get_stats()["endpoints"][server.url]["http1_connections"] == 0
    assert pool.return_connection(cid) is True


def test_connect_opens_exactly_one_socket_and_the_id_is_healthy(server):
    pool = new_pool()
    cid = pool.get_connection(server.url)
    assert pool.connect(cid) is True
    wait_for(lambda: server.connections == 1)
    assert pool.health_check(cid) is True
    assert pool.connect(cid) is True, "already open: True, and nothing opened"
    settle()
    assert (server.connections, server.requests) == (1, 0)
    s = pool.get_stats()
    assert s["connections_created"] == 1 and s["endpoints"][server.url]["http1_connections"] == 1
    assert pool.return_connection(cid) is True
    assert pool.health_check(cid) is True, "returned, open, not checked out again"


def test_a_connection_closed_by_its_peer_is_not_healthy_and_a_request_reopens_it():
    with Server(close_idle_after=0.2) as server:
        pool = new_pool()
        cid = pool.get_connection(server.url)
        assert pool.connect(cid) is True
        assert pool.health_check(cid) is True
        wait_for(lambda: server.connections == 1 and server.open_connections == 0)  # the server closed it
        wait_for(lambda: pool.health_check(cid) is False, timeout=1)
        assert active(pool) == 1, "still held"
        # A POST (not replayable): the pool sees the closed socket before writing, and opens anew.
        with httpx.Client(transport=HTTPTransport(pool)) as c:
            r = c.post(f"{server.url}/echo", content=b"once", extensions={CONNECTION_ID: cid})
        assert r.status_code == 200 and r.json()["body"] == "once"
        assert (server.connections, server.requests) == (2, 1)
        assert pool.health_check(cid) is True
        assert pool.return_connection(cid) is True


def test_an_expired_id_is_not_healthy_but_stays_its_holders(server):
    pool = new_pool(max_lifetime=0.3)
    cid = pool.get_connection(server.url)
    assert pool.connect(cid) is True
    assert pool.health_check(cid) is True
    time.sleep(0.4)
    assert pool.health_check(cid) is False, "past max_lifetime"
    assert pool.cleanup() == 0 and active(pool) == 1
    settle()
    assert server.open_connections == 1, "a held connection is never closed under its holder"
    assert pool.return_connection(cid) is True
    assert pool.get_stats()["connections_closed"]["max_lifetime"] == 1
    wait_for(lambda: server.open_connections == 0)


def test_removed_returned_and_unknown_ids(server):
    pool = new_pool()
    cid = pool.get_connection(server.url)
    assert pool.connect(cid) is True
    assert pool.return_connection(cid) is True
    assert pool.connect(cid) is False, "not checked out: connect refuses"
    assert pool.remove_connection(cid) is True
    assert pool.health_check(cid) is False
    assert pool.connect(cid) is False
    assert pool.connect(str(uuid.uuid4())) is False and pool.health_check(str(uuid.uuid4())) is False
    assert pool.connect(None) is False
    settle()
    assert server.connections == 1


# --- connect() failures -----------------------------------------------------------------------


def test_connect_to_a_refused_port_raises_connect_error_and_the_id_stays_held():
    pool = new_pool()
    url = f"http://127.0.0.1:{refused_port()}"
    cid = pool.get_connection(url)
    # The extension's own exception class (not httpx's: connect() is a pool call).
    with pytest.raises(_core.ConnectError, match="refused") as info:
        pool.connect(cid, timeout=5)
    assert isinstance(info.value, _core.TransportError)
    assert active(pool) == 1 and pool.health_check(cid) is False
    # The transport maps the same failure to httpx's class, and the id is still the caller's.
    with httpx.Client(transport=HTTPTransport(pool)) as c:
        with pytest.raises(httpx.ConnectError):
            c.get(f"{url}/", extensions={CONNECTION_ID: cid})
    assert active(pool) == 1
    assert pool.return_connection(cid) is True


def test_connect_within_a_timeout_raises_connect_timeout():
    backlog = FullBacklog()
    try:
        pool = new_pool()
        cid = pool.get_connection(f"http://127.0.0.1:{backlog.port}")
        start = time.monotonic()
        with pytest.raises(_core.ConnectTimeout):
            pool.connect(cid, timeout=0.2)
        assert 0.15 < time.monotonic() - start < 3
        assert active(pool) == 1 and pool.health_check(cid) is False
        assert pool.return_connection(cid) is True
    finally:
        backlog.close()


def test_the_default_pools_twins(server):
    cid = fast_litellm.get_connection(server.url)
    try:
        assert fast_litellm.health_check_connection(cid) is False
        assert fast_litellm.connect_connection(cid, timeout=5) is True
        assert fast_litellm.health_check_connection(cid) is True
        with httpx.Client(transport=HTTPTransport()) as c:  # the default pool
            assert c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid}).status_code == 200
        assert (server.connections, server.requests) == (1, 1)
    finally:
        assert fast_litellm.remove_connection(cid) is True


# --- requests on a held id --------------------------------------------------------------------


def test_two_requests_on_one_id_use_one_connection_which_stays_held(server):
    pool = new_pool()
    cid = pool.get_connection(server.url)
    with httpx.Client(transport=HTTPTransport(pool)) as c:
        for _ in range(2):
            r = c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid})
            assert r.json()["ok"] is True  # read and closed
            assert active(pool) == 1 and pool.health_check(cid) is True, "still the caller's"
        assert (server.connections, server.requests) == (1, 2)
        assert pool.get_stats()["connections_created"] == 1
        assert pool.return_connection(cid) is True
        s = pool.get_stats()
        assert (s["active_connections"], s["idle_connections"]) == (0, 1)
        # Idle in the pool now: a request without an id reuses it.
        assert c.get(f"{server.url}/json").status_code == 200
    assert (server.connections, server.requests) == (1, 3)
    assert pool.get_stats()["connections_reused"] == 1


async def test_two_async_requests_on_one_id_use_one_connection_which_stays_held(server):
    pool = new_pool()
    cid = pool.get_connection(server.url)
    assert pool.connect(cid) is True
    async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
        for _ in range(2):
            r = await c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid})
            assert r.json()["ok"] is True
            assert active(pool) == 1 and pool.health_check(cid) is True
        assert (server.connections, server.requests) == (1, 2)
        assert pool.return_connection(cid) is True
        assert (await c.get(f"{server.url}/json")).status_code == 200
    assert (server.connections, server.requests) == (1, 3)


def test_a_streamed_response_on_an_id(server):
    pool = new_pool()
    cid = pool.get_connection(server.url)
    with httpx.Client(transport=HTTPTransport(pool)) as c:
        with c.stream("GET", f"{server.url}/sse?n=3", extensions={CONNECTION_ID: cid}) as r:
            lines = [line for line in r.iter_lines() if line]
        assert lines[-1] == "data: [DONE]" and len(lines) == 4
        assert c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid}).status_code == 200
    assert (server.connections, server.requests) == (1, 2)
    assert pool.return_connection(cid) is True


# --- refused requests: nothing is sent --------------------------------------------------------


def test_an_id_for_another_origin_is_refused_and_nothing_is_sent(server):
    with Server() as other:
        pool = new_pool()
        cid = pool.get_connection(server.url)
        with httpx.Client(transport=HTTPTransport(pool)) as c:
            with pytest.raises(httpx.LocalProtocolError, match="another origin"):
                c.get(f"{other.url}/json", extensions={CONNECTION_ID: cid})
            with pytest.raises(httpx.LocalProtocolError, match="another origin"):
                c.get(f"https://127.0.0.1:{server.port}/json", extensions={CONNECTION_ID: cid})
        settle()
        assert (server.connections, other.connections) == (0, 0)
        assert active(pool) == 1 and pool.return_connection(cid) is True


async def test_an_id_for_another_origin_is_refused_by_the_async_transport(server):
    with Server() as other:
        pool = new_pool()
        cid = pool.get_connection(server.url)
        async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
            with pytest.raises(httpx.LocalProtocolError, match="another origin"):
                await c.get(f"{other.url}/json", extensions={CONNECTION_ID: cid})
        settle()
        assert (server.connections, other.connections) == (0, 0)
        assert pool.return_connection(cid) is True


def test_an_id_from_another_pool_or_not_checked_out_is_refused(server):
    pool, elsewhere = new_pool(), new_pool()
    foreign = elsewhere.get_connection(server.url)
    returned = pool.get_connection(server.url)
    assert pool.return_connection(returned) is True
    with httpx.Client(transport=HTTPTransport(pool)) as c:
        for cid in (foreign, returned, str(uuid.uuid4())):
            with pytest.raises(httpx.LocalProtocolError, match="not checked out from this pool"):
                c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid})
    settle()
    assert server.connections == 0
    assert elsewhere.get_stats()["active_connections"] == 1, "the other pool's lease is untouched"
    assert elsewhere.return_connection(foreign) is True


def test_an_id_in_use_by_a_streaming_request_is_refused(server):
    pool = new_pool()
    cid = pool.get_connection(server.url)
    with httpx.Client(transport=HTTPTransport(pool)) as c:
        with c.stream("GET", f"{server.url}/slow-body?t=0.3", extensions={CONNECTION_ID: cid}) as r:
            assert r.status_code == 200
            with pytest.raises(httpx.LocalProtocolError, match="a request is using it"):
                c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid})
            assert pool.connect(cid) is False, "in use by a request"
            assert r.read() == b"helloworld"
        # The response closed: the id is free for the next request, on the same socket.
        assert c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid}).status_code == 200
    assert (server.connections, server.requests) == (1, 2)
    assert pool.return_connection(cid) is True


async def test_an_id_in_use_by_an_async_streaming_request_is_refused(server):
    pool = new_pool()
    cid = pool.get_connection(server.url)
    async with httpx.AsyncClient(transport=AsyncHTTPTransport(pool)) as c:
        async with c.stream("GET", f"{server.url}/slow-body?t=0.3", extensions={CONNECTION_ID: cid}) as r:
            with pytest.raises(httpx.LocalProtocolError, match="a request is using it"):
                await c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid})
            assert await r.aread() == b"helloworld"
        assert (await c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid})).status_code == 200
    assert (server.connections, server.requests) == (1, 2)
    assert pool.return_connection(cid) is True


def test_a_malformed_id_in_the_extension_raises_clearly(server):
    with httpx.Client(transport=HTTPTransport(new_pool())) as c:
        with pytest.raises(httpx.LocalProtocolError, match="not a UUID"):
            c.get(f"{server.url}/json", extensions={CONNECTION_ID: "not-an-id"})
        with pytest.raises(httpx.LocalProtocolError, match="connection id must be a str"):
            c.get(f"{server.url}/json", extensions={CONNECTION_ID: 5})
    settle()
    assert server.connections == 0


def test_a_proxied_request_refuses_a_held_id(server):
    """A proxy applies: the request would go through httpx's transport, not the held
    connection, so it is refused, and neither the proxy nor the server sees anything."""
    pool = new_pool()
    conn_id = pool.get_connection(server.url)
    with ForwardProxy() as proxy:
        with httpx.Client(transport=HTTPTransport(pool, proxy=proxy.url)) as c:
            with pytest.raises(httpx.LocalProtocolError, match="proxy"):
                c.get(f"{server.url}/json", extensions={CONNECTION_ID: conn_id})
            assert c.get(f"{server.url}/json").status_code == 200, "without the id, proxied as usual"
        assert proxy.forwarded == 1
    assert server.requests == 1
    assert pool.return_connection(conn_id) is True


# --- failures on a held connection: never resent ---------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_request_failing_on_a_held_connection_is_not_resent(method):
    """The connection was used once already (a reused connection is where the engine would
    replay a GET on a fresh one, as the contrast shows). On a held id, never: the server sees
    the failed request once. The id stays held; the next request opens a new connection."""
    with DropServer() as server:
        pool = new_pool()
        transport = HTTPTransport(pool)
        cid = pool.get_connection(server.url)
        with httpx.Client(transport=transport) as c:
            c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid})
            with pytest.raises(httpx.RemoteProtocolError):
                c.request(method, f"{server.url}/drop", content=b"x", extensions={CONNECTION_ID: cid})
            settle()
            assert (server.connections, server.requests) == (1, 2), "resent"
            assert transport.stats()["retried_on_fresh_connection"] == 0
            assert active(pool) == 1 and pool.health_check(cid) is False, "held; its socket closed"
            assert c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid}).status_code == 200
            assert (server.connections, server.requests) == (2, 3)
            assert pool.return_connection(cid) is True

            if method == "GET":  # the contrast: without an id, a GET on a reused connection is replayed
                c.get(f"{server.url}/json")
                with pytest.raises(httpx.RemoteProtocolError):
                    c.get(f"{server.url}/drop")
                assert transport.stats()["retried_on_fresh_connection"] == 1


# --- limiting concurrent calls per endpoint ---------------------------------------------------


@pytest.mark.parametrize("form", ["acquire", "connection"])
def test_acquire_limits_concurrent_calls_per_endpoint(form):
    """6 threads, 3 calls each, at most 2 at once: the pool's per-endpoint limit is the
    semaphore, and every call goes out on the connection its id names."""
    with InFlightServer() as server:
        pool = new_pool(max_connections_per_endpoint=2)
        errors = []

        def call(c):
            if form == "acquire":
                cid = pool.acquire(server.url, timeout=10)
                try:
                    return c.get(f"{server.url}/work", extensions={CONNECTION_ID: cid})
                finally:
                    pool.return_connection(cid)
            with pool.connection(server.url, timeout=10) as cid:
                return c.get(f"{server.url}/work", extensions={CONNECTION_ID: cid})

        def worker():
            try:
                with httpx.Client(transport=HTTPTransport(pool)) as c:
                    for _ in range(3):
                        assert call(c).text == "done"
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive()
        assert errors == []
        assert server.requests == 18
        assert server.max_in_flight == 2, f"{server.max_in_flight} calls at once (limit 2)"
        assert server.connections == 2 and server.max_open_connections == 2
        s = pool.get_stats()
        assert s["waits"] > 0 and s["active_connections"] == 0 and s["connections_created"] == 2


def test_a_transport_request_without_an_id_waits_for_held_ids(server):
    """Held ids and the transports share one pool and its limits: with the only connection held,
    a request without an id waits for it (and times out with httpx.PoolTimeout)."""
    pool = new_pool(max_connections_per_endpoint=1)
    cid = pool.acquire(server.url)
    with httpx.Client(transport=HTTPTransport(pool), timeout=httpx.Timeout(5, pool=0.1)) as c:
        with pytest.raises(httpx.PoolTimeout):
            c.get(f"{server.url}/json")
        assert c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid}).status_code == 200
        assert pool.return_connection(cid) is True
        assert c.get(f"{server.url}/json").status_code == 200
    assert (server.connections, server.requests) == (1, 2)


def test_transport_settings_that_differ_from_the_ids_are_refused_over_tls():
    """Ids are keyed under default TLS settings and HTTP/1.1. Over https a transport with other
    settings (here http2=True, or verify=False) cannot use them: nothing is sent."""
    pool = new_pool()
    # Nothing listens: a request that got past the check would fail with ConnectError instead.
    url = f"https://127.0.0.1:{refused_port()}"
    cid = pool.get_connection(url)
    for kw in ({"http2": True}, {"verify": False}):
        with httpx.Client(transport=HTTPTransport(pool, **kw)) as c:
            with pytest.raises(httpx.LocalProtocolError, match="TLS or HTTP version settings"):
                c.get(f"{url}/json", extensions={CONNECTION_ID: cid})
    assert pool.return_connection(cid) is True


def test_asyncio_run_twice_with_one_held_id(server):
    """No state bound to an event loop: one id, two asyncio.run calls, one connection."""
    pool = new_pool()
    transport = AsyncHTTPTransport(pool)
    cid = pool.get_connection(server.url)

    async def one():
        async with httpx.AsyncClient(transport=transport) as c:
            return (await c.get(f"{server.url}/json", extensions={CONNECTION_ID: cid})).status_code

    assert [asyncio.run(one()), asyncio.run(one())] == [200, 200]
    assert (server.connections, server.requests) == (1, 2)
    assert pool.return_connection(cid) is True
