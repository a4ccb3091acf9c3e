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
    returns an awaitable in async code."""

    __slots__ = ("callback", "request", "kwargs")

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

    def events(self, outcome: Any, error: Any = None) -> list:
        """The events up to the response head: `outcome` is the engine's response, or its
        exception (then `error` is the httpx exception raised)."""
        k = self.kwargs
        sent = [
            ("http11.send_request_headers.started", k), ("http11.send_request_headers.complete", {"return_value": None}),
            ("http11.send_request_body.started", k), ("http11.send_request_body.complete", {"return_value": None}),
            ("http11.receive_response_headers.started", k),
        ]
        if error is None:
            head = (outcome.http_version, outcome.status, outcome.reason_phrase, outcome.headers)
            return self._connect(outcome.new_connection) + sent + [
                ("http11.receive_response_headers.complete", {"return_value": head}),
            ]
        phase = _PHASES.get(type(outcome))
        failed = {"exception": error}
        if phase is None:  # a pool timeout, an unsupported URL: before any connection
            return []
        if phase == "connect":
            tcp_started, tcp_complete, *tls = self._connect(True)
            if tls and "TLS handshake failed" in str(outcome):
                return [tcp_started, tcp_complete, tls[0], ("connection.start_tls.failed", failed)]
            return [tcp_started, ("connection.connect_tcp.failed", failed)]
        # Whether a failed request had opened a new connection is not reported: no connection
        # events then.
        events = []
        if phase == "read":
            events += sent + [("http11.receive_response_headers.failed", failed)]
        elif self.request.content:  # with a body, the head most likely went out and the body failed
            events += sent[:3] + [("http11.send_request_body.failed", failed)]
        else:
            events += sent[:1] + [("http11.send_request_headers.failed", failed)]
        return events + [("http11.response_closed.started", {}), ("http11.response_closed.complete", {"return_value": None})]

    def _connect(self, new_connection: bool) -> list:
        if not new_connection:
            return []
        url, timeout = self.request.url, (self.request.extensions.get("timeout") or {}).get("connect")
        port = url.port or (443 if url.scheme == "https" else 80)
        events = [
            ("connection.connect_tcp.started", {"host": url.host, "port": port, "local_address": None,
                                                "timeout": timeout, "socket_options": None}),
            ("connection.connect_tcp.complete", {"return_value": None}),
        ]
        if url.scheme == "https":
            events += [
                ("connection.start_tls.started", {"ssl_context": None, "server_hostname": url.host, "timeout": timeout}),
                ("connection.start_tls.complete", {"return_value": None}),
            ]
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
            with _Span(self._tracer, "http11.receive_response_body", self._tracer.kwargs):
                yield from self._stream
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._tracer.call("http11.response_closed.started", {})
        finally:
            self._stream.close()
        self._tracer.call("http11.response_closed.complete", {"return_value": None})


class TracedAsyncBody:
    """The async twin of :class:`TracedBody`."""

    def __init__(self, stream: Any, tracer: Tracer) -> None:
        self._stream, self._tracer, self._closed = stream, tracer, False

    async def __aiter__(self):
        try:
            async with _Span(self._tracer, "http11.receive_response_body", self._tracer.kwargs):
                async for chunk in self._stream:
                    yield chunk
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._tracer.acall("http11.response_closed.started", {})
        finally:
            await self._stream.aclose()
        await self._tracer.acall("http11.response_closed.complete", {"return_value": None})
