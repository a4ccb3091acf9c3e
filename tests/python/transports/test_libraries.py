"""httpx and httpx2 side by side in one process (LiteLLM on httpx, the openai SDK on httpx2): each
behaviour runs on fast_litellm's transports for both libraries, sync and async, and what a client
of either library sees is the same, in that library's own classes. The whole behaviour suite also
runs with httpx aliased to httpx2 (FAST_LITELLM_TEST_LIBRARY=httpx2, see conftest.py)."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest

import fast_litellm
from h2server import H2Server
from servers import ForwardProxy, Server, refused_port

httpx2 = pytest.importorskip("httpx2")  # CPython 3.11+
import fast_litellm.httpx2  # noqa: E402

LIBRARIES = {
    "httpx": (httpx, fast_litellm.HTTPTransport, fast_litellm.AsyncHTTPTransport),
    "httpx2": (httpx2, fast_litellm.httpx2.HTTPTransport, fast_litellm.httpx2.AsyncHTTPTransport),
}


@pytest.fixture(params=[(lib, mode) for lib in LIBRARIES for mode in ("sync", "async")], ids="-".join)
def client(request):
    """Clients of one library and mode over fast_litellm's transports of that library."""
    name, mode = request.param
    lib, sync_cls, async_cls = LIBRARIES[name]
    return Client(lib, mode, sync_cls, async_cls)


class Client:
    def __init__(self, lib, mode, sync_cls, async_cls, **transport_args):
        self.lib, self.mode = lib, mode
        self.transport_args = transport_args
        self.sync_cls, self.async_cls = sync_cls, async_cls

    def _client(self, **extra):
        args = dict(self.transport_args, **extra)
        if self.mode == "sync":
            return self.lib.Client(transport=self.sync_cls(**args), timeout=5)
        return self.lib.AsyncClient(transport=self.async_cls(**args), timeout=5)

    def run(self, work, **transport_args):
        """`work(client)` with a client of this library and mode: a coroutine function for async."""
        with_client = self._client(**transport_args)
        if self.mode == "sync":
            with with_client as c:
                return work(c)

        async def main():
            async with with_client as c:
                return await work(c)
        return asyncio.run(main())

    def get(self, url, **kw):
        if self.mode == "sync":
            return self.run(lambda c: c.get(url, **kw))

        async def work(c):
            return await c.get(url, **kw)
        return self.run(work)

    def stream_chunks(self, url):
        if self.mode == "sync":
            def work(c):
                with c.stream("GET", url) as r:
                    return r, list(r.iter_raw())
            return self.run(work)

        async def work(c):
            async with c.stream("GET", url) as r:
                return r, [chunk async for chunk in r.aiter_raw()]
        return self.run(work)


def test_responses_and_bodies_are_the_librarys_own(client):
    with Server() as server:
        response = client.get(server.url + "/echo")
        assert isinstance(response, client.lib.Response)
        assert response.json()["method"] == "GET"
        response, chunks = client.stream_chunks(server.url + "/chunked?n=5")
        base = client.lib.AsyncByteStream if client.mode == "async" else client.lib.SyncByteStream
        assert isinstance(response.stream, base)
        assert b"".join(chunks) == b"".join(f"chunk-{i}\n".encode() for i in range(5))
        assert server.connections == 1  # two clients, one after the other, on the same pool


@pytest.mark.parametrize("url, error", [
    (lambda: f"http://127.0.0.1:{refused_port()}/", "ConnectError"),
    (lambda: "invalid://example.org", "UnsupportedProtocol"),
])
def test_errors_are_the_librarys_own_classes(client, url, error):
    with pytest.raises(getattr(client.lib, error)) as raised:
        client.get(url())
    assert raised.value.request.url == client.lib.URL(raised.value.request.url)


def test_a_read_timeout_is_the_librarys_read_timeout(client):
    with Server() as server:
        with pytest.raises(client.lib.ReadTimeout):
            client.get(server.url + "/sleep?t=1", timeout=client.lib.Timeout(5, read=0.05))


def test_the_trace_extension_tells_the_same_story_for_both(client):
    events = []

    def sync_trace(name, info):
        events.append(name)

    async def async_trace(name, info):
        events.append(name)

    with Server() as server:
        client.get(server.url + "/json", extensions={"trace": sync_trace if client.mode == "sync" else async_trace})
    assert events[:2] == ["connection.connect_tcp.started", "connection.connect_tcp.complete"]
    assert events[-2:] == ["http11.response_closed.started", "http11.response_closed.complete"]
    assert "http11.receive_response_headers.complete" in events


def test_http2_is_spoken_with_either_library(client):
    with H2Server(tls=True) as server:
        response = client.run(_get_json(client, server.url + "/json"), verify=server.ca_path, http2=True)
        assert response.http_version == "HTTP/2"
        assert response.json()["protocol"] == "h2"
        assert server.connections == 1


def _get_json(client, url):
    if client.mode == "sync":
        return lambda c: c.get(url)

    async def work(c):
        return await c.get(url)
    return work


def test_requests_through_a_proxy_are_pooled_for_either_library(client):
    with Server() as origin, ForwardProxy(auth=("user", "s3cret")) as proxy:
        url = f"http://user:s3cret@127.0.0.1:{proxy.port}"

        def three(c):
            return [c.get(origin.url + "/json").status_code for _ in range(3)]

        async def athree(c):
            return [(await c.get(origin.url + "/json")).status_code for _ in range(3)]

        statuses = client.run(three if client.mode == "sync" else athree, proxy=client.lib.Proxy(url))
        assert statuses == [200] * 3
        assert proxy.forwarded == 3 and proxy.connections == 1
        expected = "Basic " + base64.b64encode(b"user:s3cret").decode()
        assert proxy.authorizations == [expected] * 3
