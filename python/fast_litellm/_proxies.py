"""Which proxy a request goes through, and the transports of the proxies only httpx can carry.

The rules are httpx's (the ``proxy`` argument, or with ``trust_env`` the environment's proxies and
``NO_PROXY``), read through the transport's library (httpx or httpx2, see ``_library.py``).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Optional

from fast_litellm import _core, _locks
from fast_litellm._library import Library
from fast_litellm._loops import in_trio

__all__ = ["ProxyRouter"]


class ProxyRouter:
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

    def __init__(self, proxy: Any, trust_env: bool, library: Library, is_async: bool, make_transport: Any) -> None:
        self.proxied = 0
        self._routes: list = []
        self._library = library
        self._is_async = is_async
        self._make = make_transport
        if proxy is not None:
            self._routes = [(library.URLPattern("all://"), proxy)]
        elif trust_env:
            env = library.environment_proxies()
            self._routes = sorted((library.URLPattern(k), v) for k, v in env.items())
        # Most transports have no proxy at all: one attribute read per request then.
        self.has_routes = bool(self._routes)
        self._transports: dict = {}  # proxy -> sync transport
        # asyncio loop -> its _LoopProxies, removed when the loop ends. Not weak keys (as the
        # bridges in _loops.py): the transports' sockets refer to their loop, so it would never go.
        self._loops: dict = {}
        self._trio_runs: Any = None  # a trio RunVar: each trio run's _LoopProxies
        self._numbers: dict = {}  # id of a proxy in the routes -> the engine's number, or None
        self._lock = _locks.lock()

    def proxy_for(self, url: Any) -> Any:
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
            number = self._numbers[id(proxy)] = _register_proxy(proxy, self._library)
        return number

    def transport_for(self, proxy: Any) -> Any:
        """httpx's own transport for ``proxy`` (made once; per event loop for async ones)."""
        key = str(proxy)
        with self._lock:
            transports = self._loop_proxies().transports if self._is_async else self._transports
            if key not in transports:
                transports[key] = self._make(proxy)
            return transports[key]

    def routes_through_proxy(self, url: Any) -> bool:
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
            if not self._loops and self._trio_runs is None:  # none made yet, in any loop
                return []
            return self._loop_proxies().take()

    def _loop_proxies(self) -> "_LoopProxies":
        """The running event loop's async proxy transports (called with the lock held)."""
        if in_trio():
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


def _register_proxy(proxy: Any, library: Library) -> Optional[int]:
    """The engine's number for ``proxy`` (a URL, or an ``httpx.Proxy``); None when httpx's transport
    must carry it: socks, or an ``httpx.Proxy`` with an SSL context or headers of its own. The
    credentials from the URL become the Proxy-Authorization value, kept by the engine alone."""
    p = proxy if isinstance(proxy, library.Proxy) else library.Proxy(proxy)
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
