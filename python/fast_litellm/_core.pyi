"""Type stubs for the Rust extension."""

from types import TracebackType
from typing import Any, Optional, TypedDict

__version__: str

class PoolTimeout(TimeoutError):
    """No pooled connection became free before the timeout."""

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
