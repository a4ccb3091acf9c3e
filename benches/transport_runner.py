"""Measures one transport at one concurrency in a process of its own and prints one JSON
object: requests/s, latency percentiles, CPU time per request (the whole process: Python and
the Rust runtime's threads)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import sys
import threading
import time

import httpx

from percentiles import nearest_rank

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

PAYLOAD = {"model": "gpt-bench", "messages": [{"role": "user", "content": "Hello!"}]}


# Through a forward proxy (benches/test_proxied.py): BENCH_PROXY, and BENCH_CA to trust the target.
PROXY = os.environ.get("BENCH_PROXY")
CA = os.environ.get("BENCH_CA")


def _through_proxy() -> dict:
    """The transports' arguments for BENCH_PROXY / BENCH_CA (none when unset)."""
    if PROXY is None:
        return {}
    return {"proxy": PROXY, "verify": CA}


def _httpx_arguments() -> dict:
    import ssl

    arguments = _through_proxy()
    if arguments.get("verify"):
        arguments["verify"] = ssl.create_default_context(cafile=arguments["verify"])
    return arguments


def _request_head(request):
    """The request line and headers of a minimal transport's HTTP/1.1 request, blank line included."""
    head = b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)
    return head + b"".join(b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw) + b"\r\n"


def _parse_head(head):
    """A response head (without its blank line): status, reason, headers, Content-Length."""
    status_line, *lines = head.split(b"\r\n")
    _, status, reason = status_line.split(b" ", 2)
    headers = [(name, value.strip()) for name, value in (line.split(b":", 1) for line in lines)]
    length = int(next(value for name, value in headers if name.lower() == b"content-length"))
    return int(status), reason, headers, length


def _response(status, reason, headers, body):
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body),
                          extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason})


class OneSocketTransport(httpx.BaseTransport):
    """The sync floor: the least a transport can do under httpx.Client against nginx, so the bound on
    what any transport can reach here (httpx's client code plus one loopback round trip to nginx).
    One kept-alive blocking socket per thread, the request written in one sendall, the response read
    in as few recv calls as it takes. No pool, no timeouts, no error handling beyond raising on a
    closed connection: HTTP/1.1 with a Content-Length body, as nginx answers here."""

    def __init__(self):
        self._local = threading.local()

    def _socket(self, url):
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._local.sock = socket.create_connection((url.host, url.port or 80))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _recv(self, sock, size):
        data = sock.recv(size)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    def handle_request(self, request):
        sock = self._socket(request.url)
        sock.sendall(_request_head(request) + request.read())

        data = b""
        while b"\r\n\r\n" not in data:
            data += self._recv(sock, 65536)
        head, body = data.split(b"\r\n\r\n", 1)
        status, reason, headers, length = _parse_head(head)
        while len(body) < length:
            body += self._recv(sock, length - len(body))
        return _response(status, reason, headers, body)


class _MinimalConnection(asyncio.Protocol):
    """One kept-alive connection of MinimalAsyncTransport: the response to the request in flight is
    parsed as its bytes arrive and set on ``waiter``."""

    def __init__(self):
        self.transport = None
        self.buffer = b""
        self.waiter = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))

    def data_received(self, data):
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if self.waiter is None or end < 0:
            return
        status, reason, headers, length = _parse_head(self.buffer[:end])
        if len(self.buffer) < end + 4 + length:
            return
        body, self.buffer = self.buffer[end + 4:end + 4 + length], self.buffer[end + 4 + length:]
        waiter, self.waiter = self.waiter, None
        waiter.set_result(_response(status, reason, headers, body))


