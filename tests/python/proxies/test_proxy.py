"""Requests through a proxy that httpx's own transport carries (a socks proxy, or an
`httpx.Proxy` with headers of its own, which only httpx's transport sends; http(s) proxies are
pooled in Rust: test_proxy_pool.py): one fast_litellm transport serves any number of event
loops (successive `asyncio.run` calls, threads, trio runs), as it does without a proxy. A
forward proxy and a backend on 127.0.0.1 count what reaches them."""

import asyncio
import json
import os
import subprocess
import sys
import threading

import httpx
import pytest
import trio

from fast_litellm import AsyncHTTPTransport, HTTPTransport
from helpers import new_pool
from servers import ForwardProxy, LLMServer, Server, wait_for


def via_httpx(proxy):
    """`proxy` as only httpx's transport can carry it: with a header of its own for the proxy."""
    return httpx.Proxy(proxy.url, headers={"X-Carried-By": "httpx"})


@pytest.fixture
def backend():
    with Server() as s:
        yield s


@pytest.fixture
def proxy():
    with ForwardProxy() as p:
        yield p


@pytest.fixture
def proxied_transport(proxy):
    """An AsyncHTTPTransport sending through `proxy`, carried by httpx's transport."""
    return AsyncHTTPTransport(new_pool(), proxy=via_httpx(proxy), trust_env=False)


def test_one_transport_serves_successive_asyncio_runs(proxied_transport, proxy, backend):
    # A client kept across runs and never closed, as LiteLLM keeps its clients.
    client = httpx.AsyncClient(transport=proxied_transport)

    async def two_requests():
        first = await client.get(f"{backend.url}/json")
        second = await client.get(f"{backend.url}/echo")
        return first.status_code, second.json()["target"]

    for run in range(1, 4):
        assert asyncio.run(two_requests()) == (200, "/echo")
        # The run's proxy connection (kept alive within the run) was closed as its loop ended.
        assert proxy.connections == run
        wait_for(lambda: proxy.open_connections == 0)
    assert proxy.forwarded == backend.requests == 6
    stats = proxied_transport.stats()
    assert (stats["proxied_requests"], stats["requests"]) == (6, 0)


def test_one_transport_serves_event_loops_in_threads(proxied_transport, proxy, backend):
    client = httpx.AsyncClient(transport=proxied_transport)
    results, errors = [], []

    async def concurrent_requests():
        responses = await asyncio.gather(*[client.get(f"{backend.url}/json") for _ in range(3)])
        return [r.status_code for r in responses]

    def thread():
        try:
            for _ in range(2):
                results.extend(asyncio.run(concurrent_requests()))
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert results == [200] * 24
    assert proxy.forwarded == backend.requests == 24
    assert proxied_transport.stats()["proxied_requests"] == 24
    wait_for(lambda: proxy.open_connections == 0)


def test_one_transport_serves_successive_trio_runs(proxy, backend):
    transport = AsyncHTTPTransport(new_pool(), proxy=via_httpx(proxy), trust_env=False)
    client = httpx.AsyncClient(transport=transport)

    async def request():
        return (await client.get(f"{backend.url}/json")).status_code

    assert [trio.run(request) for _ in range(3)] == [200] * 3
    assert proxy.forwarded == 3
    wait_for(lambda: proxy.open_connections == 0)


def test_a_loop_closed_without_asyncio_run_does_not_break_the_next_one(proxy, backend):
    transport = AsyncHTTPTransport(new_pool(), proxy=via_httpx(proxy), trust_env=False)

    async def request():
        async with httpx.AsyncClient(transport=transport) as client:
            return (await client.get(f"{backend.url}/json")).status_code

    loop = asyncio.new_event_loop()
    try:
        # The client's close closes this loop's proxy transport (the transport stays usable).
        assert loop.run_until_complete(request()) == 200
    finally:
        loop.close()
    wait_for(lambda: proxy.open_connections == 0)
    assert asyncio.run(request()) == 200
    assert asyncio.run(request()) == 200
    assert proxy.forwarded == 3


async def test_aclose_closes_this_loops_proxy_connections_and_the_transport_stays_usable(proxy, backend):
    transport = AsyncHTTPTransport(new_pool(), proxy=via_httpx(proxy), trust_env=False)
    client = httpx.AsyncClient(transport=transport)
    assert (await client.get(f"{backend.url}/json")).status_code == 200
    await transport.aclose()
    await asyncio.to_thread(wait_for, lambda: proxy.open_connections == 0)
    assert (await client.get(f"{backend.url}/json")).status_code == 200
    assert proxy.connections == 2
    await transport.aclose()


def test_sync_transport_through_a_proxy_from_threads(proxy, backend):
    transport = HTTPTransport(new_pool(), proxy=via_httpx(proxy), trust_env=False)
    client = httpx.Client(transport=transport)
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.get(f"{backend.url}/json").status_code))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 4
    assert proxy.forwarded == 4
    client.close()
    wait_for(lambda: proxy.open_connections == 0)


LITELLM_THROUGH_PROXY = """
import asyncio, json, sys
import fast_litellm
import litellm

args = dict(model="openai/gpt-test", api_base=sys.argv[1] + "/v1", api_key="sk-test", max_tokens=5)

async def call(i):
    response = await litellm.acompletion(messages=[{"role": "user", "content": f"run {i}"}], **args)
    return response.choices[0].message.content

replies = [asyncio.run(call(i)) for i in range(3)]
replies.append(litellm.completion(messages=[{"role": "user", "content": "sync"}], **args).choices[0].message.content)
print(json.dumps({"replies": replies, "requests": fast_litellm.status()["requests"]}))
"""


def test_litellm_async_calls_in_successive_asyncio_runs_through_a_proxy(proxy):
    with LLMServer() as backend:
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "https_proxy", "all_proxy")}
        env.update(HTTP_PROXY=proxy.url, LITELLM_LOCAL_MODEL_COST_MAP="True")
        result = subprocess.run([sys.executable, "-c", LITELLM_THROUGH_PROXY, backend.url], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-4000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["replies"] == ["echo: run 0", "echo: run 1", "echo: run 2", "echo: sync"]
        assert proxy.forwarded == backend.requests == 4
        assert report["requests"]["proxied_requests"] == 4
