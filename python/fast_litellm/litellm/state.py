"""The hooks' state: what is installed and what it replaced (to put back exactly), the transports
and pools made for LiteLLM's settings, counters, warnings. Read by the metrics, prewarming and
the Proxy callback through ``state`` and ``transports()``.

Lock order: ``state.lock`` is never held while importing anything (the import finder takes it
inside the import machinery's module lock, so an import under it could deadlock two threads).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from typing import Any, Optional

import httpx

from fast_litellm import _core, _locks
from fast_litellm._after_import import AfterImport
from fast_litellm._client_default import DefaultTransport
from fast_litellm._transport import AsyncHTTPTransport, HTTPTransport
from fast_litellm.litellm.settings import (
    HANDLER_MODULE, IPV4_LOCAL_ADDRESS, Plan, client_cert, http2_enabled, litellm_value, resolve_verify,
)

logger = logging.getLogger("fast_litellm")

DEFAULT_POOL = "default"


class Integration:
    """What is installed, what it replaced (to put back exactly), the transports made."""

    def __init__(self) -> None:
        self.lock = _locks.rlock()
        self.installed = False
        self.finder: Optional[AfterImport] = None
        self.originals: dict[str, Any] = {}
        self.hooks: dict[str, str] = {}
        self.client_defaults: list[DefaultTransport] = []
        self.warnings: list[str] = []
        self.warned_version = False
        # (kind, verify, cert, http2, pool, local_address) -> transport; kept after uninstall for
        # the counters.
        self.transports: dict[tuple, Any] = {}
        self.transport_pools: dict[int, str] = {}  # id(transport) -> its pool's name
        self.limits_pools: dict[tuple, str] = {}
        self.plans: dict[tuple, Plan] = {}  # settings_key -> plan, for the openai clients
        self.pool_settings: dict = {}
        self.pool_settings_before: dict = {}
        self.dns_ttl_before: Optional[float] = None
        self.prewarmed: dict[str, int] = {}  # origin -> connections FAST_LITELLM_PREWARM got ready
        self.fallback_transports: dict[str, int] = {}
        self.fallback_requests: dict[str, int] = {}
        self.counter_lock = _locks.lock()

    def transport(self, kind: str, plan: Plan) -> Any:
        cert = tuple(plan.cert) if isinstance(plan.cert, list) else plan.cert
        key = (kind, plan.verify, cert, plan.http2, plan.pool, plan.local_address)
        transport = self.transports.get(key)
        if transport is not None:
            return transport
        with self.lock:
            transport = self.transports.get(key)
            if transport is None:
                cls = HTTPTransport if kind == "sync" else AsyncHTTPTransport
                transport = cls(plan.pool, verify=plan.verify, cert=plan.cert, http2=plan.http2,
                                local_address=plan.local_address)
                self.transports[key] = transport
                self.transport_pools[id(transport)] = plan.pool or DEFAULT_POOL
            return transport

    def limits_pool(self, limits: httpx.Limits) -> str:
        key = (limits.max_connections, limits.keepalive_expiry)
        with self.lock:
            name = self.limits_pools.get(key)
            if name is None:
                name = f"litellm-limits-{limits.max_connections or 'none'}-{limits.keepalive_expiry or 'none'}"
                settings: dict = {}
                if limits.max_connections:
                    settings["max_connections"] = limits.max_connections
                    settings["max_connections_per_endpoint"] = limits.max_connections
                if limits.keepalive_expiry:
                    settings["idle_timeout"] = float(limits.keepalive_expiry)
                _core.SimpleConnectionPool(name, **settings)
                self.limits_pools[key] = name
            return name

    def pool_names(self) -> list[str]:
        names = [DEFAULT_POOL]
        for name in list(self.transport_pools.values()) + list(self.limits_pools.values()):
            if name not in names:
                names.append(name)
        return names

    def count_fallback(self, counts: dict, reason: str) -> None:
        with self.counter_lock:
            counts[reason] = counts.get(reason, 0) + 1

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning("fast_litellm: %s", message)


state = Integration()



class Fallbacks:
    """httpx's own transports, as the openai clients LiteLLM makes without a shared client would
    use, for requests whose settings our transports cannot honour; made per settings (and per
    event loop for async: httpx's async pool is bound to the loop it was first used in)."""

    def __init__(self) -> None:
        self.sync: dict[tuple, httpx.Client] = {}
        self.by_loop: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
        self.lock = _locks.lock()

    @staticmethod
    def _options(litellm: Any) -> dict:
        verify: Any = resolve_verify(litellm, None)
        if isinstance(verify, str) or verify is True:
            handler_module = sys.modules.get(HANDLER_MODULE)
            make = getattr(handler_module, "get_ssl_configuration", None)
            if make is not None:  # LiteLLM's own context: ciphers, curve, CA as it makes them
                verify = make(None, http2=http2_enabled(litellm))
        cert = client_cert(litellm)
        options: dict = {"verify": verify, "cert": cert, "http2": http2_enabled(litellm), "trust_env": True}
        if litellm_value(litellm, "force_ipv4") is True:
            options["transport_local_address"] = IPV4_LOCAL_ADDRESS
        return options

    @staticmethod
    def _client(cls: Any, options: dict) -> Any:
        local = options.pop("transport_local_address", None)
        if local is not None:
            transport_cls = httpx.HTTPTransport if cls is httpx.Client else httpx.AsyncHTTPTransport
            transport = transport_cls(local_address=local, verify=options["verify"], cert=options["cert"],
                                      http2=options["http2"])
            return cls(transport=transport, timeout=None, **options)
        return cls(timeout=None, **options)

    def sync_transport(self, key: tuple, litellm: Any, url: httpx.URL) -> httpx.BaseTransport:
        client = self.sync.get(key)
        if client is None:
            with self.lock:
                client = self.sync.get(key)
                if client is None:
                    client = self.sync[key] = self._client(httpx.Client, self._options(litellm))
        return client._transport_for_url(url)

    def async_transport(self, key: tuple, litellm: Any, url: httpx.URL) -> httpx.AsyncBaseTransport:
        loop = asyncio.get_running_loop()
        with self.lock:
            clients = self.by_loop.setdefault(loop, {})
            client = clients.get(key)
        if client is None:
            client = self._client(httpx.AsyncClient, self._options(litellm))
            with self.lock:
                client = clients.setdefault(key, client)
        return client._transport_for_url(url)


fallbacks = Fallbacks()


def transports() -> list:
    """Every transport the hooks made, with its pool's name."""
    return [(t, state.transport_pools.get(id(t), DEFAULT_POOL)) for t in list(state.transports.values())]
