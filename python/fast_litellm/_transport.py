"""httpx transports whose connections live in fast_litellm's Rust pool.

``httpx.Request`` in, ``httpx.Response`` out: the request is handed to the Rust engine in one
call (network I/O runs there, without the GIL), and the response body streams back chunk by
chunk. Errors are httpx's exception classes, so retry logic in httpx, the openai SDK and
LiteLLM works unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any, Optional, Union

import httpx
import sniffio

from fast_litellm import _core, _locks
from fast_litellm._loops import _running_library, backend
from fast_litellm._trace import TracedAsyncBody, TracedBody, Tracer

__all__ = ["AsyncHTTPTransport", "CONNECTION_ID", "HTTPTransport"]

logger = logging.getLogger("fast_litellm")

# The request extension that sends a request on a connection held by id (from get_connection /
# acquire / connection() of the transport's pool): `extensions={CONNECTION_ID: conn_id}`.
CONNECTION_ID = "fast_litellm.connection_id"

_HTTPX_ERRORS: dict[type, type[httpx.TransportError]] = {
    _core.PoolTimeout: httpx.PoolTimeout,
    _core.ConnectError: httpx.ConnectError,
    _core.ConnectTimeout: httpx.ConnectTimeout,
    _core.ReadTimeout: httpx.ReadTimeout,
    _core.WriteTimeout: httpx.WriteTimeout,
    _core.ReadError: httpx.ReadError,
    _core.WriteError: httpx.WriteError,
    _core.RemoteProtocolError: httpx.RemoteProtocolError,
    _core.LocalProtocolError: httpx.LocalProtocolError,
    _core.UnsupportedProtocol: httpx.UnsupportedProtocol,
    _core.ProxyError: httpx.ProxyError,
}
_ENGINE_ERRORS = (_core.TransportError, _core.PoolTimeout)

# How a transport names its pool: a SimpleConnectionPool, a pool name, or None (the default pool).
PoolChoice = Union["_core.SimpleConnectionPool", str, None]
Verify = Union[bool, str]
Cert = Union[str, tuple[str, str], None]


def _httpx_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    return _HTTPX_ERRORS.get(type(exc), httpx.TransportError)(str(exc), request=request)


def _timeouts(request: httpx.Request) -> tuple:
    t = request.extensions.get("timeout") or {}
    return (t.get("connect"), t.get("read"), t.get("write"), t.get("pool"))


def _extensions(response: Any) -> dict:
    version = response.http_version
    if version == b"HTTP/2":  # no reason phrase in HTTP/2: httpx then shows the standard one
        return {"http_version": version}
    return {"http_version": version, "reason_phrase": response.reason_phrase}


def _refuse_held_connection(request: httpx.Request) -> None:
    """A held connection goes to its origin directly: a request a proxy applies to cannot use one."""
    if request.extensions.get(CONNECTION_ID) is not None:
        raise httpx.LocalProtocolError("a proxy applies to this request: it cannot be sent on a held connection id",
                                       request=request)


class _ProxyRouter:
    """Which proxy a request goes through (never silently around one), as httpx decides it: the
    ``proxy`` argument, or with ``trust_env`` the environment's proxies and ``NO_PROXY``. Counts
    the requests a proxy applies to.

    An ``http://`` or ``https://`` proxy is the engine's (``proxy_number``): requests through it
    are pooled in Rust. Anything else (``socks5://``, or an ``httpx.Proxy`` with its own SSL
    context or headers) goes through httpx's own transport for that proxy (``transport_for``).
    httpx's async transports bind their connections to the event loop they were first used in,
    so the async ones are made per event loop (per asyncio loop, per trio run) and closed in it
    when it ends: one of our transports serves any number of ``asyncio.run`` calls and threads
    through a proxy, as it does without one. The sync ones are shared by every thread."""

    def __init__(self, proxy: Any, trust_env: bool, make_transport: Any) -> None:
        self.proxied = 0
        self._routes: list = []
        self._make = make_transport
        if proxy is not None:
            self._routes = [(httpx._utils.URLPattern("all://"), proxy)]
        elif trust_env:
            env = httpx._utils.get_environment_proxies()
            self._routes = sorted((httpx._utils.URLPattern(k), v) for k, v in env.items())
        # Most transports have no proxy at all: one attribute read per request then.
        self.has_routes = bool(self._routes)
        self._is_async: Any = None  # known once the first transport is made
        self._transports: dict = {}  # proxy -> sync transport
        # asyncio loop -> its _LoopProxies, removed when the loop ends. Not weak keys (as the
        # bridges in _loops.py): the transports' sockets refer to their loop, so it would never go.
        self._loops: dict = {}
        self._trio_runs: Any = None  # a trio RunVar: each trio run's _LoopProxies
        self._numbers: dict = {}  # id of a proxy in the routes -> the engine's number, or None
        self._lock = _locks.lock()

    def proxy_for(self, url: httpx.URL) -> Any:
        """The proxy that applies to ``url`` (None: none does, or NO_PROXY exempts it), counted."""
        for pattern, proxy in self._routes:
            if pattern.matches(url):
                if proxy is not None:
                    with self._lock:
                        self.proxied += 1
                return proxy
        return None

    def proxy_number(self, proxy: Any) -> Optional[int]:
        """The engine's number for an http(s) proxy; None for one httpx's transport must carry.
        Keyed by the proxy object's identity: the routes keep each one alive."""
        number = self._numbers.get(id(proxy), _UNSET)
        if number is _UNSET:  # two threads may both register it: the engine gives both one number
            number = self._numbers[id(proxy)] = _register_proxy(proxy)
        return number

    def transport_for(self, proxy: Any) -> Any:
        """httpx's own transport for ``proxy`` (made once; per event loop for async ones)."""
        key = str(proxy)
        with self._lock:
            made = None
            if self._is_async is None:
                made = self._make(proxy)
                self._is_async = isinstance(made, httpx.AsyncBaseTransport)
            transports = self._loop_proxies().transports if self._is_async else self._transports
            if key not in transports:
                transports[key] = made if made is not None else self._make(proxy)
            return transports[key]

    def routes_through_proxy(self, url: httpx.URL) -> bool:
        """Whether requests to ``url`` go through a proxy (without counting one): prewarm does not
        warm those."""
        for pattern, proxy in self._routes:
            if pattern.matches(url):
                return proxy is not None
        return False

    def take_transports(self) -> list:
        """The proxy transports made so far, forgotten here (made again when needed): the sync
        ones, or the async ones of the running event loop (another loop's are closed when that
        loop ends, in that loop)."""
        with self._lock:
            if not self._is_async:
                transports, self._transports = list(self._transports.values()), {}
                return transports
            return self._loop_proxies().take()

    def _loop_proxies(self) -> "_LoopProxies":
        """The running event loop's async proxy transports (called with the lock held)."""
        if _running_library.name is not None and sniffio.current_async_library() == "trio":
            return self._trio_proxies()
        loop = asyncio.get_running_loop()
        proxies = self._loops.get(loop)
        if proxies is None:
            # Loops closed without asyncio's shutdown steps (not by asyncio.run): forgotten.
            for dead in [old for old in self._loops if old.is_closed()]:
                del self._loops[dead]
            proxies = self._loops[loop] = _LoopProxies()
            # An async generator started in the loop: asyncio.run (like any loop shut down with
            # shutdown_asyncgens()) closes it before closing the loop, which runs its `finally`.
            # The loop holds it weakly; `proxies` holds it.
            proxies.closer = self._close_at_loop_end(loop, proxies)
            try:
                proxies.closer.asend(None).send(None)  # runs to its first yield (no await before)
            except StopIteration:
                pass
        return proxies

    async def _close_at_loop_end(self, loop: Any, proxies: "_LoopProxies") -> Any:
        try:
            yield
        finally:
            with self._lock:
                if self._loops.get(loop) is proxies:
                    del self._loops[loop]
                closing = proxies.take()
            for transport in closing:
                await transport.aclose()

    def _trio_proxies(self) -> "_LoopProxies":
        import trio

        if self._trio_runs is None:
            self._trio_runs = trio.lowlevel.RunVar("fast_litellm.proxy_transports")
        proxies = self._trio_runs.get(None)
        if proxies is None:
            proxies = _LoopProxies()
            self._trio_runs.set(proxies)
            trio.lowlevel.spawn_system_task(self._close_at_trio_run_end, proxies,
                                            name="fast_litellm proxy transports")
        return proxies

    async def _close_at_trio_run_end(self, proxies: "_LoopProxies") -> None:
        import trio

        try:
            await trio.sleep_forever()
        finally:  # cancelled once the run's main task has ended
            with self._lock:
                closing = proxies.take()
            with trio.CancelScope(shield=True):
                for transport in closing:
                    await transport.aclose()


