"""fast_litellm: a real, fast, observable HTTP connection pool for LiteLLM, written in Rust.

The pool lives in the Rust extension ``fast_litellm._core``; this package re-exports it.
"""

import os as _os

from fast_litellm._core import (
    ConnectionContext,
    PoolTimeout,
    SimpleConnectionPool,
    __version__,
    cleanup_expired_connections,
    get_connection,
    get_connection_pool_stats,
    health_check_connection,
    remove_connection,
    return_connection,
)
from fast_litellm import _core

__all__ = [
    "ConnectionContext",
    "PoolTimeout",
    "SimpleConnectionPool",
    "__version__",
    "cleanup_expired_connections",
    "get_connection",
    "get_connection_pool_stats",
    "health_check_connection",
    "remove_connection",
    "return_connection",
]

# A forked child must not share (or wait on locks of) the parent's pools.
_os.register_at_fork(after_in_child=_core._reset_after_fork)