class MinimalAsyncTransport(httpx.AsyncBaseTransport):
    """What plain asyncio networking costs under httpx.AsyncClient against nginx: about the least an
    asyncio transport does (a transport whose I/O runs elsewhere can use less of the event loop's
    thread). Kept-alive connections (one per request in flight, reused most recent first),
    the request written in one call, the response parsed in data_received. No limits, timeouts or
    error handling beyond raising on a closed connection: HTTP/1.1 with a Content-Length body."""

    def __init__(self):
        self._idle = []

    async def handle_async_request(self, request):
        loop = asyncio.get_running_loop()
        if self._idle:
            conn = self._idle.pop()
        else:
            _, conn = await loop.create_connection(_MinimalConnection, request.url.host, request.url.port or 80)
        conn.waiter = loop.create_future()
        conn.transport.write(_request_head(request) + await request.aread())
        response = await conn.waiter
        self._idle.append(conn)
        return response


def no_network_transport(url):
    """The async floor: httpx.AsyncClient's own cost per request, with no network I/O at all, so the
    floor for CPU per request (its requests/s are not comparable with a transport's). It answers
    every request with the status, headers and body nginx gave to one blocking request made here,
    before any timing starts."""
    with httpx.Client(trust_env=False) as client:
        recorded = client.post(url, json=PAYLOAD)
    status, headers, body = recorded.status_code, recorded.headers.raw, recorded.content
    extensions = {"http_version": b"HTTP/1.1", "reason_phrase": recorded.extensions["reason_phrase"]}

    async def answer(request):
        await request.aread()
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body), extensions=extensions)

    return httpx.MockTransport(answer)


def async_transport(name, url):
    if name == "fast_litellm":
        import fast_litellm

        return fast_litellm.AsyncHTTPTransport(fast_litellm.SimpleConnectionPool("bench", reaper_interval=None),
                                               **_through_proxy())
    if name == "httpx":
        return httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000),
                                        **_httpx_arguments())
    if name == "litellm-aiohttp":
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

        return AsyncHTTPHandler._create_aiohttp_transport()
    if name == "floor":
        return no_network_transport(url)
    if name == "minimal":
        return MinimalAsyncTransport()
    raise ValueError(name)


def sync_transport(name):
    if name == "fast_litellm":
        import fast_litellm

        return fast_litellm.HTTPTransport(fast_litellm.SimpleConnectionPool("bench", reaper_interval=None),
                                          **_through_proxy())
    if name == "httpx":
        return httpx.HTTPTransport(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000),
                                   **_httpx_arguments())
    if name == "floor":
        return OneSocketTransport()
    raise ValueError(name)


def summarize(latencies, wall, cpu):
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "rps": n / wall,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": nearest_rank(latencies, 99) * 1e3,
        "cpu_ms_per_request": cpu / n * 1e3,
    }


async def run_async(name, url, concurrency, total):
    latencies = []
    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))

        async def one():
            start = time.perf_counter()
            async with session.post(url, json=PAYLOAD) as r:
                await r.read()
            latencies.append(time.perf_counter() - start)
    else:
        session = httpx.AsyncClient(transport=async_transport(name, url), timeout=60)

        async def one():
            start = time.perf_counter()
            r = await session.post(url, json=PAYLOAD)
            r.raise_for_status()
            latencies.append(time.perf_counter() - start)

    async def worker(count):
        for _ in range(count):
            await one()

    await asyncio.gather(*[worker(20) for _ in range(min(concurrency, 64))])  # warm up
    latencies.clear()
    per_worker = total // concurrency
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*[worker(per_worker) for _ in range(concurrency)])
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if name == "aiohttp":
        await session.close()
    else:
        await session.aclose()
    return summarize(latencies, wall, cpu)


def run_sync(name, url, threads, total):
    client = httpx.Client(transport=sync_transport(name), timeout=60)
    latencies = []
    lock = threading.Lock()

    def worker(count):
        mine = []
        for _ in range(count):
            start = time.perf_counter()
            client.post(url, json=PAYLOAD).raise_for_status()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    worker(50)
    latencies.clear()
    per_thread = total // threads
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ts = [threading.Thread(target=worker, args=(per_thread,)) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return summarize(latencies, wall, cpu)


def main():
    mode, name, url, concurrency, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    if mode == "async":
        result = asyncio.run(run_async(name, url, concurrency, total))
    else:
        result = run_sync(name, url, concurrency, total)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
