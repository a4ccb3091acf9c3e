"""HTTP/2 through fast_litellm's transports, next to httpx's own HTTP/2 (httpcore + h2).

Each case runs on fast_litellm's transports ("ours-sync" / "ours-async") and, where httpx's stock
transport is the reference, on httpx.HTTPTransport / httpx.AsyncHTTPTransport too ("stock-...").
The stock runs must pass: they show what is expected. Where stock httpx falls short of the design
(it sends no RST_STREAM when a request is cancelled or a body closed early, does not retry a
REFUSED_STREAM, and fails the streams a graceful GOAWAY lets finish), the stock run asserts the
part of the contract it meets, and the stricter part is asserted for ours only; each such place
says so.

The peer is tests/python/h2server.py: an asyncio + h2 server on 127.0.0.1 that counts on its side
what it saw (connections, TLS handshakes, streams per connection, requests processed, most streams
open at once, RST_STREAMs from the client, PINGs).

Select the stock half with `-k stock`, ours with `-k ours`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

import anyio
import h2.errors
import httpx
import pytest

import fast_litellm
from h2server import H2Server, pattern
from helpers import SyncFace, eventually as wait_for, new_pool

ALL = ["stock-sync", "stock-async", "ours-sync", "ours-async"]
ASYNC = ["stock-async", "ours-async"]
CANCEL = h2.errors.ErrorCodes.CANCEL

pytestmark = pytest.mark.timeout(30)


def ours(kind: str) -> bool:
    return kind.startswith("ours")


def make_transport(kind, server: H2Server, pool=None, *, http1=True, http2=True, **extra):
    """The transport a kind names, for this server (its CA trusted when it speaks TLS)."""
    is_async = kind.endswith("async")
    if ours(kind):
        cls = fast_litellm.AsyncHTTPTransport if is_async else fast_litellm.HTTPTransport
        verify = server.ca_path if server.tls else True
        return cls(pool if pool is not None else new_pool(), verify=verify, http1=http1, http2=http2, **extra)
    cls = httpx.AsyncHTTPTransport if is_async else httpx.HTTPTransport
    verify = server.client_context() if server.tls else True  # (httpx 0.28 deprecates a path)
    return cls(verify=verify, http1=http1, http2=http2, limits=httpx.Limits(max_connections=512))


def endpoint(pool, server) -> dict:
    """The pool's stats for the server's origin, summed over its keys ({} when it has none).

    The pool keys an origin reached with custom TLS settings (a CA bundle here) apart, e.g.
    "https://127.0.0.1:PORT (tls settings #1)"; a private pool per test has one of them."""
    total = collections.Counter()
    for key, stats in pool.get_stats()["endpoints"].items():
        if key == server.origin or key.startswith(server.origin + " "):
            total.update(stats)
    return dict(total)


def settled(pool, server) -> bool:
    """Nothing checked out, no stream in flight, and the counts add up."""
    s, e = pool.get_stats(), endpoint(pool, server)
    return (s["active_connections"] == 0 and s["total_connections"] == s["idle_connections"]
            and e.get("active", 0) == 0 and e.get("streams_in_use", 0) == 0)


def assert_settled(pool, server):
    assert wait_for(lambda: settled(pool, server)), pool.get_stats()


def resets_of(server, path) -> list[int]:
    """Error codes of the client's RST_STREAMs on the streams that carried `path`."""
    streams = {(s.connection, s.stream_id) for s in server.requests() if s.path == path}
    return [code for conn, sid, code in server.resets() if (conn, sid) in streams]


