"""Type stubs for the Rust extension."""

from types import TracebackType
from typing import Any, Optional, TypedDict

__version__: str

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

class LoopBridge:
    """Hands results from the Rust runtime to one event loop, asyncio's or a trio run's
    (watch fileno())."""

    def __init__(self) -> None: ...
    def fileno(self) -> int: ...
    def drain(self) -> None: ...

class CancelHandle:
    """Stops an async request or body read; its connection is closed."""

    def cancel(self) -> None: ...

class PyResponse:
    """A response head and its body (see fast_litellm._transport)."""

    status: int
    new_connection: bool
    @property
    def http_version(self) -> bytes: ...
    @property
    def reason_phrase(self) -> bytes: ...
    @property
    def headers(self) -> list[tuple[bytes, bytes]]: ...
    def take_prefetched(self) -> tuple[list[bytes], bool]: ...
    def ready_chunks(self) -> tuple[list[bytes], bool]: ...
    def read_chunk(self) -> Optional[bytes]: ...
    def read_chunk_async(self, bridge: LoopBridge, future: Any) -> CancelHandle: ...
    def close(self) -> None: ...

Timeouts = tuple[Optional[float], Optional[float], Optional[float], Optional[float]]

class HttpEngine:
    """The Rust HTTP engine over one pool with one set of TLS settings."""

    def __init__(
        self,
        pool: "SimpleConnectionPool | str | None" = None,
        verify: "bool | str | None" = None,
        cert: "str | tuple[str, str] | None" = None,
        drain_bytes: int = 262144,
        drain_timeout: float = 0.5,
        http1: bool = True,
        http2: bool = False,
    ) -> None: ...
    def send(
        self, method: str, scheme: str, host: str, port: Optional[int], target: bytes,
        headers: list[tuple[bytes, bytes]], body: bytes, timeouts: Timeouts,
    ) -> PyResponse: ...
    def send_async(
        self, bridge: LoopBridge, future: Any, method: str, scheme: str, host: str, port: Optional[int],
        target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, timeouts: Timeouts,
    ) -> CancelHandle: ...
    def stats(self) -> tuple[int, int, int, int]: ...

class PoolSettings(TypedDict):
    max_connections: int
    max_connections_per_endpoint: int
    idle_timeout: Optional[float]
    max_lifetime: Optional[float]
    reaper_interval: Optional[float]

class EndpointStats(TypedDict):
    active: int
    idle: int
    total: int

class PoolStats(TypedDict):
    pool_name: str
    total_connections: int
    active_connections: int
    idle_connections: int
    waiting_requests: int
    settings: PoolSettings
    connections_created: int
    connections_reused: int
    connections_closed: dict[str, int]
    waits: int
    wait_timeouts: int
    ignored_returns: int
    endpoints: dict[str, EndpointStats]

class ConnectionContext:
    """The context manager returned by ``SimpleConnectionPool.connection()``."""

    def __enter__(self) -> str: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class SimpleConnectionPool:
    """A connection pool shared by every handle with the same name."""

    def __init__(
        self,
        pool_name: Optional[str] = "default",
        *,
        max_connections: int = ...,
        max_connections_per_endpoint: int = ...,
        idle_timeout: Optional[float] = ...,
        max_lifetime: Optional[float] = ...,
        reaper_interval: Optional[float] = ...,
    ) -> None: ...
    @property
    def pool_name(self) -> str: ...
    @property
    def settings(self) -> PoolSettings: ...
    def configure(
        self,
        *,
        max_connections: int = ...,
        max_connections_per_endpoint: int = ...,
        idle_timeout: Optional[float] = ...,
        max_lifetime: Optional[float] = ...,
        reaper_interval: Optional[float] = ...,
    ) -> None: ...
    def get_connection(self, endpoint: str) -> Optional[str]: ...
    def acquire(self, endpoint: str, timeout: Optional[float] = None) -> str: ...
    def connection(self, endpoint: str, timeout: Optional[float] = None) -> ConnectionContext: ...
    def return_connection(self, connection_id: Optional[str]) -> bool: ...
    def remove_connection(self, connection_id: Optional[str]) -> bool: ...
    def health_check(self, connection_id: Optional[str]) -> bool: ...
    def cleanup(self) -> int: ...
    def get_stats(self) -> PoolStats: ...

def get_connection(endpoint: str) -> Optional[str]: ...
def return_connection(connection_id: Optional[str]) -> bool: ...
def remove_connection(connection_id: Optional[str]) -> bool: ...
def health_check_connection(connection_id: Optional[str]) -> bool: ...
def cleanup_expired_connections() -> int: ...
def get_connection_pool_stats() -> PoolStats: ...
def _reset_after_fork() -> None: ...
