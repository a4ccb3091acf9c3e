"""The ``trace`` request extension: httpcore's events, names and order.

The engine runs a request in one go, so the events before the response head are emitted
together when it arrives (or when the request fails); the body's events come as it is read.
"""

from __future__ import annotations

import inspect
from typing import Any

from fast_litellm import _core


_PHASES = {
    _core.ConnectError: "connect", _core.ConnectTimeout: "connect",
    _core.WriteError: "write", _core.WriteTimeout: "write", _core.LocalProtocolError: "write",
    _core.ReadError: "read", _core.ReadTimeout: "read", _core.RemoteProtocolError: "read",
}


class Tracer:
    """Calls a request's `trace` callback as httpcore does: `(name, info)`, awaited when it
    returns an awaitable in async code. `prefix` and `kwargs` are the protocol's (``http11`` or
    ``http2``, known once the head is here; HTTP/2's name the stream) for the body's events."""

    __slots__ = ("callback", "request", "kwargs", "prefix", "closed_kwargs")

    def __init__(self, callback: Any, request: Any, library: Any) -> None:
        httpcore = library.core  # httpcore for httpx, httpcore2 for httpx2
        url = request.url
        self.callback = callback
        self.request = request
        # As httpx's own transport hands it to httpcore.
        self.kwargs = {"request": httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions,
        )}
        self.prefix = "http11"
        self.closed_kwargs: dict = {}

    def events(self, outcome: Any, error: Any = None) -> list:
        """The events up to the response head: `outcome` is the engine's response, or its
        exception (then `error` is the httpx exception raised)."""
        if error is None:
            return self._connect(outcome.opened_connection) + self._exchange(outcome)
        k = self.kwargs
        sent = [
            ("http11.send_request_headers.started", k), ("http11.send_request_headers.complete", {"return_value": None}),
            ("http11.send_request_body.started", k), ("http11.send_request_body.complete", {"return_value": None}),
            ("http11.receive_response_headers.started", k),
        ]
        phase = _PHASES.get(type(outcome))
        failed = {"exception": error}
        if phase is None:  # a pool timeout, an unsupported URL: before any connection
            return []
        if phase == "connect":
            tcp_started, tls_started = self._started()
            if tls_started is not None and "TLS handshake failed" in str(outcome):
                return [tcp_started, ("connection.connect_tcp.complete", {"return_value": None}), tls_started,
                        ("connection.start_tls.failed", failed)]
            return [tcp_started, ("connection.connect_tcp.failed", failed)]
        # Whether a failed request had opened a new connection, and which protocol it spoke, is
        # not reported: no connection events then, and HTTP/1.1's names.
        events = []
        if phase == "read":
            events += sent + [("http11.receive_response_headers.failed", failed)]
        elif self.request.content:  # with a body, the head most likely went out and the body failed
            events += sent[:3] + [("http11.send_request_body.failed", failed)]
        else:
            events += sent[:1] + [("http11.send_request_headers.failed", failed)]
        return events + [("http11.response_closed.started", {}), ("http11.response_closed.complete", {"return_value": None})]

    def _exchange(self, response: Any) -> list:
        """A request's events from its head to the response head, with httpcore's names and
        arguments for the protocol it went over."""
        done = {"return_value": None}
        if response.http_version != b"HTTP/2":
            k, head = self.kwargs, (response.http_version, response.status, response.reason_phrase, response.headers)
            return [("http11.send_request_headers.started", k), ("http11.send_request_headers.complete", done),
                    ("http11.send_request_body.started", k), ("http11.send_request_body.complete", done),
                    ("http11.receive_response_headers.started", k),
                    ("http11.receive_response_headers.complete", {"return_value": head})]
        self.prefix = "http2"
        init = []
        if response.new_connection:
            init = [("http2.send_connection_init.started", self.kwargs), ("http2.send_connection_init.complete", done)]
        k = self.kwargs = dict(self.kwargs, stream_id=response.stream_id)
        self.closed_kwargs = {"stream_id": response.stream_id}
        # On a new connection the server's SETTINGS arrive while the first head is awaited
        # (httpcore's return value, h2's RemoteSettingsChanged event, stays the engine's: None).
        settings = [("http2.receive_remote_settings.started", {}),
                    ("http2.receive_remote_settings.complete", done)] if init else []
        return init + [("http2.send_request_headers.started", k), ("http2.send_request_headers.complete", done),
                       ("http2.send_request_body.started", k), ("http2.send_request_body.complete", done),
                       ("http2.receive_response_headers.started", k), *settings,
                       ("http2.receive_response_headers.complete",
                        {"return_value": (response.status, response.headers)})]

    def _started(self) -> tuple:
        """The `connect_tcp.started` event and, for https, `start_tls.started` (else None)."""
        url, timeout = self.request.url, (self.request.extensions.get("timeout") or {}).get("connect")
        port = url.port or (443 if url.scheme == "https" else 80)
        tcp = ("connection.connect_tcp.started", {"host": url.host, "port": port, "local_address": None,
                                                  "timeout": timeout, "socket_options": None})
        tls = None
        if url.scheme == "https":
            tls = ("connection.start_tls.started", {"ssl_context": None, "server_hostname": url.host, "timeout": timeout})
        return tcp, tls

    def _connect(self, opened: Any) -> list:
        """The events of the connection the request opened (none for a reused one), whose
        `complete` events return network streams answering `get_extra_info` as httpcore's."""
        if opened is None:
            return []
        server, client, tls = opened
        tcp_started, tls_started = self._started()
        events = [tcp_started, ("connection.connect_tcp.complete", {"return_value": NetworkStream(server, client)})]
        if tls_started is not None:
            ssl_object = SSLObject(*tls, self.request.url.host) if tls is not None else None
            events += [tls_started, ("connection.start_tls.complete",
                                     {"return_value": NetworkStream(server, client, ssl_object)})]
        return events

    def call(self, name: str, info: dict) -> None:
        result = self.callback(name, info)
        if inspect.iscoroutine(result):
            result.close()
            raise TypeError("the `trace` callback of a sync request must be a normal function, not async")

    async def acall(self, name: str, info: dict) -> None:
        result = self.callback(name, info)
        if inspect.isawaitable(result):
            await result

    def emit(self, outcome: Any, error: Any = None) -> None:
        for name, info in self.events(outcome, error):
            self.call(name, info)

    async def aemit(self, outcome: Any, error: Any = None) -> None:
        for name, info in self.events(outcome, error):
            await self.acall(name, info)