_UNSET = object()


def _register_proxy(proxy: Any) -> Optional[int]:
    """The engine's number for ``proxy`` (a URL, or an ``httpx.Proxy``); None when httpx's transport
    must carry it: socks, or an ``httpx.Proxy`` with an SSL context or headers of its own. The
    credentials from the URL become the Proxy-Authorization value, kept by the engine alone."""
    p = proxy if isinstance(proxy, httpx.Proxy) else httpx.Proxy(proxy)
    if p.url.scheme not in ("http", "https") or p.ssl_context is not None or p.headers:
        return None
    authorization = None
    if p.raw_auth is not None:
        authorization = b"Basic " + base64.b64encode(b":".join(p.raw_auth))
    port = p.url.port or (443 if p.url.scheme == "https" else 80)
    return _core.HttpEngine.register_proxy(p.url.scheme, p.url.host, port, authorization)


class _LoopProxies:
    """One event loop's async proxy transports, and what closes them when the loop ends."""

    __slots__ = ("transports", "closer")

    def __init__(self) -> None:
        self.transports: dict = {}
        self.closer: Any = None

    def take(self) -> list:
        transports = list(self.transports.values())
        self.transports.clear()
        return transports


class _PoolTransport:
    """What both transports are made of: the Rust engine over a pool, and the router for requests
    a proxy applies to. One constructor and one stats(), so the sync and async transports take
    the same arguments and count alike."""

    # httpx's own transport for requests a proxy applies to: sync or async, as the subclass.
    _proxy_transport: Any

    def __init__(
        self,
        pool: PoolChoice = None,
        *,
        verify: Verify = True,
        cert: Cert = None,
        trust_env: bool = True,
        proxy: Any = None,
        drain_bytes: int = 256 * 1024,
        drain_timeout: float = 0.5,
        http1: bool = True,
        http2: bool = False,
        local_address: Optional[str] = None,
    ) -> None:
        self._engine = _core.HttpEngine(pool, verify, cert, drain_bytes, drain_timeout, http1, http2, local_address)
        make = self._proxy_transport
        self._proxies = _ProxyRouter(
            proxy, trust_env, lambda p: make(proxy=p, verify=verify, cert=cert, http1=http1, http2=http2,
                                             local_address=local_address)
        )

    def _route(self, request: httpx.Request) -> tuple:
        """How the request goes: (the engine's number for its http(s) proxy or None, None), or
        (None, httpx's transport for a proxy only httpx can carry)."""
        if not self._proxies.has_routes:  # most transports: no proxy at all
            return None, None
        proxy = self._proxies.proxy_for(request.url)
        if proxy is None:
            return None, None
        _refuse_held_connection(request)
        number = self._proxies.proxy_number(proxy)
        return (number, None) if number is not None else (None, self._proxies.transport_for(proxy))

    def stats(self) -> dict:
        """Requests sent, retried on a fresh connection, bodies drained or abandoned, proxied."""
        requests, retried, drained, abandoned = self._engine.stats()
        return {
            "requests": requests,
            "retried_on_fresh_connection": retried,
            "bodies_drained": drained,
            "bodies_not_drained": abandoned,
            "proxied_requests": self._proxies.proxied,
        }