class Client(SyncFace):
    """An httpx client over one of the four transports (`kind`), sync-faced (see SyncFace)."""

    def __init__(self, kind, server, *, pool=None, http1=True, http2=True, timeout=10.0):
        self.pool = pool if pool is not None or not ours(kind) else new_pool()
        self.transport = make_transport(kind, server, self.pool, http1=http1, http2=http2)
        super().__init__(kind, self.transport, timeout)

    def get(self, url, **kw) -> httpx.Response:
        return self.request("GET", url, **kw)

    def outcome(self, method, url, **kw):
        """The response, or the httpx error raised."""
        try:
            return self.request(method, url, **kw)
        except httpx.HTTPError as exc:
            return exc

    @contextlib.contextmanager
    def stream(self, method, url, **kw):
        """Yields a function returning the next raw chunk (None at the end)."""
        if not self.is_async:
            with self.client.stream(method, url, **kw) as response:
                chunks = response.iter_raw()
                yield lambda: next(chunks, None)
            return
        manager = self.client.stream(method, url, **kw)
        response = self._run(manager.__aenter__())
        chunks = response.aiter_raw().__aiter__()

        def next_chunk():
            try:
                return self._run(chunks.__anext__())
            except StopAsyncIteration:
                return None

        try:
            yield next_chunk
        finally:
            self._run(chunks.aclose())
            self._run(manager.__aexit__(None, None, None))


@pytest.fixture(params=ALL)
def kind(request):
    return request.param


@pytest.fixture(params=ASYNC)
def async_kind(request):
    return request.param


@pytest.fixture
def tls_server():
    with H2Server(tls=True) as server:
        yield server


# --- a. HTTP/2 by ALPN -----------------------------------------------------------------------------


def test_h2_is_negotiated_by_alpn_and_one_connection_carries_20_requests(kind, tls_server):
    server = tls_server
    with Client(kind, server) as c:
        for i in range(20):
            body = b"x" * (i * 100)
            r = c.request("POST" if i % 2 else "GET", f"{server.url}/json?i={i}", content=body or None,
                          headers={"x-tag": f"a-{i}"})
            assert (r.status_code, r.http_version, r.reason_phrase) == (200, "HTTP/2", "OK")
            assert r.headers["content-type"] == "application/json"
            echo = r.json()
            assert (echo["method"], echo["path"], echo["body_length"]) == (r.request.method, f"/json?i={i}", len(body))
            assert ["x-tag", f"a-{i}"] in echo["headers"]
            assert echo["protocol"] == "h2"
        big = c.get(f"{server.url}/big?size=2000000")
        assert big.content == pattern(2_000_000)
        if ours(kind):
            assert_settled(c.pool, server)
            e = endpoint(c.pool, server)
            assert (e["http2_connections"], e["http1_connections"], e["total"]) == (1, 0, 1), e
            stats = c.transport.stats()
            assert set(stats) == {"requests", "retried_on_fresh_connection", "bodies_drained",
                                  "bodies_not_drained", "proxied_requests"}
            assert stats["requests"] == 21
    assert (server.connections, server.tls_handshakes) == (1, 1)
    assert server.streams_per_connection() == [21]
    assert [s.header("x-tag") for s in server.requests()[:20]] == [f"a-{i}" for i in range(20)]
    assert server.connection_infos()[0].alpn == "h2"


def test_request_and_response_fields_over_h2_are_those_of_stock(kind, tls_server):
    # The same request through stock httpx and through `kind`: the server receives the same
    # pseudo-headers and the same fields (a repeated name keeps the order of its values;
    # connection-specific fields are not sent over HTTP/2), and the caller gets the same head.
    server = tls_server
    fields = [("X-Dup", "1"), ("X-Other", "z"), ("X-Dup", "2"), ("Authorization", "Bearer k")]
    got = []
    for k in ("stock-sync", kind):
        with Client(k, server) as c:
            r = c.request("POST", f"{server.url}/json?q=1", headers=fields, content=b"abc")
            got.append((r, server.requests()[-1]))
    (stock, stock_seen), (mine, seen) = got

    def pseudo(s):
        return {k: v for k, v in s.headers if k.startswith(":")}

    def regular(s):
        return [(k, v) for k, v in s.headers if not k.startswith(":")]

    assert pseudo(seen) == pseudo(stock_seen)
    assert sorted(regular(seen)) == sorted(regular(stock_seen))
    assert [v for k, v in regular(seen) if k == "x-dup"] == ["1", "2"]
    assert not {"connection", "keep-alive", "transfer-encoding", "upgrade", "host"} & {k for k, _ in regular(seen)}
    assert seen.body == b"abc"
    assert [(k.lower(), v) for k, v in mine.headers.raw if k.lower() != b"content-length"] == \
           [(k.lower(), v) for k, v in stock.headers.raw if k.lower() != b"content-length"]
    assert (mine.status_code, mine.reason_phrase, mine.http_version) == (200, "OK", "HTTP/2")


