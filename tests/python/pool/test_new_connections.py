"""New connections, and what they cost: prewarm / aprewarm, TLS session resumption, the DNS cache,
local_address (LiteLLM's force_ipv4), the connect and pool-wait histograms, and a cancelled body
read that keeps its connection. Counts come from the servers' side where they can (connections
accepted, TLS handshakes full and resumed, client addresses)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import subprocess
import sys
import textwrap
import threading
import uuid

import httpx
import pytest
import trio

import fast_litellm
from h2server import H2Server
from local_server import Server, throwaway_tls
from servers import refused_port, wait_for


@pytest.fixture
def tls_server(tmp_path):
    context, ca_path = throwaway_tls(tmp_path)
    with Server(tls=context) as server:
        server.ca_path = ca_path
        yield server


def new_pool_name(**settings) -> str:
    name = f"prewarm-{uuid.uuid4().hex[:8]}"
    fast_litellm.SimpleConnectionPool(name, **settings)
    return name


def endpoint_stats(pool: str) -> dict:
    (stats,) = fast_litellm.SimpleConnectionPool(pool).get_stats()["endpoints"].values()
    return stats


def test_prewarm_opens_the_connections_a_burst_then_uses(tls_server):
    pool = new_pool_name()
    transport = fast_litellm.AsyncHTTPTransport(pool, verify=tls_server.ca_path)
    assert fast_litellm.HTTPTransport(pool, verify=tls_server.ca_path).prewarm(tls_server.url, 8) == 8
    wait_for(lambda: tls_server.connections == 8)

    async def burst():
        async with httpx.AsyncClient(transport=transport) as client:
            return await asyncio.gather(*[client.get(f"{tls_server.url}/sleep?t=0.05") for _ in range(8)])

    assert [r.status_code for r in asyncio.run(burst())] == [200] * 8
    assert tls_server.connections == 8, "the burst found its connections open"
    assert tls_server.requests == 8


def test_prewarm_counts_what_is_already_open_and_keeps_to_the_limits(tls_server):
    pool = new_pool_name(max_connections_per_endpoint=3)
    transport = fast_litellm.HTTPTransport(pool, verify=tls_server.ca_path)
    assert transport.prewarm(tls_server.url, 2) == 2
    assert transport.prewarm(tls_server.url, 2) == 2, "the two open ones count"
    assert tls_server.connections == 2
    assert transport.prewarm(tls_server.url, 10) == 3
    assert tls_server.connections == 3
    assert tls_server.max_open_connections == 3
    stats = endpoint_stats(pool)
    assert (stats["idle"], stats["active"]) == (3, 0)


def test_prewarm_of_an_unreachable_endpoint_reports_it_and_raises_nothing(caplog):
    pool = new_pool_name()
    url = f"http://127.0.0.1:{refused_port()}/v1/secret-path?key=sk-123"
    with caplog.at_level(logging.WARNING, logger="fast_litellm"):
        assert fast_litellm.HTTPTransport(pool).prewarm(url, 4) == 0
    (record,) = [r for r in caplog.records if "prewarming" in r.getMessage()]
    message = record.getMessage()
    assert "0 connection(s) ready" in message and "refused" in message
    assert "secret-path" not in message and "sk-123" not in message
    stats = fast_litellm.SimpleConnectionPool(pool).get_stats()
    assert stats["total_connections"] == 0
    assert stats["connections_closed"]["connect_failed"] >= 1


def test_prewarm_rejects_what_is_not_a_url():
    transport = fast_litellm.HTTPTransport(new_pool_name())
    with pytest.raises(ValueError):
        transport.prewarm("ftp://example.com", 1)
    with pytest.raises(ValueError):
        transport.prewarm("http://127.0.0.1:1", -1)
    assert transport.prewarm("http://127.0.0.1:1", 0) == 0


@pytest.mark.parametrize("library", ["asyncio", "trio"])
def test_aprewarm(tls_server, library):
    pool = new_pool_name()
    transport = fast_litellm.AsyncHTTPTransport(pool, verify=tls_server.ca_path)

    async def main():
        return await transport.aprewarm(tls_server.url, 5)

    ready = asyncio.run(main()) if library == "asyncio" else trio.run(main)
    assert ready == 5
    assert tls_server.connections == 5


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_over_http2_one_connection_is_warmed(kind):
    pool = new_pool_name()
    with H2Server(tls=True) as server:
        if kind == "sync":
            ready = fast_litellm.HTTPTransport(pool, verify=server.ca_path, http2=True).prewarm(server.url, 16)
        else:
            transport = fast_litellm.AsyncHTTPTransport(pool, verify=server.ca_path, http2=True)
            ready = asyncio.run(transport.aprewarm(server.url, 16))
        assert ready == 1
        assert server.connections == 1
        with httpx.Client(transport=fast_litellm.HTTPTransport(pool, verify=server.ca_path, http2=True)) as client:
            assert client.get(server.url + "/json").http_version == "HTTP/2"
        assert server.connections == 1


def test_a_second_connection_resumes_the_tls_session(tls_server):
    pool = new_pool_name()
    sync = fast_litellm.HTTPTransport(pool, verify=tls_server.ca_path)
    with httpx.Client(transport=sync) as client:
        assert client.get(tls_server.url + "/json").status_code == 200
    assert (tls_server.tls_handshakes_full, tls_server.tls_handshakes_resumed) == (1, 0)
    # Another transport with the same settings (LiteLLM makes several): it resumes too.
    other = fast_litellm.AsyncHTTPTransport(pool, verify=tls_server.ca_path)
    assert asyncio.run(other.aprewarm(tls_server.url, 3)) == 3
    # (The server counts once its side of the handshake returns: a moment after ours.)
    wait_for(lambda: tls_server.tls_handshakes_full + tls_server.tls_handshakes_resumed == 3)
    assert (tls_server.tls_handshakes_full, tls_server.tls_handshakes_resumed) == (1, 2)
    stats = endpoint_stats(pool)
    assert (stats["tls_handshakes_full"], stats["tls_handshakes_resumed"]) == (1, 2)


def test_httpx_stock_transport_does_not_resume(tls_server):
    """The reference: what plain LiteLLM's connections cost (every one a full handshake)."""
    context = ssl.create_default_context(cafile=tls_server.ca_path)
    with httpx.Client(verify=context, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(3):
            client.get(tls_server.url + "/json")
    wait_for(lambda: tls_server.tls_handshakes_full + tls_server.tls_handshakes_resumed == 3)
    assert (tls_server.tls_handshakes_full, tls_server.tls_handshakes_resumed) == (3, 0)


def test_connect_and_wait_histograms():
    pool = new_pool_name(max_connections_per_endpoint=1)
    with Server() as server:
        transport = fast_litellm.AsyncHTTPTransport(pool)

        async def main():
            async with httpx.AsyncClient(transport=transport) as client:
                await asyncio.gather(*[client.get(f"{server.url}/sleep?t=0.05") for _ in range(4)])

        asyncio.run(main())
    stats = fast_litellm.SimpleConnectionPool(pool).get_stats()
    (endpoint,) = stats["endpoints"].values()
    connect = endpoint["connect_seconds"]
    assert connect["count"] == server.connections == 1
    assert connect["buckets"][-1] == (float("inf"), 1)
    assert 0 < connect["sum"] < 10
    waits = stats["wait_seconds"]
    assert waits["count"] == stats["waits"] == 3, "three requests queued behind the one connection"
    # Each waited for at least one response (0.05 s); cumulative buckets never go down.
    assert waits["sum"] >= 3 * 0.04
    counts = [n for _, n in waits["buckets"]]
    assert counts == sorted(counts) and counts[0] == 0


@pytest.mark.parametrize("transport_kind", ["ours", "httpx"])
def test_a_cancelled_body_read_keeps_the_connection(transport_kind):
    """A reader cancelled while a body chunk is awaited (a client that went away, asyncio.timeout)
    closes the response: ours drains the rest and keeps the connection, httpx's closes it."""
    with Server() as server:
        transport = (fast_litellm.AsyncHTTPTransport(new_pool_name()) if transport_kind == "ours"
                     else httpx.AsyncHTTPTransport())

        async def main():
            async with httpx.AsyncClient(transport=transport) as client:
                async with client.stream("GET", f"{server.url}/slow-body?t=0.2") as response:
                    chunks = response.aiter_raw()
                    assert await chunks.__anext__() == b"hello"
                    with pytest.raises(asyncio.TimeoutError):
                        await asyncio.wait_for(chunks.__anext__(), 0.02)
                await asyncio.sleep(0.4)  # the rest arrives within the drain's time
                assert (await client.get(server.url + "/json")).status_code == 200

        asyncio.run(main())
        assert server.connections == (1 if transport_kind == "ours" else 2)


def test_fast_litellm_prewarm_environment_variable(tls_server):
    code = textwrap.dedent("""
        import time, fast_litellm
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            endpoints = fast_litellm.get_connection_pool_stats()["endpoints"]
            if sum(e["idle"] for e in endpoints.values()) >= 6:
                break
            time.sleep(0.02)
        print(sum(e["idle"] for e in endpoints.values()))
    """)
    env = {**os.environ, "FAST_LITELLM_PREWARM": f"{tls_server.url}=6", "SSL_CERT_FILE": tls_server.ca_path,
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "6"
    wait_for(lambda: tls_server.connections == 6)


def test_a_bad_prewarm_value_is_a_warning_not_an_import_error():
    env = {**os.environ, "FAST_LITELLM_PREWARM": "not a url=x", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    out = subprocess.run([sys.executable, "-c", "import fast_litellm; print('ok')"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok"
    assert "FAST_LITELLM_PREWARM" in out.stderr


@pytest.fixture
def dns_ttl():
    before = fast_litellm._core.get_dns_cache_stats()["ttl"]
    yield fast_litellm._core.configure_dns_cache
    fast_litellm._core.configure_dns_cache(before)


def lookups() -> int:
    return fast_litellm._core.get_dns_cache_stats()["lookups"]


def test_a_burst_of_new_connections_makes_one_name_lookup(dns_ttl):
    dns_ttl(300)
    assert fast_litellm._core.get_dns_cache_stats()["ttl"] == 300
    with Server() as server:
        url = f"http://localhost:{server.port}"
        before = lookups()
        assert fast_litellm.HTTPTransport(new_pool_name()).prewarm(url, 6) == 6
        assert fast_litellm.HTTPTransport(new_pool_name()).prewarm(url, 2) == 2, "another pool: the cache is shared"
        assert lookups() - before == 1
        wait_for(lambda: server.connections == 8)


def test_without_the_cache_every_connection_looks_up(dns_ttl):
    dns_ttl(0)
    assert fast_litellm._core.get_dns_cache_stats()["ttl"] is None
    with Server() as server:
        before = lookups()
        assert fast_litellm.HTTPTransport(new_pool_name()).prewarm(f"http://localhost:{server.port}", 3) == 3
        assert lookups() - before == 3


def test_an_answer_expires_after_its_ttl(dns_ttl):
    dns_ttl(0.2)
    with Server() as server:
        url = f"http://localhost:{server.port}"
        before = lookups()
        assert fast_litellm.HTTPTransport(new_pool_name()).prewarm(url, 1) == 1
        assert fast_litellm.HTTPTransport(new_pool_name()).prewarm(url, 1) == 1
        assert lookups() - before == 1
        wait_for(lambda: fast_litellm.HTTPTransport(new_pool_name()).prewarm(url, 1) == 1 and lookups() - before == 2)


def test_a_failed_lookup_is_not_kept(dns_ttl):
    dns_ttl(300)
    before = lookups()
    for _ in range(2):
        with pytest.raises(httpx.ConnectError):
            with httpx.Client(transport=fast_litellm.HTTPTransport(new_pool_name())) as client:
                client.get("http://no-such-host.invalid/")
    assert lookups() - before == 2


def test_litellm_aiohttp_ttl_dns_cache_carries_over():
    code = "import fast_litellm; print(fast_litellm._core.get_dns_cache_stats()['ttl']); " \
           "fast_litellm.uninstall(); print(fast_litellm._core.get_dns_cache_stats()['ttl'])"
    env = {**os.environ, "AIOHTTP_TTL_DNS_CACHE": "42", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["42.0", "300.0"]


@pytest.mark.parametrize("transport_kind", ["ours", "httpx"])
def test_local_address_binds_the_socket_and_keeps_to_its_family(transport_kind):
    """httpx's local_address (how LiteLLM's force_ipv4 asks for IPv4): the server sees the bound
    address; an address of the other family cannot reach an IPv4-only server."""
    def transport(local_address):
        if transport_kind == "ours":
            return fast_litellm.HTTPTransport(new_pool_name(), local_address=local_address)
        return httpx.HTTPTransport(local_address=local_address)

    with Server() as server:
        with httpx.Client(transport=transport("127.0.0.1")) as client:
            assert client.get(f"http://localhost:{server.port}/echo").status_code == 200
        with httpx.Client(transport=transport("::1")) as client:
            with pytest.raises(httpx.ConnectError):
                client.get(f"http://127.0.0.1:{server.port}/echo")
        assert server.connections == 1


def test_a_bound_local_address_gets_connections_of_its_own():
    pool = new_pool_name()
    with Server() as server:
        assert fast_litellm.HTTPTransport(pool).prewarm(server.url, 2) == 2
        with httpx.Client(transport=fast_litellm.HTTPTransport(pool, local_address="0.0.0.0")) as client:
            assert client.get(server.url + "/json").status_code == 200
        wait_for(lambda: server.connections == 3)  # the idle connections were not bound: not reused
    assert len(fast_litellm.SimpleConnectionPool(pool).get_stats()["endpoints"]) == 2


def test_a_bad_local_address_is_a_value_error():
    with pytest.raises(ValueError, match="local_address"):
        fast_litellm.HTTPTransport(local_address="not-an-ip")


LITELLM_BURST = textwrap.dedent("""
    import asyncio, json, sys, time
    import fast_litellm, litellm

    api_base, mode = sys.argv[1], sys.argv[2]
    if mode == "force_ipv4":
        litellm.force_ipv4 = True

    async def call():
        return await litellm.acompletion(model="openai/m", api_base=api_base, api_key="sk-test",
                                         messages=[{"role": "user", "content": "hi"}])

    async def main():
        warmed = await fast_litellm.aprewarm(api_base, 16) if mode != "cold" else 0
        print(json.dumps({"warmed": warmed}), flush=True)
        sys.stdin.readline()  # the parent has counted the server's connections
        replies = await asyncio.gather(*[call() for _ in range(16)])
        status = fast_litellm.status()
        print(json.dumps({"replies": len(replies), "handed": status["handed_to_litellm"],
                          "requests": status["requests"]["requests"]}), flush=True)

    asyncio.run(main())
""")


def held_llm_server(burst: int, **kwargs):
    """An LLMServer that holds each answer until `burst` requests have arrived (or 20 s have
    passed), so that a burst is really in flight at once: each of its requests needs a connection
    of its own, however fast the client's first request would otherwise come back."""
    from local_server import LLMServer

    class Held(LLMServer):
        arrived = threading.Barrier(burst, timeout=20)

        def _respond(self, conn, method, target, headers, body):
            try:
                self.arrived.wait()
            except threading.BrokenBarrierError:
                pass  # fewer arrived together: the counts below say so
            return super()._respond(conn, method, target, headers, body)

    return Held(**kwargs)


@pytest.mark.parametrize("mode", ["prewarm", "cold", "force_ipv4"])
def test_litellm_after_prewarm_a_first_burst_opens_no_connection(tmp_path, mode):
    """LiteLLM pointed at a TLS server with SSL_CERT_FILE, as a user would: aprewarm opens the
    connections its requests then take (same pool, TLS settings), also with force_ipv4. Cold, the
    same burst opens its 16 connections itself."""
    context, ca_path = throwaway_tls(tmp_path)
    with held_llm_server(16, tls=context) as server:
        env = {**os.environ, "SSL_CERT_FILE": ca_path, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        with subprocess.Popen([sys.executable, "-c", LITELLM_BURST, f"{server.url}/v1", mode], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
            try:
                warmed = json.loads(child.stdout.readline())["warmed"]
                wait_for(lambda: server.connections == warmed)
                before = server.connections
                child.stdin.write("go\n")
                child.stdin.flush()
                report = json.loads(child.stdout.readline())
                assert child.wait(timeout=60) == 0, child.stderr.read()[-3000:]
            finally:
                child.kill()
        assert report["replies"] == 16 and server.requests == 16
        assert report["requests"] == 16 and report["handed"] == {"transports": {}, "requests": {}}
        assert server.connections == 16 and server.tls_handshakes_full + server.tls_handshakes_resumed == 16
        if mode == "cold":
            assert before == 0
        else:
            assert warmed == 16 and before == 16, "the burst took the warmed connections"


def test_prewarm_deployments_warms_each_api_base_once(tls_server, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", tls_server.ca_path)
    monkeypatch.setenv("BACKEND_BASE", f"{tls_server.url}/v1")
    model_list = [
        {"model_name": "a", "litellm_params": {"model": "openai/a", "api_base": f"{tls_server.url}/v1"}},
        {"model_name": "b", "litellm_params": {"model": "openai/b", "api_base": "os.environ/BACKEND_BASE"}},
        {"model_name": "c", "litellm_params": {"model": "openai/c"}},  # the provider's default: left out
    ]
    warmed = fast_litellm.prewarm_deployments(model_list, 3)
    assert warmed == {tls_server.url: 3}
    wait_for(lambda: tls_server.connections == 3)


def test_the_prewarm_variable_parses_urls_and_a_bare_count():
    from fast_litellm._prewarm import parse

    assert parse("4") == 4
    assert parse("https://a.example=3, http://b.example:81") == [("https://a.example", 3), ("http://b.example:81", 1)]
    for bad in ("ftp://x=1", "https://x=many", "=3"):
        with pytest.raises(ValueError, match="FAST_LITELLM_PREWARM"):
            parse(bad)