class HTTPTransport(_PoolTransport, httpx.BaseTransport):
    """A sync httpx transport over fast_litellm's pool.

    ``pool``: a ``SimpleConnectionPool``, a pool name, or ``None`` for the default pool.
    ``verify``: ``True`` (bundled Mozilla roots), ``False``, or a CA bundle path.
    ``cert``: a PEM file with certificate and key, or a ``(certificate, key)`` pair of paths.
    ``http1`` / ``http2``: the HTTP versions spoken, as httpx: with ``http2=True`` TLS offers
    HTTP/2 and the server chooses (cleartext uses HTTP/1.1 unless ``http1=False``); HTTP/2
    requests to an endpoint share its connections as streams.
    ``local_address``: as httpx, the IP address sockets are bound to (``"0.0.0.0"``: IPv4 only,
    which is how LiteLLM's ``force_ipv4`` asks for it).
    ``proxy`` / ``trust_env``: as httpx; requests through an http(s) proxy are pooled in Rust too
    (absolute form, or a CONNECT tunnel for https), a socks proxy goes through httpx's own
    transport. ``drain_bytes`` / ``drain_timeout``: how much of a body closed
    early is read in the background so its connection can be reused.

    ``close()`` leaves the pool alone (it is shared, and LiteLLM closes transports it believes it
    owns); it closes only the proxy transports, which are made again if needed.
    """

    _proxy_transport = httpx.HTTPTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        number, carrier = self._route(request)
        if carrier is not None:
            return carrier.handle_request(request)
        trace = request.extensions.get("trace")
        try:
            response = self._engine.send(
                request.method, url.scheme, url.raw_host.decode("ascii"), url.port, url.raw_path,
                request.headers.raw, request.read(), _timeouts(request), request.extensions.get(CONNECTION_ID), number,
            )
        except _ENGINE_ERRORS as exc:
            error = _httpx_error(exc, request)
            if trace is not None:
                Tracer(trace, request).emit(exc, error)
            raise error from None
        chunks, finished = response.ready_chunks()
        stream = httpx.ByteStream(b"".join(chunks)) if finished else _SyncBody(response, request, chunks)
        if trace is not None:
            tracer = Tracer(trace, request)
            tracer.emit(response)
            stream = TracedBody(stream, tracer)
        return httpx.Response(
            response.status, headers=response.headers, stream=stream, extensions=_extensions(response)
        )

    def prewarm(self, url: Union[str, httpx.URL], connections: int = 1, timeout: Optional[float] = 10.0) -> int:
        """Opens connections to ``url``'s origin ahead of need (name lookup, TCP, TLS, the HTTP
        handshake), up to ``connections`` of that endpoint in all, within the pool's limits and
        without waiting for busy ones; over HTTP/2 one connection carries many requests, so it
        stops at the first. Each connection gets ``timeout`` seconds. Returns how many are
        open; an endpoint that cannot be reached (or that a proxy applies to) is logged as a
        warning and gives 0 or fewer, never an exception."""
        target = _prewarm_target(url, connections, self._proxies)
        if target is None:
            return 0
        return _prewarm_report(url, *self._engine.prewarm(*target, connections, timeout))

    def close(self) -> None:
        for transport in self._proxies.take_transports():
            transport.close()