def test_a_status_other_than_200_has_the_standard_reason_phrase(kind, tls_server):
    with Client(kind, tls_server) as c:
        r = c.get(f"{tls_server.url}/status?code=404")
    assert (r.status_code, r.reason_phrase, r.http_version) == (404, "Not Found", "HTTP/2")


# --- b. a server offering only HTTP/1.1 ------------------------------------------------------------


def test_a_server_offering_only_http11_is_spoken_to_in_http11(kind):
    with H2Server(tls=True, alpn=["http/1.1"]) as server:
        with Client(kind, server) as c:
            for i in range(3):
                r = c.request("POST", f"{server.url}/json", content=b"abc")
                assert (r.status_code, r.http_version, r.reason_phrase) == (200, "HTTP/1.1", "OK")
                assert (r.json()["protocol"], r.json()["body_length"]) == ("http/1.1", 3)
            if ours(kind):
                assert_settled(c.pool, server)
                e = endpoint(c.pool, server)
                assert (e["http1_connections"], e["http2_connections"], e["streams_in_use"]) == (1, 0, 0), e
        assert server.connections == 1 and server.streams_per_connection() == [3]
        assert server.connection_infos()[0].alpn == "http/1.1"


# --- c. cleartext ----------------------------------------------------------------------------------


def test_cleartext_with_prior_knowledge_speaks_h2(kind):
    with H2Server() as server:
        with Client(kind, server, http1=False, http2=True) as c:
            for _ in range(3):
                r = c.get(f"{server.url}/json")
                assert (r.http_version, r.reason_phrase, r.json()["protocol"]) == ("HTTP/2", "OK", "h2")
            if ours(kind):
                assert_settled(c.pool, server)
                assert endpoint(c.pool, server)["http2_connections"] == 1
        assert [i.protocol for i in server.connection_infos()] == ["h2"]
        assert server.streams_per_connection() == [3]


def test_cleartext_with_http2_alone_speaks_http11(kind):
    # As httpx: without TLS there is no ALPN, so http2=True (http1 left True) means HTTP/1.1.
    with H2Server() as server:
        with Client(kind, server, http2=True) as c:
            r = c.get(f"{server.url}/json")
            assert (r.http_version, r.json()["protocol"]) == ("HTTP/1.1", "http/1.1")
        assert [i.protocol for i in server.connection_infos()] == ["http/1.1"]


# --- d. many requests, few connections -------------------------------------------------------------


@pytest.mark.timeout(40)
def test_200_concurrent_requests_respect_the_stream_limit(async_kind):
    # 200 requests at once, the server allowing 50 streams per connection: all succeed, no
    # connection ever carries more than 50 at once. Ours (10 connections allowed per endpoint)
    # opens exactly 4 connections; stock httpx multiplexes on one and queues the rest.
    pool = new_pool(max_connections=20, max_connections_per_endpoint=10) if ours(async_kind) else None
    with H2Server(tls=True, max_concurrent_streams=50) as server:
        async def main():
            async with httpx.AsyncClient(transport=make_transport(async_kind, server, pool), timeout=20) as c:
                return await asyncio.gather(*[c.get(f"{server.url}/slow?delay=0.2") for _ in range(200)],
                                            return_exceptions=True)

        results = asyncio.run(main())
        errors = [r for r in results if not isinstance(r, httpx.Response)]
        assert errors == []
        assert {(r.status_code, r.http_version) for r in results} == {(200, "HTTP/2")}
        assert server.count("GET", "/slow") == 200
        assert server.max_open_per_connection <= 50, server.connection_infos()
        assert server.limit_violations == 0
        if ours(async_kind):
            assert server.connections == 4, server.connection_infos()
            assert_settled(pool, server)
            e = endpoint(pool, server)
            assert (e["active"], e["streams_in_use"], e["http2_connections"], e["http1_connections"]) == (0, 0, 4, 0), e