class _Span:
    """`<name>.started`, then `<name>.complete` or `<name>.failed`, around a block (as
    httpcore's Trace)."""

    __slots__ = ("tracer", "name", "info")

    def __init__(self, tracer: Tracer, name: str, info: dict) -> None:
        self.tracer, self.name, self.info = tracer, name, info

    def __enter__(self) -> None:
        self.tracer.call(self.name + ".started", self.info)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            self.tracer.call(self.name + ".complete", {"return_value": None})
        else:
            self.tracer.call(self.name + ".failed", {"exception": exc})

    async def __aenter__(self) -> None:
        await self.tracer.acall(self.name + ".started", self.info)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            await self.tracer.acall(self.name + ".complete", {"return_value": None})
        else:
            await self.tracer.acall(self.name + ".failed", {"exception": exc})


class TracedBody:
    """A response body with the events of httpcore's: receiving it, closing it. A byte stream of
    the transport's library through ``Library.stream_class``."""

    def __init__(self, stream: Any, tracer: Tracer) -> None:
        self._stream, self._tracer, self._closed = stream, tracer, False

    def __iter__(self):
        try:
            with _Span(self._tracer, self._tracer.prefix + ".receive_response_body", self._tracer.kwargs):
                yield from self._stream
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tracer = self._tracer
        try:
            tracer.call(tracer.prefix + ".response_closed.started", tracer.closed_kwargs)
        finally:
            self._stream.close()
        tracer.call(tracer.prefix + ".response_closed.complete", {"return_value": None})


class TracedAsyncBody:
    """The async twin of :class:`TracedBody`."""

    def __init__(self, stream: Any, tracer: Tracer) -> None:
        self._stream, self._tracer, self._closed = stream, tracer, False

    async def __aiter__(self):
        try:
            async with _Span(self._tracer, self._tracer.prefix + ".receive_response_body", self._tracer.kwargs):
                async for chunk in self._stream:
                    yield chunk
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        tracer = self._tracer
        try:
            await tracer.acall(tracer.prefix + ".response_closed.started", tracer.closed_kwargs)
        finally:
            await self._stream.aclose()
        await tracer.acall(tracer.prefix + ".response_closed.complete", {"return_value": None})


class NetworkStream:
    """What httpcore's `connect_tcp` / `start_tls` events return, as far as tracing reads it:
    `get_extra_info` with httpcore's names (httpx's command line prints `server_addr`). The
    socket itself stays the engine's: `socket` is None, `is_readable` False."""

    __slots__ = ("_server", "_client", "_ssl_object")

    def __init__(self, server: tuple, client: tuple, ssl_object: Any = None) -> None:
        self._server, self._client, self._ssl_object = server, client, ssl_object

    def get_extra_info(self, info: str) -> Any:
        return {"server_addr": self._server, "client_addr": self._client, "ssl_object": self._ssl_object,
                "is_readable": False}.get(info)


class SSLObject:
    """The TLS session as much of `ssl.SSLObject` as tracing reads: `version()`, `cipher()`,
    `selected_alpn_protocol()`, `server_hostname`; `getpeercert()` is empty (rustls keeps the
    certificate), `compression()` None."""

    __slots__ = ("_version", "_cipher", "_alpn", "server_hostname")

    def __init__(self, version: str, cipher: str, alpn: Any, server_hostname: str) -> None:
        self._version, self._cipher, self._alpn, self.server_hostname = version, cipher, alpn, server_hostname

    def version(self) -> str:
        return self._version

    def cipher(self) -> tuple:
        """(name, protocol, secret bits), as Python's."""
        bits = 128 if "_128_" in self._cipher else 256 if ("_256_" in self._cipher or "CHACHA20" in self._cipher) else None
        return (self._cipher, self._version, bits)

    def selected_alpn_protocol(self) -> Any:
        return self._alpn

    def getpeercert(self, binary_form: bool = False) -> dict:
        return {}

    def compression(self) -> None:
        return None
