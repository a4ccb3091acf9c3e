"""fast_litellm's public face: the names it exports, what importing it does, its after-fork step.

A real, fast, observable HTTP connection pool for LiteLLM, written in Rust. The pool and the HTTP
engine live in the Rust extension ``fast_litellm._core``; this package re-exports the pool API,
adds httpx transports over it (``HTTPTransport``, ``AsyncHTTPTransport``), and on import routes
LiteLLM's HTTP traffic through them (``status()``, ``uninstall()``; ``FAST_LITELLM_DISABLE=1``
opts out).
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
from fast_litellm import _core, _locks, _metrics
from fast_litellm._loops import forget_bridges
from fast_litellm._transport import CONNECTION_ID, AsyncHTTPTransport, HTTPTransport
from fast_litellm.litellm import install, status, uninstall
from fast_litellm._openai_sdk import install_openai_sdk, uninstall_openai_sdk
from fast_litellm._openai_sdk import wanted_by_environment as _openai_sdk_from_environment
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
    "install_openai_sdk",
    "prewarm",
    "prewarm_deployments",
    "remove_connection",
    "return_connection",
    "status",
    "uninstall",
    "uninstall_openai_sdk",
]


def _after_fork_in_child() -> None:
    """Every part's after-fork step, in one place. A forked child holds a copy of the parent's
    memory but only the thread that forked: it must not share the parent's sockets and
    descriptors, nor wait on a lock that a parent thread held at the fork (that thread is not
    here to release it). In this order:"""
    # 0. The package's locks (_locks.py): released, whoever held them in the parent.
    _locks.reset_after_fork()
    # 1. Pools and runtime: empty pools of the same names, and a tokio runtime of the child's own
    #    (the parent's worker threads are gone; its connections are the parent's).
    _core.reset_after_fork()
    # 2. Event-loop bridges: their eventfds are shared with the parent; a loop used in the child
    #    gets a bridge of its own.
    forget_bridges()
    # 3. Metrics: the multiprocess writer's thread is gone; it restarts, counting from zero.
    #    After 1: it reads the pools, which must be the child's by then.
    _metrics.after_fork_in_child()


# The only os.register_at_fork of the package.
_os.register_at_fork(after_in_child=_after_fork_in_child)

# The promise of the package: imported before (or after) litellm, LiteLLM's HTTP traffic goes
# through the Rust pool. FAST_LITELLM_DISABLE=1 opts out; uninstall() undoes it.
if install():
    _prewarm_from_environment()
# Opt in: the openai SDK's own default clients on the pool too (docs/litellm.md).
if _openai_sdk_from_environment():
    install_openai_sdk()
