"""HTTP(S) proxies in the Rust pool: http:// targets in absolute form over pooled connections to
the proxy, https:// targets through one CONNECT tunnel per connection, reused; credentials from
the proxy URL as Proxy-Authorization, never shown. Each case runs on httpx's own proxy transport
too, and the proxy (started here, on 127.0.0.1) counts connections, tunnels and refusals."""

from __future__ import annotations

import asyncio
import ssl
import uuid

import trio

import httpx
import pytest

import fast_litellm
from local_server import Server, throwaway_tls
from servers import ForwardProxy

KINDS = ["ours", "httpx"]


def pool_name() -> str:
    name = f"proxied-{uuid.uuid4().hex[:8]}"
    fast_litellm.SimpleConnectionPool(name)
    return name


def transport(kind, proxy, verify=True, pool=None, asynchronous=False):
    if kind == "ours":
        cls = fast_litellm.AsyncHTTPTransport if asynchronous else fast_litellm.HTTPTransport
        return cls(pool or pool_name(), proxy=proxy, verify=verify)
    if isinstance(verify, str):
        verify = ssl.create_default_context(cafile=verify)
    cls = httpx.AsyncHTTPTransport if asynchronous else httpx.HTTPTransport
    return cls(proxy=proxy, verify=verify)


@pytest.fixture
def tls(tmp_path):
    return throwaway_tls(tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_http_targets_go_in_absolute_form_over_one_pooled_connection(kind):
    with Server() as backend, ForwardProxy() as proxy:
        pool = pool_name()
        with httpx.Client(transport=transport(kind, proxy.url, pool=pool)) as client:
            for i in range(20):
                assert client.get(f"{backend.url}/echo?i={i}").status_code == 200
        assert proxy.forwarded == 20 and proxy.requests == 20
        assert proxy.connections == 1, "the connection to the proxy is reused"
        if kind == "ours":
            stats = fast_litellm.SimpleConnectionPool(pool).get_stats()
            assert list(stats["endpoints"]) == [f"{backend.url} via {proxy.url}"]
            assert stats["connections_created"] == 1 and stats["connections_reused"] == 19


@pytest.mark.parametrize("kind", KINDS)
def test_https_targets_go_through_one_tunnel_that_is_reused(kind, tls):
    context, ca_path = tls
    with Server(tls=context) as backend, ForwardProxy() as proxy:
        pool = pool_name()
        with httpx.Client(transport=transport(kind, proxy.url, verify=ca_path, pool=pool)) as client:
            for i in range(40):
                response = client.get(f"{backend.url}/echo?i={i}")
                assert response.status_code == 200 and response.json()["target"] == f"/echo?i={i}"
        assert proxy.tunnels == 1 and proxy.connections == 1
        assert backend.connections == 1 and backend.requests == 40
        if kind == "ours":
            (endpoint,) = fast_litellm.SimpleConnectionPool(pool).get_stats()["endpoints"]
            assert endpoint.startswith(f"{backend.url} via {proxy.url} (tls settings #")


@pytest.mark.parametrize("kind", KINDS)
def test_async_through_a_proxy(kind, tls):
    context, ca_path = tls
    with Server(tls=context) as secure, Server() as plain, ForwardProxy() as proxy:
        async def main():
            async with httpx.AsyncClient(transport=transport(kind, proxy.url, ca_path, asynchronous=True)) as client:
                for _ in range(2):
                    replies = await asyncio.gather(*[client.get(f"{secure.url}/json") for _ in range(4)],
                                                   *[client.get(f"{plain.url}/json") for _ in range(4)])
                    assert [r.status_code for r in replies] == [200] * 8

        asyncio.run(main())
        assert secure.requests == 8 and proxy.forwarded == 8
        assert proxy.tunnels == secure.connections <= 4, "tunnels are reused by the second round"


@pytest.mark.parametrize("kind", KINDS)
def test_credentials_in_the_proxy_url_go_out_as_proxy_authorization_and_nowhere_else(kind, tls):
    context, ca_path = tls
    with Server(tls=context) as secure, Server() as plain, ForwardProxy(auth=("us er", "p@ss:word")) as proxy:
        proxy_url = f"http://us%20er:p%40ss%3Aword@127.0.0.1:{proxy.port}"
        pool = pool_name()
        with httpx.Client(transport=transport(kind, proxy_url, ca_path, pool=pool)) as client:
            assert client.get(f"{secure.url}/json").status_code == 200
            assert client.get(f"{plain.url}/json").status_code == 200
        assert proxy.refused == 0 and proxy.tunnels == 1 and proxy.forwarded == 1
        assert set(proxy.authorizations) == {"Basic dXMgZXI6cEBzczp3b3Jk"}
        if kind == "ours":
            shown = repr(fast_litellm.SimpleConnectionPool(pool).get_stats())
            for secret in ("us er", "us%20er", "p@ss", "p%40ss", "dXMgZXI6cEBzczp3b3Jk"):
                assert secret not in shown


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_credentials(kind, tls):
    """A refused CONNECT is a ProxyError (with no credential in it); an http:// request gets the
    proxy's 407 response itself, as from httpx's transport."""
    context, ca_path = tls
    with Server(tls=context) as secure, Server() as plain, ForwardProxy(auth=("user", "right")) as proxy:
        proxy_url = f"http://user:wrong-secret@127.0.0.1:{proxy.port}"
        with httpx.Client(transport=transport(kind, proxy_url, ca_path)) as client:
            with pytest.raises(httpx.ProxyError) as raised:
                client.get(f"{secure.url}/json")
            assert "wrong-secret" not in str(raised.value) and "user" not in str(raised.value)
            assert client.get(f"{plain.url}/json").status_code == 407
        assert secure.requests == 0 and proxy.refused == 2


@pytest.mark.parametrize("kind", KINDS)
def test_an_https_proxy_is_spoken_to_over_tls(kind, tls):
    context, ca_path = tls
    with Server(tls=context) as secure, Server() as plain, ForwardProxy(tls=context) as proxy:
        proxy_url = f"https://127.0.0.1:{proxy.port}"
        if kind == "httpx":
            proxy_url = httpx.Proxy(proxy_url, ssl_context=ssl.create_default_context(cafile=ca_path))
        with httpx.Client(transport=transport(kind, proxy_url, ca_path)) as client:
            for _ in range(3):
                assert client.get(f"{secure.url}/json").status_code == 200
                assert client.get(f"{plain.url}/json").status_code == 200
        assert proxy.tunnels == 1 and proxy.forwarded == 3
        assert proxy.tls_handshakes_full + proxy.tls_handshakes_resumed == proxy.connections


def test_our_transport_reads_the_environment_itself(monkeypatch):
    """As before the pool carried proxied requests: with trust_env (the default) the transport
    applies HTTP(S)_PROXY and NO_PROXY as httpx reads them."""
    with Server() as near, Server() as far, ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", f"127.0.0.1:{near.port}")
        ours = fast_litellm.HTTPTransport(pool_name())
        with httpx.Client(transport=ours, trust_env=False) as client:
            assert client.get(f"{near.url}/json").status_code == 200
            assert client.get(f"{far.url}/json").status_code == 200
        assert proxy.forwarded == 1 and ours.stats()["proxied_requests"] == 1


def test_a_refused_proxy_connection_is_a_connect_error():
    from servers import refused_port

    with httpx.Client(transport=fast_litellm.HTTPTransport(pool_name(), proxy=f"http://127.0.0.1:{refused_port()}")) as client:
        with pytest.raises(httpx.ConnectError):
            client.get("http://127.0.0.1:9/json")


def test_one_pooled_proxy_connection_serves_successive_event_loops(tls):
    """The pool is not bound to an event loop: successive asyncio runs and trio runs take the same
    tunnel (httpx's transport keeps one per loop)."""
    context, ca_path = tls
    with Server(tls=context) as backend, ForwardProxy() as proxy:
        client = httpx.AsyncClient(transport=transport("ours", proxy.url, ca_path, asynchronous=True))

        async def request():
            return (await client.get(f"{backend.url}/json")).status_code

        assert [asyncio.run(request()) for _ in range(3)] + [trio.run(request) for _ in range(3)] == [200] * 6
        assert proxy.tunnels == proxy.connections == backend.connections == 1
