"""fast_litellm: a real, fast, observable HTTP connection pool for LiteLLM, written in Rust.

The pool and the HTTP engine live in the Rust extension ``fast_litellm._core``; this package
re-exports the pool API, adds httpx transports over it (``HTTPTransport``,
``AsyncHTTPTransport``), and on import routes LiteLLM's HTTP traffic through them
(``status()``, ``uninstall()``; ``FAST_LITELLM_DISABLE=1`` opts out).
"""

import os as _os

from fast_litellm._core import (
    ConnectError,
    ConnectionContext,
    ConnectTimeout,
    PoolTimeout,
    SimpleConnectionPool,
    __version__,
    cleanup_expired_connections,
    connect_connection,
    get_connection,
    get_connection_pool_stats,
    health_check_connection,
    remove_connection,
    return_connection,
)
from fast_litellm import _core
from fast_litellm._loops import forget_bridges
from fast_litellm._transport import CONNECTION_ID, AsyncHTTPTransport, HTTPTransport
from fast_litellm._litellm import install, status, uninstall
from fast_litellm._prewarm import aprewarm, prewarm, prewarm_deployments, start_from_environment as _prewarm_from_environment

__all__ = [
    "AsyncHTTPTransport",
    "CONNECTION_ID",
    "HTTPTransport",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionContext",
    "PoolTimeout",
    "SimpleConnectionPool",
    "__version__",
    "cleanup_expired_connections",
    "connect_connection",
    "get_connection",
    "get_connection_pool_stats",
    "health_check_connection",
    "aprewarm",
    "install",
    "prewarm",
    "prewarm_deployments",
    "remove_connection",
    "return_connection",
    "status",
    "uninstall",
]



def _after_fork_in_child() -> None:
    # A forked child must not share (or wait on locks of) the parent's pools and runtime.
    _core._reset_after_fork()
    forget_bridges()


_os.register_at_fork(after_in_child=_after_fork_in_child)

# The promise of the package: imported before (or after) litellm, LiteLLM's HTTP traffic goes
# through the Rust pool. FAST_LITELLM_DISABLE=1 opts out; uninstall() undoes it.
if install():
    _prewarm_from_environment()
