"""httpx (and httpx2) transports whose connections live in fast_litellm's Rust pool.

A request in, a response out: the request is handed to the Rust engine in one call (network I/O
runs there, without the GIL), and the response body streams back chunk by chunk. Errors are the
client library's exception classes, so retry logic in httpx, the openai SDK and LiteLLM works
unchanged. Written once for both libraries (``_library.py``): ``HTTPTransport`` and
``AsyncHTTPTransport`` here are httpx's; ``fast_litellm.httpx2`` has httpx2's.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, Optional, Union

import httpx

from fast_litellm import _core
from fast_litellm._library import ENGINE_ERRORS, Library
from fast_litellm._loops import backend
from fast_litellm._proxies import ProxyRouter
from fast_litellm._trace import TracedAsyncBody, TracedBody, Tracer

__all__ = ["AsyncHTTPTransport", "CONNECTION_ID", "HTTPTransport"]

logger = logging.getLogger("fast_litellm")

# The request extension that sends a request on a connection held by id (from get_connection /
# acquire / connection() of the transport's pool): `extensions={CONNECTION_ID: conn_id}`.
CONNECTION_ID = "fast_litellm.connection_id"

# How a transport names its pool: a SimpleConnectionPool, a pool name, or None (the default pool).
PoolChoice = Union["_core.SimpleConnectionPool", str, None]
Verify = Union[bool, str]
Cert = Union[str, tuple[str, str], None]


class Outgoing(NamedTuple):
    """One request as the engine takes it, read by name (``Outgoing`` in src/bindings/engine.rs):
    an httpx request's parts as httpx encoded them."""

    method: str
    scheme: str
    host: str
    port: Optional[int]
    target: bytes  # the path and query, as sent
    headers: list  # [(name, value)] of bytes, in order
    body: bytes
    timeouts: tuple  # (connect, read, write, pool) seconds, None: no limit
    connection_id: Any  # a connection held by id to send on (CONNECTION_ID), or None
    proxy: Optional[int]  # the engine's number for the forward proxy, or None

    @classmethod
    def of(cls, request: Any, body: bytes, proxy: Optional[int]) -> "Outgoing":
        url, t = request.url, request.extensions.get("timeout") or {}
        return cls(request.method, url.scheme, url.raw_host.decode("ascii"), url.port, url.raw_path,
                   request.headers.raw, body, (t.get("connect"), t.get("read"), t.get("write"), t.get("pool")),
                   request.extensions.get(CONNECTION_ID), proxy)


def _extensions(response: Any) -> dict:
    version = response.http_version
    if version == b"HTTP/2":  # no reason phrase in HTTP/2: httpx then shows the standard one
        return {"http_version": version}
    return {"http_version": version, "reason_phrase": response.reason_phrase}


def _refuse_held_connection(request: Any, library: Library) -> None:
    """A held connection goes to its origin directly: a request a proxy applies to cannot use one."""
    if request.extensions.get(CONNECTION_ID) is not None:
        raise library.LocalProtocolError("a proxy applies to this request: it cannot be sent on a held connection id",
                                       request=request)


def origin(url: Any) -> str:
    """scheme://host[:port]: never a path, query or userinfo (they may hold secrets)."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}"


class _Body:
    """A body still arriving: the bytes read with the head, then the rest as it arrives, read by
    the engine's reader. A byte stream of the transport's library through
    ``Library.stream_class`` (which sets ``library``)."""

    library: Library

    def __init__(self, response: Any, request: Any, prefetched: bytes) -> None:
        self._response = response
        self._request = request
        self._prefetched = prefetched

    def _error(self, exc: BaseException) -> BaseException:
        """What the reader raises for an engine exception: the library's."""
        return self.library.error(exc, self._request) if isinstance(exc, ENGINE_ERRORS) else exc


class _SyncBody(_Body):
    """Read on the caller's thread, without the GIL while it waits."""

    def __iter__(self) -> Any:
        prefetched, self._prefetched = self._prefetched, b""
        return _core.BodyReader(self._response, prefetched, self._error)

    def close(self) -> None:
        self._response.close()


