"""The `trace` request extension: the events httpcore emits, by name and in order, compared with
httpx's own transport on the same server (sync, and async under asyncio and trio)."""

import ssl

import anyio
import httpx
import pytest
import trustme

from fast_litellm import AsyncHTTPTransport, HTTPTransport
from helpers import new_pool
from servers import Server, refused_port


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_server(ca):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    with Server(tls=ctx) as s:
        yield s


def sync_names(client, urls, **kw):
    """For each URL in turn (one client, so the connection is reused): the event names seen."""
    seen = []
    for url in urls:
        names = []
        try:
            client.get(url, extensions={"trace": lambda name, info: names.append(name)}, **kw).read()
        except httpx.TransportError:
            pass
        seen.append(names)
    return seen


def async_names(make_client, urls, backend, **kw):
    async def main():
        seen = []
        async with make_client() as client:
            for url in urls:
                names = []

                async def trace(name, info):
                    names.append(name)

                try:
                    await (await client.get(url, extensions={"trace": trace}, **kw)).aread()
                except httpx.TransportError:
                    pass
                seen.append(names)
        return seen

    return anyio.run(main, backend=backend)


def test_sync_fresh_and_reused_connection(server):
    urls = [f"{server.url}/json", f"{server.url}/json", f"{server.url}/chunked?n=3"]
    with httpx.Client() as stock, httpx.Client(transport=HTTPTransport(new_pool())) as ours:
        expected, got = sync_names(stock, urls), sync_names(ours, urls)
    assert expected[0][:2] == ["connection.connect_tcp.started", "connection.connect_tcp.complete"]
    assert not expected[1][0].startswith("connection.")
    assert got == expected


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_fresh_and_reused_connection(server, backend):
    urls = [f"{server.url}/json", f"{server.url}/json", f"{server.url}/chunked?n=3"]
    expected = async_names(httpx.AsyncClient, urls, backend)
    pool = new_pool()
    got = async_names(lambda: httpx.AsyncClient(transport=AsyncHTTPTransport(pool)), urls, backend)
    assert got == expected


def test_sync_tls_connection(ca, tls_server, tmp_path):
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    urls = [f"{tls_server.url}/json", f"{tls_server.url}/json"]
    with httpx.Client(verify=ssl.create_default_context(cafile=str(bundle))) as stock, \
            httpx.Client(transport=HTTPTransport(new_pool(), verify=str(bundle))) as ours:
        expected, got = sync_names(stock, urls), sync_names(ours, urls)
    assert "connection.start_tls.complete" in expected[0]
    assert got == expected


def test_sync_failures(server):
    """A refused connection; a read timeout on a reused connection."""
    urls = [f"http://127.0.0.1:{refused_port()}/", f"{server.url}/json", f"{server.url}/slow-head?t=1"]
    timeout = httpx.Timeout(5, read=0.2)
    with httpx.Client() as stock, httpx.Client(transport=HTTPTransport(new_pool())) as ours:
        expected, got = sync_names(stock, urls, timeout=timeout), sync_names(ours, urls, timeout=timeout)
    assert expected[0] == ["connection.connect_tcp.started", "connection.connect_tcp.failed"]
    assert "http11.receive_response_headers.failed" in expected[2]
    assert got == expected


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_failures(server, backend):
    urls = [f"http://127.0.0.1:{refused_port()}/", f"{server.url}/json", f"{server.url}/slow-head?t=1"]
    timeout = httpx.Timeout(5, read=0.2)
    expected = async_names(httpx.AsyncClient, urls, backend, timeout=timeout)
    pool = new_pool()
    got = async_names(lambda: httpx.AsyncClient(transport=AsyncHTTPTransport(pool)), urls, backend, timeout=timeout)
    assert got == expected


def test_sync_stream_closed_early(server):
    url = f"{server.url}/sse?n=50"

    def names(client):
        seen = []
        with client.stream("GET", url, extensions={"trace": lambda name, info: seen.append(name)}) as r:
            for _ in r.iter_raw():
                break
        return seen

    # Fresh connections on both sides: after an early close httpx closes its connection, while
    # ours is drained and reused.
    with httpx.Client() as stock, httpx.Client(transport=HTTPTransport(new_pool())) as ours:
        assert names(ours) == names(stock)