# --- e. streaming ----------------------------------------------------------------------------------


def test_50_event_streams_at_once_arrive_whole_and_in_order(async_kind, tls_server):
    server = tls_server
    pool = new_pool() if ours(async_kind) else None
    expected = [f'data: {{"i": {i}}}' for i in range(10)] + ["data: [DONE]"]

    async def main():
        async with httpx.AsyncClient(transport=make_transport(async_kind, server, pool), timeout=20) as c:
            async def one():
                async with c.stream("GET", f"{server.url}/sse?events=10&delay=0.03") as r:
                    assert r.http_version == "HTTP/2"
                    return [line async for line in r.aiter_lines() if line]

            return await asyncio.gather(*[one() for _ in range(50)])

    results = asyncio.run(main())
    assert all(lines == expected for lines in results), [lines for lines in results if lines != expected][:1]
    assert server.count("GET", "/sse") == 50
    assert server.max_open_per_connection <= 100 and server.limit_violations == 0
    if ours(async_kind):
        assert server.connections == 1
        assert_settled(pool, server)


# --- f. cancellation and early close ---------------------------------------------------------------


def test_a_cancelled_request_resets_its_stream_and_the_connection_is_reused(async_kind, tls_server):
    # A request cancelled in flight (asyncio.wait_for, then task.cancel()): the next requests go
    # on the same connection. Ours resets each cancelled stream (RST_STREAM CANCEL); stock httpx
    # sends no RST_STREAM (httpcore just forgets the stream), so that part is ours only.
    server = tls_server
    pool = new_pool() if ours(async_kind) else None

    async def main():
        async with httpx.AsyncClient(transport=make_transport(async_kind, server, pool), timeout=20) as c:
            assert (await c.get(f"{server.url}/json")).status_code == 200
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.get(f"{server.url}/hang"), 0.5)
            task = asyncio.ensure_future(c.get(f"{server.url}/hang"))
            while server.count("GET", "/hang") < 2:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return [(await c.get(f"{server.url}/json")).json()["connection"] for _ in range(5)]

    assert asyncio.run(main()) == [1] * 5
    assert server.connections == 1
    if ours(async_kind):
        assert wait_for(lambda: len(resets_of(server, "/hang")) == 2), server.resets()
        assert resets_of(server, "/hang") == [CANCEL, CANCEL]
        assert wait_for(lambda: server.open_streams == 0)
        assert_settled(pool, server)


def test_a_body_closed_early_resets_its_stream_and_the_connection_is_reused(kind, tls_server):
    # An event stream closed after its first event: ours resets the stream (no drain is needed
    # on HTTP/2) and the connection goes on carrying requests. Stock: reused, no RST_STREAM.
    server = tls_server
    with Client(kind, server) as c:
        with c.stream("GET", f"{server.url}/sse?events=200&delay=0.01") as next_chunk:
            assert next_chunk().startswith(b'data: {"i": 0}')
        assert c.get(f"{server.url}/json").json()["connection"] == 1
        if ours(kind):
            assert wait_for(lambda: resets_of(server, "/sse") == [CANCEL]), server.resets()
            assert_settled(c.pool, server)
            assert endpoint(c.pool, server)["http2_connections"] == 1
    assert server.connections == 1


