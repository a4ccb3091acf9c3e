"""Type stubs for the Rust extension (checked against it by `make stubcheck`)."""

from os import PathLike
from types import TracebackType
from typing import Any, Callable, Literal, Protocol, TypeAlias, TypedDict, final

__all__ = [
    "__version__",
    "DRAIN_BYTES",
    "DRAIN_SECONDS",
    "SimpleConnectionPool",
    "ConnectionContext",
    "PoolTimeout",
    "TransportError",
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "ReadError",
    "WriteError",
    "RemoteProtocolError",
    "LocalProtocolError",
    "UnsupportedProtocol",
    "ProxyError",
    "LoopBridge",
    "HttpEngine",
    "PyResponse",
    "BodyReader",
    "AsyncBodyReader",
    "CancelHandle",
    "get_connection",
    "return_connection",
    "remove_connection",
    "health_check_connection",
    "cleanup_expired_connections",
    "get_connection_pool_stats",
    "connect_connection",
    "pool_names",
    "configure_dns_cache",
    "get_dns_cache_stats",
    "reset_after_fork",
]

__version__: str
# The transports' defaults for draining a body closed early (`drain_bytes`, `drain_timeout`).
DRAIN_BYTES: int
DRAIN_SECONDS: float

# Types of the stub only (not in the runtime module), hence private.

_StrPath: TypeAlias = str | PathLike[str]
# connect, read, write, pool: seconds, or None for no limit.
_Timeouts: TypeAlias = tuple[float | None, float | None, float | None, float | None]