class AsyncHTTPTransport(_PoolTransport, httpx.AsyncBaseTransport):
    """The async twin of :class:`HTTPTransport` (same arguments). Usable from any number of
    event loops and threads at once: no state is bound to a loop."""

    _proxy_transport = httpx.AsyncHTTPTransport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        number, carrier = self._route(request)
        if carrier is not None:
            return await carrier.handle_async_request(request)
        try:
            body = request.content
        except httpx.RequestNotRead:  # a streaming request body
            body = await request.aread()
        trace = request.extensions.get("trace")
        new_future, bridge = backend()
        future = new_future()
        try:
            handle = self._engine.send_async(
                bridge, future, request.method, url.scheme, url.raw_host.decode("ascii"),
                url.port, url.raw_path, request.headers.raw, body, _timeouts(request),
                request.extensions.get(CONNECTION_ID), number,
            )
            try:
                response = await future
            except BaseException:  # cancelled (asyncio or trio), interrupted; a no-op if it failed
                handle.cancel()
                raise
        except _ENGINE_ERRORS as exc:
            error = _httpx_error(exc, request)
            if trace is not None:
                await Tracer(trace, request).aemit(exc, error)
            raise error from None
        chunks, finished = response.ready_chunks()
        stream = httpx.ByteStream(b"".join(chunks)) if finished else _AsyncBody(response, request, chunks)
        if trace is not None:
            tracer = Tracer(trace, request)
            await tracer.aemit(response)
            stream = TracedAsyncBody(stream, tracer)
        return httpx.Response(
            response.status, headers=response.headers, stream=stream, extensions=_extensions(response)
        )

    async def aprewarm(self, url: Union[str, httpx.URL], connections: int = 1, timeout: Optional[float] = 10.0) -> int:
        """The awaitable twin of :meth:`HTTPTransport.prewarm` (same arguments and result)."""
        target = _prewarm_target(url, connections, self._proxies)
        if target is None:
            return 0
        new_future, bridge = backend()
        future = new_future()
        handle = self._engine.prewarm_async(bridge, future, *target, connections, timeout)
        try:
            ready, error = await future
        except BaseException:  # cancelled: connections being opened are dropped
            handle.cancel()
            raise
        return _prewarm_report(url, ready, error)

    async def aclose(self) -> None:
        for transport in self._proxies.take_transports():
            await transport.aclose()