# --- g. GOAWAY under load --------------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_goaway_under_load_loses_nothing_and_duplicates_nothing(async_kind, tls_server):
    # 100 POSTs started 5 ms apart, each 0.3 s long on the server; a graceful GOAWAY after 0.25 s.
    # Every POST succeeds or raises an httpx error; none reaches the server twice; each success was
    # processed; requests after the GOAWAY go on a new connection. Ours: the server processed
    # exactly the POSTs that succeeded (those above the GOAWAY's last stream id were never
    # processed and may be sent again; those below it are answered). Stock httpx fails the streams
    # the GOAWAY lets finish (h2's state machine refuses their frames), so it only meets
    # processed >= succeeded.
    server = tls_server
    pool = new_pool(max_connections_per_endpoint=10) if ours(async_kind) else None

    async def main():
        async with httpx.AsyncClient(transport=make_transport(async_kind, server, pool), timeout=20) as c:
            async def one(i):
                await asyncio.sleep(i * 0.005)
                try:
                    r = await c.post(f"{server.url}/slow?delay=0.3", content=f"post-{i}".encode(),
                                     headers={"x-tag": f"g-{i}"})
                except httpx.HTTPError as exc:
                    return i, exc
                return i, r

            tasks = [asyncio.ensure_future(one(i)) for i in range(100)]
            await asyncio.sleep(0.25)
            await asyncio.to_thread(server.goaway)
            results = await asyncio.gather(*tasks)
            after = await c.post(f"{server.url}/json", content=b"after", headers={"x-tag": "after"})
            return results, after

    results, after = asyncio.run(main())
    assert server.connection_infos()[0].goaway_last_stream_id is not None
    succeeded = set()
    for i, result in results:
        assert isinstance(result, (httpx.Response, httpx.HTTPError)), result
        if isinstance(result, httpx.Response):
            assert result.status_code == 200 and ["x-tag", f"g-{i}"] in result.json()["headers"]
            succeeded.add(f"g-{i}")
    tags = collections.Counter(s.header("x-tag") for s in server.requests() if s.method == "POST")
    assert [t for t, n in tags.items() if n > 1] == []
    processed = set(tags) - {"after"}
    # The GOAWAY came mid-load: POSTs were processed on the first connection and on later ones.
    conns = {s.connection for s in server.requests() if s.method == "POST" and s.header("x-tag") != "after"}
    assert 1 in conns and max(conns) > 1, conns
    assert succeeded <= processed
    if ours(async_kind):
        assert processed == succeeded, (len(processed), len(succeeded))
    assert after.status_code == 200 and after.json()["connection"] > 1
    if ours(async_kind):
        assert_settled(pool, server)


def test_a_post_above_the_goaway_last_stream_id_is_sent_again_once(kind, tls_server):
    # The deterministic form of the race above: the server answers the POST's stream with a
    # GOAWAY whose last stream id is below it, so the POST was not processed; it is sent again
    # on a new connection (even a POST: RFC 9113 §6.8) and processed once.
    server = tls_server
    with Client(kind, server) as c:
        assert c.get(f"{server.url}/json").status_code == 200
        server.goaway_on_next_stream()
        r = c.outcome("POST", f"{server.url}/json", content=b"above-last", headers={"x-tag": "g2"})
        assert isinstance(r, httpx.Response), r
        assert (r.status_code, r.json()["body_length"], r.json()["connection"]) == (200, 10, 2)
        assert c.get(f"{server.url}/json").json()["connection"] == 2
        if ours(kind):
            assert_settled(c.pool, server)
            assert endpoint(c.pool, server)["http2_connections"] == 1
    assert server.count("POST") == 1
    first = server.connection_infos()[0]
    assert (first.goaway_last_stream_id, first.ignored, first.closed) == (1, 1, True)


# --- h. REFUSED_STREAM -----------------------------------------------------------------------------


def test_a_refused_stream_is_sent_again_and_processed_once(kind, tls_server):
    # A stream refused (RST_STREAM REFUSED_STREAM) was not processed, so even a POST may be sent
    # again: ours succeeds, and the server processed it once. Stock httpx does not retry it (it
    # raises RemoteProtocolError); the server then processed it zero times.
    server = tls_server
    with Client(kind, server) as c:
        assert c.get(f"{server.url}/json").status_code == 200  # the connection is up first
        server.refuse_next(1)
        result = c.outcome("POST", f"{server.url}/json", content=b"refused-once", headers={"x-tag": "h"})
        if ours(kind):
            assert isinstance(result, httpx.Response), result
            assert_settled(c.pool, server)
        if isinstance(result, httpx.Response):
            assert result.status_code == 200 and result.json()["body_length"] == 12
        else:
            assert isinstance(result, httpx.RemoteProtocolError), result
    assert server.refused == 1
    assert server.count("POST") == (1 if isinstance(result, httpx.Response) else 0)