class _Future(Protocol):
    """What a result is set on: an asyncio future, or fast_litellm._loops._TrioFuture."""

    def cancelled(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...

class _Outgoing(Protocol):
    """One request, read by name (fast_litellm._transport.Outgoing)."""

    @property
    def method(self) -> str: ...
    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def target(self) -> bytes: ...
    @property
    def headers(self) -> list[tuple[bytes, bytes]]: ...
    @property
    def body(self) -> bytes: ...
    @property
    def timeouts(self) -> _Timeouts: ...
    @property
    def connection_id(self) -> str | None: ...
    @property
    def proxy(self) -> int | None: ...

class _EngineStats(TypedDict):
    requests: int
    retried: int
    drained: int
    drain_abandoned: int

class _PoolSettings(TypedDict):
    max_connections: int
    max_connections_per_endpoint: int
    idle_timeout: float | None
    max_lifetime: float | None
    reaper_interval: float | None

class _Histogram(TypedDict):
    buckets: list[tuple[float, int]]  # (upper bound in seconds, cumulative count); the last is inf
    sum: float  # seconds
    count: int

class _EndpointStats(TypedDict):
    active: int
    idle: int
    total: int
    http1_connections: int
    http2_connections: int
    streams_in_use: int
    tls_handshakes_full: int
    tls_handshakes_resumed: int
    connect_seconds: _Histogram  # successful opens: name lookup to ready for requests

class _PoolStats(TypedDict):
    pool_name: str
    total_connections: int
    active_connections: int
    idle_connections: int
    waiting_requests: int
    settings: _PoolSettings
    connections_created: int
    connections_reused: int
    connections_closed: dict[str, int]  # by reason
    waits: int
    wait_timeouts: int
    ignored_returns: int
    wait_seconds: _Histogram  # time queued, by the checkouts that queued
    endpoints: dict[str, _EndpointStats]  # by origin

# Exceptions.

class PoolTimeout(TimeoutError):
    """No pooled connection became free before the timeout."""

class TransportError(Exception):
    """An HTTP request failed (the transports raise httpx's classes instead)."""

class ConnectError(TransportError): ...
class ConnectTimeout(TransportError): ...
class ReadTimeout(TransportError): ...
class WriteTimeout(TransportError): ...
class ReadError(TransportError): ...
class WriteError(TransportError): ...
class RemoteProtocolError(TransportError): ...
class LocalProtocolError(TransportError): ...
class UnsupportedProtocol(TransportError): ...

class ProxyError(TransportError):
    """A proxy refused to open a tunnel."""

# The HTTP engine (used by fast_litellm._transport).

@final
class LoopBridge:
    """Hands results from the Rust runtime to one event loop, asyncio's or a trio run's
    (watch fileno())."""

    def fileno(self) -> int: ...
    def deliver_ready(self) -> None:
        """Sets every queued result on its future; call when fileno() is readable."""

@final
class CancelHandle:
    """Stops an async request; its connection is closed."""

    def cancel(self) -> None: ...

@final
class PyResponse:
    """A response head and its body (see fast_litellm._transport)."""

    @property
    def status(self) -> int: ...
    @property
    def new_connection(self) -> bool:
        """Whether the request opened a new connection."""
    @property
    def opened_connection(
        self,
    ) -> tuple[tuple[str, int], tuple[str, int], tuple[str, str, str | None] | None] | None:
        """The connection the request opened: ((server ip, port), (client ip, port), TLS as
        (version, cipher, ALPN protocol) or None); None when it reused one."""
    @property
    def stream_id(self) -> int | None:
        """The HTTP/2 stream the response came on."""
    @property
    def http_version(self) -> bytes:
        """`b"HTTP/2"`, `b"HTTP/1.1"` or `b"HTTP/1.0"`."""
    @property
    def reason_phrase(self) -> bytes: ...
    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Every field line, in wire order."""
    def ready_bytes(self) -> tuple[bytes, bool]:
        """The bytes read with the head (once; never waits), and whether the body ended."""
    def close(self) -> None:
        """Stops reading: the rest is drained in the background, then the connection reused."""

@final
class BodyReader:
    """Iterates a response body: each step everything that has arrived, as one bytes object
    (`first` first); blocks without the GIL while nothing has. Engine errors go through
    `on_error`, whose return value is raised."""

    def __new__(cls, response: PyResponse, first: bytes, on_error: Callable[[BaseException], BaseException]) -> BodyReader: ...
    def __iter__(self) -> BodyReader: ...
    def __next__(self) -> bytes: ...

@final
class AsyncBodyReader:
    """The async twin of BodyReader: each step a future of `new_future()`, set through `bridge`
    when bytes arrive. Cancelling that future stops the read before it takes anything."""

    def __new__(
        cls,
        response: PyResponse,
        first: bytes,
        bridge: LoopBridge,
        new_future: Callable[[], _Future],
        on_error: Callable[[BaseException], BaseException],
    ) -> AsyncBodyReader: ...
    def __aiter__(self) -> AsyncBodyReader: ...
    def __anext__(self) -> _Future: ...

@final
class HttpEngine:
    """The Rust HTTP engine over one pool with one set of TLS settings."""

    def __new__(
        cls,
        pool: SimpleConnectionPool | str | None = None,
        verify: bool | _StrPath | None = None,
        cert: _StrPath | tuple[_StrPath, _StrPath] | None = None,
        drain: tuple[int, float] | None = None,  # (bytes, seconds); None: DRAIN_BYTES, DRAIN_SECONDS
        versions: tuple[bool, bool] = ...,  # (http1, http2); (True, False)
        local_address: str | None = None,
    ) -> HttpEngine: ...
    def send(self, request: _Outgoing) -> PyResponse:
        """Sends a request and returns its response head, blocking without the GIL."""
    def send_async(self, bridge: LoopBridge, future: _Future, request: _Outgoing) -> CancelHandle:
        """Sends a request; its PyResponse (or error) is set on `future` through `bridge`."""
    @staticmethod
    def register_proxy(scheme: str, host: str, port: int, authorization: bytes | None = None) -> int:
        """The number requests name an http(s) proxy by (`proxy=`); the credentials stay in the engine."""
    def prewarm(self, origin: tuple[str, str, int | None], connections: int, timeout: float | None) -> tuple[int, str | None]:
        """Opens connections to (scheme, host, port) ahead of need, blocking without the GIL: (ready, first error)."""
    def prewarm_async(
        self, bridge: LoopBridge, future: _Future, origin: tuple[str, str, int | None], connections: int,
        timeout: float | None,
    ) -> CancelHandle:
        """`prewarm` on the runtime; (ready, first error) is set on `future` through `bridge`."""
    def stats(self) -> _EngineStats:
        """Counters of this engine, by name."""

# The connection pool.

@final
class ConnectionContext:
    """The context manager returned by ``SimpleConnectionPool.connection()``."""

    def __enter__(self) -> str: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> Literal[False]: ...

@final
class SimpleConnectionPool:
    """A connection pool shared by every handle with the same name."""

    # The settings keywords here and in configure() mirror each other on purpose: the same
    # settings, given when the pool is made or changed later.
    def __new__(
        cls,
        pool_name: str | None = None,
        *,
        max_connections: int = ...,
        max_connections_per_endpoint: int = ...,
        idle_timeout: float | None = ...,
        max_lifetime: float | None = ...,
        reaper_interval: float | None = ...,
    ) -> SimpleConnectionPool:
        """Opens the pool named `pool_name` (None: "default"), creating it with these settings."""
    @property
    def pool_name(self) -> str: ...
    @property
    def settings(self) -> _PoolSettings: ...
    # The same keywords as __new__ (see there).
    def configure(
        self,
        *,
        max_connections: int = ...,
        max_connections_per_endpoint: int = ...,
        idle_timeout: float | None = ...,
        max_lifetime: float | None = ...,
        reaper_interval: float | None = ...,
    ) -> None:
        """Changes the given settings in place."""
    def get_connection(self, endpoint: str) -> str | None:
        """A connection id, or None when the limits are reached. Never blocks."""
    def acquire(self, endpoint: str, timeout: float | None = None) -> str:
        """A connection id, waiting first come first served; PoolTimeout after `timeout`."""
    def connection(self, endpoint: str, timeout: float | None = None) -> ConnectionContext: ...
    def return_connection(self, connection_id: str | None) -> bool: ...
    def remove_connection(self, connection_id: str | None) -> bool: ...
    def health_check(self, connection_id: str | None) -> bool: ...
    def connect(self, connection_id: str | None, timeout: float | None = None) -> bool:
        """Opens the checked-out connection now; False if the id is not checked out."""
    def cleanup(self) -> int: ...
    def get_stats(self) -> _PoolStats: ...

# The same on the pool named "default".

def get_connection(endpoint: str) -> str | None: ...
def return_connection(connection_id: str | None) -> bool: ...
def remove_connection(connection_id: str | None) -> bool: ...
def health_check_connection(connection_id: str | None) -> bool: ...
def connect_connection(connection_id: str | None, timeout: float | None = None) -> bool: ...
def cleanup_expired_connections() -> int: ...
def get_connection_pool_stats() -> _PoolStats: ...
def pool_names() -> list[str]:
    """The names of the pools made so far in this process."""

class _DnsCacheStats(TypedDict):
    ttl: float | None
    lookups: int

def configure_dns_cache(ttl: float | None) -> None:
    """How long name lookups are kept, process-wide (0 or None: not kept; default 300 s)."""
def get_dns_cache_stats() -> _DnsCacheStats: ...
def reset_after_fork() -> None:
    """Called in a forked child: every pool starts empty."""