class _AsyncBody(_Body):
    """The async twin of :class:`_SyncBody`: its reader's steps are the event loop's futures."""

    def __aiter__(self) -> Any:
        new_future, bridge = backend()
        prefetched, self._prefetched = self._prefetched, b""
        return _core.AsyncBodyReader(self._response, prefetched, bridge, new_future, self._error)

    async def aclose(self) -> None:
        self._response.close()


class PoolTransport:
    """What every transport is made of: the Rust engine over a pool, and the router for requests
    a proxy applies to. One constructor and one stats(), so the sync and async transports of
    either library take the same arguments and count alike.

    A concrete transport names its library as it subclasses: ``class HTTPTransport(SyncPoolTransport,
    httpx.BaseTransport, library=httpx)``; its bodies are then that library's byte streams."""

    library: Library
    is_async: bool
    _body: type  # the response body still arriving, as the library's byte stream
    _traced_body: type  # the same with the `trace` extension's events

    def __init_subclass__(cls, library: Any = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if library is None:  # an intermediate class (or a user's subclass): inherits all
            return
        cls.library = lib = Library.of(library)
        cls._body = lib.stream_class(_AsyncBody if cls.is_async else _SyncBody, cls.is_async)
        cls._traced_body = lib.stream_class(TracedAsyncBody if cls.is_async else TracedBody, cls.is_async)

    def __init__(
        self,
        pool: PoolChoice = None,
        *,
        verify: Verify = True,
        cert: Cert = None,
        trust_env: bool = True,
        proxy: Any = None,
        drain_bytes: int = _core.DRAIN_BYTES,
        drain_timeout: float = _core.DRAIN_SECONDS,
        http1: bool = True,
        http2: bool = False,
        local_address: Optional[str] = None,
    ) -> None:
        self._engine = _core.HttpEngine(pool, verify, cert, drain=(drain_bytes, drain_timeout), versions=(http1, http2),
                                        local_address=local_address)
        lib = self.library
        make = lib.AsyncHTTPTransport if self.is_async else lib.HTTPTransport
        self._proxies = ProxyRouter(
            proxy, trust_env, lib, self.is_async,
            lambda p: make(proxy=p, verify=verify, cert=cert, http1=http1, http2=http2, local_address=local_address),
        )

    def _route(self, request: Any) -> tuple:
        """How the request goes: (the engine's number for its http(s) proxy or None, None), or
        (None, httpx's transport for a proxy only httpx can carry)."""
        if not self._proxies.has_routes:  # most transports: no proxy at all
            return None, None
        proxy = self._proxies.proxy_for(request.url)
        if proxy is None:
            return None, None
        _refuse_held_connection(request, self.library)
        number = self._proxies.proxy_number(proxy)
        return (number, None) if number is not None else (None, self._proxies.transport_for(proxy))

    def _response(self, response: Any, request: Any, tracer: Optional[Tracer]) -> Any:
        """The library's response for the engine's: a body that arrived whole is one ByteStream."""
        lib = self.library
        prefetched, finished = response.ready_bytes()
        stream = lib.ByteStream(prefetched) if finished else self._body(response, request, prefetched)
        if tracer is not None:
            stream = self._traced_body(stream, tracer)
        return lib.Response(response.status, headers=response.headers, stream=stream, extensions=_extensions(response))

    def _prewarm_target(self, url: Any, connections: int) -> Optional[tuple[str, str, Optional[int]]]:
        """(scheme, host, port) of the origin to prewarm, or None when there is nothing to do."""
        url = self.library.URL(url)
        if not isinstance(connections, int) or connections < 0:
            raise ValueError(f"connections must be a non-negative int, not {connections!r}")
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("prewarm needs an http:// or https:// URL with a host")
        if connections == 0:
            return None
        if self._proxies.routes_through_proxy(url):
            logger.warning("fast_litellm: not prewarming %s: a proxy applies to it (prewarm opens direct "
                           "connections only)", origin(url))
            return None
        return (url.scheme, url.raw_host.decode("ascii"), url.port)

    def _prewarm_report(self, url: Any, ready: int, error: Optional[str]) -> int:
        if error is not None:
            logger.warning("fast_litellm: prewarming %s: %d connection(s) ready; %s",
                           origin(self.library.URL(url)), ready, error)
        return ready

    def stats(self) -> dict:
        """Requests sent, retried on a fresh connection, bodies drained or abandoned, proxied."""
        engine = self._engine.stats()
        return {
            "requests": engine["requests"],
            "retried_on_fresh_connection": engine["retried"],
            "bodies_drained": engine["drained"],
            "bodies_not_drained": engine["drain_abandoned"],
            "proxied_requests": self._proxies.proxied,
        }


class SyncPoolTransport(PoolTransport):
    """``handle_request`` for either library (see :class:`HTTPTransport`)."""

    is_async = False

    def handle_request(self, request: Any) -> Any:
        number, carrier = self._route(request)
        if carrier is not None:
            return carrier.handle_request(request)
        trace = request.extensions.get("trace")
        try:
            response = self._engine.send(Outgoing.of(request, request.read(), number))
        except ENGINE_ERRORS as exc:
            error = self.library.error(exc, request)
            if trace is not None:
                Tracer(trace, request, self.library).emit(exc, error)
            raise error from None
        tracer = None
        if trace is not None:
            tracer = Tracer(trace, request, self.library)
            tracer.emit(response)
        return self._response(response, request, tracer)

    def prewarm(self, url: Any, connections: int = 1, timeout: Optional[float] = 10.0) -> int:
        """Opens connections to ``url``'s origin ahead of need (name lookup, TCP, TLS, the HTTP
        handshake), up to ``connections`` of that endpoint in all, within the pool's limits and
        without waiting for busy ones; over HTTP/2 one connection carries many requests, so it
        stops at the first. Each connection gets ``timeout`` seconds. Returns how many are
        open; an endpoint that cannot be reached (or that a proxy applies to) is logged as a
        warning and gives 0 or fewer, never an exception."""
        target = self._prewarm_target(url, connections)
        if target is None:
            return 0
        return self._prewarm_report(url, *self._engine.prewarm(target, connections, timeout))

    def close(self) -> None:
        for transport in self._proxies.take_transports():
            transport.close()


class AsyncPoolTransport(PoolTransport):
    """``handle_async_request`` for either library (see :class:`AsyncHTTPTransport`)."""

    is_async = True

    async def handle_async_request(self, request: Any) -> Any:
        number, carrier = self._route(request)
        if carrier is not None:
            return await carrier.handle_async_request(request)
        try:
            body = request.content
        except self.library.RequestNotRead:  # a streaming request body
            body = await request.aread()
        trace = request.extensions.get("trace")
        new_future, bridge = backend()
        future = new_future()
        try:
            handle = self._engine.send_async(bridge, future, Outgoing.of(request, body, number))
            try:
                response = await future
            except BaseException:  # cancelled (asyncio or trio), interrupted; a no-op if it failed
                handle.cancel()
                raise
        except ENGINE_ERRORS as exc:
            error = self.library.error(exc, request)
            if trace is not None:
                await Tracer(trace, request, self.library).aemit(exc, error)
            raise error from None
        tracer = None
        if trace is not None:
            tracer = Tracer(trace, request, self.library)
            await tracer.aemit(response)
        return self._response(response, request, tracer)

    async def aprewarm(self, url: Any, connections: int = 1, timeout: Optional[float] = 10.0) -> int:
        """The awaitable twin of :meth:`HTTPTransport.prewarm` (same arguments and result)."""
        target = self._prewarm_target(url, connections)
        if target is None:
            return 0
        new_future, bridge = backend()
        future = new_future()
        handle = self._engine.prewarm_async(bridge, future, target, connections, timeout)
        try:
            ready, error = await future
        except BaseException:  # cancelled: connections being opened are dropped
            handle.cancel()
            raise
        return self._prewarm_report(url, ready, error)

    async def aclose(self) -> None:
        for transport in self._proxies.take_transports():
            await transport.aclose()


class HTTPTransport(SyncPoolTransport, httpx.BaseTransport, library=httpx):
    """A sync httpx transport over fast_litellm's pool (``fast_litellm.httpx2.HTTPTransport`` is
    the same for httpx2).

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


class AsyncHTTPTransport(AsyncPoolTransport, httpx.AsyncBaseTransport, library=httpx):
    """The async twin of :class:`HTTPTransport` (same arguments). Usable from any number of
    event loops and threads at once: no state is bound to a loop."""