# --- i. a dead peer --------------------------------------------------------------------------------


def test_a_peer_that_stops_reading_gives_a_read_timeout(kind, tls_server):
    # The server goes silent on its connection (no more reads, no PING answers, socket open): a
    # request on it fails with ReadTimeout after the 1 s read timeout; the server never saw it.
    server = tls_server
    with Client(kind, server, timeout=httpx.Timeout(5, read=1)) as c:
        assert c.get(f"{server.url}/json").status_code == 200
        server.ignore_pings = True
        start = time.monotonic()
        result = c.outcome("GET", f"{server.url}/json")
        elapsed = time.monotonic() - start
        assert isinstance(result, httpx.ReadTimeout), result
        assert elapsed < 4, elapsed
        assert server.count() == 1 and server.connections == 1


def test_after_a_dead_peer_times_out_the_next_request_goes_on_a_new_connection(kind, tls_server):
    # Then (stock: httpcore marks a connection broken after a read timeout) the silent connection
    # is not handed out again: the next request opens connection 2 and succeeds.
    server = tls_server
    with Client(kind, server, timeout=httpx.Timeout(5, read=1)) as c:
        assert c.get(f"{server.url}/json").status_code == 200
        server.ignore_pings = True
        assert isinstance(c.outcome("GET", f"{server.url}/json"), httpx.ReadTimeout)
        server.ignore_pings = False  # (the silent connection stays silent)
        r = c.outcome("GET", f"{server.url}/json")
        assert isinstance(r, httpx.Response), r
        assert r.status_code == 200 and r.json()["connection"] == 2
        if ours(kind):
            assert_settled(c.pool, server)


# --- j. timeouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/hang", "/slow?delay=5"], ids=["body-stalls", "head-stalls"])
def test_a_read_timeout_is_raised_and_the_pool_stays_exact(kind, tls_server, path):
    server = tls_server
    with Client(kind, server, timeout=httpx.Timeout(5, read=0.5)) as c:
        assert c.get(f"{server.url}/json").status_code == 200
        start = time.monotonic()
        result = c.outcome("GET", f"{server.url}{path}")
        assert isinstance(result, httpx.ReadTimeout), result
        assert time.monotonic() - start < 3
        assert c.get(f"{server.url}/json").status_code == 200
        if ours(kind):
            assert wait_for(lambda: resets_of(server, path.split("?")[0]) == [CANCEL]), server.resets()
            assert_settled(c.pool, server)
            s = c.pool.get_stats()
            assert s["total_connections"] == s["idle_connections"] == endpoint(c.pool, server)["total"] <= 2


# --- k. trio ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_h2_under_every_anyio_backend(async_kind, tls_server, backend):
    server = tls_server
    pool = new_pool() if ours(async_kind) else None

    async def main():
        async with httpx.AsyncClient(transport=make_transport(async_kind, server, pool), timeout=10) as c:
            versions = []

            async def get(i):
                r = await c.get(f"{server.url}/slow?delay=0.1&i={i}")
                versions.append((r.status_code, r.http_version, r.json()["connection"]))

            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(get, i)
            with anyio.move_on_after(0.5) as scope:
                await c.get(f"{server.url}/hang")
            assert scope.cancelled_caught
            async with c.stream("GET", f"{server.url}/sse?events=5") as r:
                lines = [line async for line in r.aiter_lines() if line]
            return versions, lines

    versions, lines = anyio.run(main, backend=backend)
    assert versions == [(200, "HTTP/2", 1)] * 10
    assert lines[-1] == "data: [DONE]" and len(lines) == 6
    assert server.connections == 1
    if ours(async_kind):
        assert wait_for(lambda: resets_of(server, "/hang") == [CANCEL]), server.resets()
        assert_settled(pool, server)