def test_info_of_the_events(server):
    events = []
    with httpx.Client(transport=HTTPTransport(new_pool())) as c:
        r = c.get(f"{server.url}/json", extensions={"trace": lambda name, info: events.append((name, info))})
    info = dict(events)
    assert info["connection.connect_tcp.started"]["host"] == "127.0.0.1"
    assert info["connection.connect_tcp.started"]["port"] == server.port
    assert info["http11.send_request_headers.started"]["request"].url.target == b"/json"
    version, status, reason, headers = info["http11.receive_response_headers.complete"]["return_value"]
    assert (version, status, reason) == (b"HTTP/1.1", 200, b"OK")
    assert [(k.lower(), v) for k, v in headers] == [(k.lower(), v) for k, v in r.headers.raw]

    events.clear()
    with httpx.Client(transport=HTTPTransport(new_pool())) as c:
        with pytest.raises(httpx.ConnectError) as raised:
            c.get(f"http://127.0.0.1:{refused_port()}/", extensions={"trace": lambda name, info: events.append((name, info))})
    assert events[-1] == ("connection.connect_tcp.failed", {"exception": raised.value})


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_accepts_a_plain_function(server, backend):
    names = []

    async def main():
        async with httpx.AsyncClient(transport=AsyncHTTPTransport(new_pool())) as c:
            await c.get(f"{server.url}/json", extensions={"trace": lambda name, info: names.append(name)})

    anyio.run(main, backend=backend)
    assert names[-1] == "http11.response_closed.complete"


def test_sync_refuses_a_coroutine_function(server):
    async def trace(name, info):
        pass

    with httpx.Client(transport=HTTPTransport(new_pool())) as c:
        with pytest.raises(TypeError, match="normal function"):
            c.get(f"{server.url}/json", extensions={"trace": trace})


def connection_story(client, url):
    """What a tool built on the trace extension reads of a new connection: the addresses of
    `connect_tcp.complete`'s stream, and the TLS session of `start_tls.complete`'s."""
    story = {}

    def trace(name, info):
        if name == "connection.connect_tcp.complete":
            stream = info["return_value"]
            story["server_addr"] = stream.get_extra_info("server_addr")
            story["client_ip"] = stream.get_extra_info("client_addr")[0]
        elif name == "connection.start_tls.complete":
            ssl_object = info["return_value"].get_extra_info("ssl_object")
            story["tls"] = (ssl_object.version(), ssl_object.selected_alpn_protocol())

    client.get(url, extensions={"trace": trace})
    return story


def test_connection_events_carry_the_addresses_and_tls_session(ca, tls_server, tmp_path):
    # httpx's command line (`httpx URL -v`) prints "* Connected to '127.0.0.1' on port N" from
    # connect_tcp.complete's server_addr, and the TLS version and ALPN from start_tls.complete.
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with httpx.Client(verify=ssl.create_default_context(cafile=str(bundle))) as stock, \
            httpx.Client(transport=HTTPTransport(new_pool(), verify=str(bundle))) as ours:
        expected, got = connection_story(stock, f"{tls_server.url}/json"), connection_story(ours, f"{tls_server.url}/json")
    assert expected == {"server_addr": ("127.0.0.1", tls_server.port), "client_ip": "127.0.0.1",
                        "tls": ("TLSv1.3", None)}  # the test server selects no ALPN protocol
    assert got == expected


def test_http2_events_are_httpcores(tmp_path):
    from h2server import H2Server

    with H2Server(tls=True) as h2:
        urls = [f"{h2.url}/json", f"{h2.url}/json"]
        with httpx.Client(http2=True, verify=h2.client_context()) as stock, \
                httpx.Client(transport=HTTPTransport(new_pool(), verify=h2.ca_path, http2=True)) as ours:
            expected, got = sync_names(stock, urls), sync_names(ours, urls)
            info = []
            ours.get(urls[0], extensions={"trace": lambda name, i: info.append((name, i))})
    assert "http2.send_connection_init.started" in expected[0] and expected[1][0] == "http2.send_request_headers.started"
    assert got == expected
    by_name = dict(info)
    status, headers = by_name["http2.receive_response_headers.complete"]["return_value"]
    assert status == 200 and (b"content-type", b"application/json") in headers
    assert by_name["http2.send_request_headers.started"]["stream_id"] % 2 == 1  # a client stream