def _prewarm_target(url: Union[str, httpx.URL], connections: int,
                    proxies: _ProxyRouter) -> Optional[tuple[str, str, Optional[int]]]:
    """(scheme, host, port) of the origin to prewarm, or None when there is nothing to do."""
    url = httpx.URL(url)
    if not isinstance(connections, int) or connections < 0:
        raise ValueError(f"connections must be a non-negative int, not {connections!r}")
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("prewarm needs an http:// or https:// URL with a host")
    if connections == 0:
        return None
    if proxies.routes_through_proxy(url):
        logger.warning("fast_litellm: not prewarming %s: a proxy applies to it (prewarm opens direct "
                       "connections only)", _origin(url))
        return None
    return (url.scheme, url.raw_host.decode("ascii"), url.port)


def _origin(url: httpx.URL) -> str:
    """scheme://host[:port]: never a path, query or userinfo (they may hold secrets)."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}"


def _prewarm_report(url: Union[str, httpx.URL], ready: int, error: Optional[str]) -> int:
    if error is not None:
        logger.warning("fast_litellm: prewarming %s: %d connection(s) ready; %s", _origin(httpx.URL(url)), ready, error)
    return ready


class _SyncBody(httpx.SyncByteStream):
    """A body still arriving: the chunks read with the head, then chunk by chunk."""

    def __init__(self, response: Any, request: httpx.Request, prefetched: list) -> None:
        self._response = response
        self._request = request
        self._prefetched = prefetched

    def __iter__(self):
        yield from self._prefetched
        self._prefetched = []
        response = self._response
        while True:
            try:
                chunks, finished = response.ready_chunks()
                if finished:
                    yield from chunks
                    return
                if not chunks:
                    chunk = response.read_chunk()
                    if chunk is None:
                        return
                    chunks = [chunk]
            except _ENGINE_ERRORS as exc:
                raise _httpx_error(exc, self._request) from None
            yield from chunks

    def close(self) -> None:
        self._response.close()


class _AsyncBody(httpx.AsyncByteStream):
    """A body still arriving: the chunks read with the head, then chunk by chunk."""

    def __init__(self, response: Any, request: httpx.Request, prefetched: list) -> None:
        self._response = response
        self._request = request
        self._prefetched = prefetched

    async def __aiter__(self):
        for chunk in self._prefetched:
            yield chunk
        self._prefetched = []
        new_future, bridge = backend()
        response = self._response
        while True:
            try:
                chunks, finished = response.ready_chunks()
            except _ENGINE_ERRORS as exc:
                raise _httpx_error(exc, self._request) from None
            for chunk in chunks:
                yield chunk
            if finished:
                return
            if chunks:
                continue
            # Nothing here yet: wait for the runtime to hand the next chunk over.
            future = new_future()
            handle = response.read_chunk_async(bridge, future)
            try:
                chunk = await future
            except _ENGINE_ERRORS as exc:
                raise _httpx_error(exc, self._request) from None
            except BaseException:  # cancelled (asyncio or trio), or interrupted
                handle.cancel()
                raise
            if chunk is None:
                return
            yield chunk

    async def aclose(self) -> None:
        self._response.close()
