"""The hooks into LiteLLM: install and uninstall them (LiteLLM's HTTP traffic through fast_litellm's
transports, reversibly), and status().

These hook points together carry every request LiteLLM 1.110 sends from Python (see
docs/litellm.md; its coverage table comes from tests/python/test_litellm_coverage.py):

* ``litellm.client_session`` / ``litellm.aclient_session``: the httpx clients the openai SDK
  uses for OpenAI-compatible models;
* ``OpenAIHTTPClient`` / ``OpenAIAsyncHTTPClient``: the httpx clients LiteLLM makes for the openai
  SDK clients it builds itself (moderation, files, batches, assistants, fine-tuning, azure): they
  get the transport of the shared clients by default;
* ``HTTPHandler._create_sync_transport``: the transport factory of LiteLLM's sync handler
  (other providers);
* ``AsyncHTTPHandler.create_async_transport``: the transport factory of its async handler.

LiteLLM's own settings are read when LiteLLM makes a client or transport (the factories get
what LiteLLM resolved: TLS verification, CA bundle, client certificate, HTTP/2, limits), and
for the shared openai clients when a request is sent (LiteLLM has no "client made" moment
there). What the transports cannot do as LiteLLM would (an ``ssl.SSLContext`` of the user's
own or with LiteLLM's cipher / curve settings) is handed to LiteLLM's own transport, and counted
(``status()["handed_to_litellm"]``).

Imported before ``litellm``, the hooks go in while LiteLLM loads (a ``sys.meta_path`` finder),
so the handlers LiteLLM builds during its import use them too. Imported after, they go in at
once and the clients LiteLLM cached are dropped so that new ones are built on the hooks.

Lock order: ``_state.lock`` is never held while importing anything (the finder takes it inside
the import machinery's module lock, so an import under it could deadlock two threads).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
import weakref
from typing import Any, NamedTuple, Optional

import httpx

from fast_litellm import _core, _locks
from fast_litellm._after_import import AfterImport
from fast_litellm._client_default import DefaultTransport
from fast_litellm._transport import AsyncHTTPTransport, HTTPTransport

logger = logging.getLogger("fast_litellm")

HANDLER_MODULE = "litellm.llms.custom_httpx.http_handler"
# Where LiteLLM's own httpx clients for the openai SDK are defined (loaded by `import litellm`).
OPENAI_CLIENTS_MODULE = "litellm.llms.openai.common_utils"
# The LiteLLM releases the tests ran against (Makefile: LITELLM_VERSION), lowest and highest.
TESTED_LITELLM = "1.110.2"
TESTED_LITELLM_RANGE = ("1.110.2", "1.110.2")
DEFAULT_POOL = "default"
IPV4_LOCAL_ADDRESS = "0.0.0.0"
_MISSING = object()
# LiteLLM's module-level clients, made lazily by ``litellm.__getattr__`` (1.110) on first use.
_MODULE_LEVEL_CLIENTS = ("module_level_client", "module_level_aclient")


class _SharedClient(httpx.Client):
    """litellm.client_session: shared by every OpenAI SDK client LiteLLM makes, so a close()
    from one of them must not end it for the others."""

    def close(self) -> None:
        pass


class _SharedAsyncClient(httpx.AsyncClient):
    """litellm.aclient_session, for the same reason as :class:`_SharedClient`."""

    async def aclose(self) -> None:
        pass


def env_flag(name: str) -> Optional[bool]:
    value = os.environ.get(name)
    if value is None:
        return None
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def _str_to_bool(value: str) -> Optional[bool]:
    """LiteLLM's ``str_to_bool``: only "true" and "false" (any case) mean anything. Settings must
    mean here what they mean to LiteLLM (``SSL_VERIFY=0`` verifies there, so here too)."""
    lowered = value.strip().lower()
    return {"true": True, "false": False}.get(lowered)


# --- LiteLLM's settings, and what the transports make of them ------------------------------------


class _Plan(NamedTuple):
    """How requests made with some LiteLLM settings are sent: by our transports with these
    arguments, or (``fallback`` set: the reason) by LiteLLM's own transport."""

    verify: Any = True
    cert: Any = None
    http2: bool = False
    pool: Optional[str] = None
    local_address: Optional[str] = None
    fallback: Optional[str] = None


def _litellm_value(litellm: Any, name: str, default: Any = None) -> Any:
    # Through __dict__: a missing name must not reach litellm.__getattr__ (which imports).
    return litellm.__dict__.get(name, default) if litellm is not None else default


def _http2_enabled(litellm: Any) -> bool:
    """LiteLLM's ``http2_enabled()``: ``litellm.http2 = True`` or ``LITELLM_HTTP2``."""
    if _litellm_value(litellm, "http2") is True:
        return True
    return _str_to_bool(os.environ.get("LITELLM_HTTP2", "False")) is True


def _client_cert(litellm: Any) -> Any:
    return os.environ.get("SSL_CERTIFICATE") or _litellm_value(litellm, "ssl_certificate")


def _cipher_settings(litellm: Any) -> Optional[str]:
    """The reason LiteLLM's SSL context cannot be reproduced, if its cipher or curve settings
    are set (``SSL_SECURITY_LEVEL`` / ``SSL_ECDH_CURVE``, or litellm's attributes)."""
    if os.environ.get("SSL_SECURITY_LEVEL", _litellm_value(litellm, "ssl_security_level")):
        return "ssl_security_level"
    if os.environ.get("SSL_ECDH_CURVE", _litellm_value(litellm, "ssl_ecdh_curve")):
        return "ssl_ecdh_curve"
    return None


def _resolve_verify(litellm: Any, ssl_verify: Any) -> Any:
    """LiteLLM's ``get_ssl_verify``: the argument, else ``SSL_VERIFY``, else ``litellm.ssl_verify``;
    "false"-like strings are False, an existing path is a CA bundle, and ``SSL_CERT_FILE`` (an
    existing file) is the CA bundle when verification is simply on."""
    verify = ssl_verify
    if verify is None:
        verify = os.environ.get("SSL_VERIFY", _litellm_value(litellm, "ssl_verify", True))
    if isinstance(verify, str):
        if os.path.exists(verify):
            return verify
        as_bool = _str_to_bool(verify)
        # Any other string verifies, as in LiteLLM (its SSL context is made for it).
        verify = True if as_bool is None else as_bool
    if verify is True:
        cert_file = os.environ.get("SSL_CERT_FILE")
        if cert_file and os.path.exists(cert_file):
            return cert_file
    return verify


def _plan(litellm: Any, verify: Any, cert: Any, http2: bool, pool: Optional[str] = None) -> _Plan:
    """The plan for one resolved setting of LiteLLM's (``verify``: bool, CA path or context)."""
    if verify is not False:
        reason = _cipher_settings(litellm)
        if reason is not None:
            return _Plan(fallback=reason)
    if isinstance(verify, ssl.SSLContext):
        return _Plan(fallback="ssl_context")
    if not isinstance(verify, (bool, str)):
        return _Plan(fallback="ssl_verify_type")
    # LiteLLM's force_ipv4 binds httpx's sockets to 0.0.0.0 (local_address): so do we.
    local_address = IPV4_LOCAL_ADDRESS if _litellm_value(litellm, "force_ipv4") is True else None
    return _Plan(verify=verify, cert=cert or None, http2=bool(http2), pool=pool, local_address=local_address)


def _from_ssl_config(handler_module: Any, litellm: Any, ssl_config: Any) -> Any:
    """What LiteLLM's ``get_ssl_configuration`` made, as our ``verify``: False, a CA bundle, or
    True (certifi's Mozilla roots, which the transports bundle too). One of LiteLLM's own cached
    contexts is recognised by identity; a context of anyone else's is kept as is (handed over)."""
    if not isinstance(ssl_config, ssl.SSLContext):
        return _resolve_verify(litellm, ssl_config)
    cache = getattr(handler_module, "_ssl_context_cache", None) or {}
    for key, context in list(cache.items()):
        if context is ssl_config:
            if not isinstance(key, tuple) or len(key) < 3 or key[1] or key[2]:
                return ssl_config  # LiteLLM's ciphers (SSL_SECURITY_LEVEL) or curve: handed over
            cafile = key[0]
            try:
                import certifi  # already imported by LiteLLM's handler module

                default_ca = certifi.where()
            except Exception:  # pragma: no cover - LiteLLM depends on certifi
                default_ca = None
            if cafile is None or cafile == default_ca:
                return True
            return cafile
    return ssl_config


def _settings_key(litellm: Any) -> tuple:
    """Everything the openai clients' plan depends on, read raw (cheap: no file system)."""
    env = os.environ.get
    get = litellm.__dict__.get
    return (env("SSL_VERIFY"), get("ssl_verify", True), env("SSL_CERT_FILE"), env("SSL_CERTIFICATE"),
            get("ssl_certificate"), env("SSL_SECURITY_LEVEL"), get("ssl_security_level"), env("SSL_ECDH_CURVE"),
            get("ssl_ecdh_curve"), get("http2"), env("LITELLM_HTTP2"), get("force_ipv4"))


def _pool_for_limits(handler_module: Any, limits: Any) -> Optional[str]:
    """The pool for an ``httpx.Limits`` LiteLLM passes: the default pool for LiteLLM's own
    defaults (httpx's, or the ``AIOHTTP_*`` equivalent, already applied to the default pool from
    the same variables); a pool of its own, with those limits, for any other."""
    if not isinstance(limits, httpx.Limits):
        return None
    defaults = [httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)]
    try:
        from httpx._config import DEFAULT_LIMITS  # no import: httpx is loaded

        defaults.append(DEFAULT_LIMITS)
    except ImportError:  # pragma: no cover
        pass
    aiohttp_equivalent = getattr(handler_module, "_AIOHTTP_EQUIVALENT_LIMITS", None)
    if aiohttp_equivalent is not None:
        defaults.append(aiohttp_equivalent)
    if any(limits == d for d in defaults):
        return None
    return _state.limits_pool(limits)


def _pool_settings_from_litellm_env() -> dict:
    """The connection settings LiteLLM users already tune for aiohttp, mapped onto the pool
    (FAST_LITELLM_* variables, read by the pool itself, take precedence)."""
    settings: dict = {}

    def number(name: str, cast: Any) -> Any:
        try:
            return cast(os.environ[name])
        except (KeyError, ValueError):
            return None

    limit = number("AIOHTTP_CONNECTOR_LIMIT", int)
    if limit is not None and limit > 0 and "FAST_LITELLM_MAX_CONNECTIONS" not in os.environ:
        settings["max_connections"] = limit
    per_host = number("AIOHTTP_CONNECTOR_LIMIT_PER_HOST", int)
    if per_host is not None and per_host > 0 and "FAST_LITELLM_MAX_CONNECTIONS_PER_ENDPOINT" not in os.environ:
        settings["max_connections_per_endpoint"] = per_host
    keepalive = number("AIOHTTP_KEEPALIVE_TIMEOUT", float)
    if keepalive is not None and keepalive > 0 and "FAST_LITELLM_IDLE_TIMEOUT" not in os.environ:
        settings["idle_timeout"] = keepalive
    # Process-wide, like the lookups themselves (the engine's default is LiteLLM's, 300 s).
    dns_ttl = number("AIOHTTP_TTL_DNS_CACHE", float)
    if dns_ttl is not None and dns_ttl >= 0:
        settings["dns_cache_ttl"] = dns_ttl
    return settings


def _tls_settings(litellm: Any, ssl_verify: Any = None) -> tuple[Any, Any]:
    """(verify, cert) for our transports from LiteLLM's global TLS settings, as they are now
    (an ``ssl.SSLContext`` in ``litellm.ssl_verify`` is shown as True: requests made with it
    are handed to LiteLLM's own transport)."""
    verify = _resolve_verify(litellm, ssl_verify)
    if not isinstance(verify, (bool, str)):
        verify = True
    return verify, _client_cert(litellm)


# --- state ---------------------------------------------------------------------------------------


class _Integration:
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
        self.plans: dict[tuple, _Plan] = {}  # _settings_key -> plan, for the openai clients
        self.pool_settings: dict = {}
        self.pool_settings_before: dict = {}
        self.dns_ttl_before: Optional[float] = None
        self.prewarmed: dict[str, int] = {}  # origin -> connections FAST_LITELLM_PREWARM got ready
        self.fallback_transports: dict[str, int] = {}
        self.fallback_requests: dict[str, int] = {}
        self.counter_lock = _locks.lock()

    def transport(self, kind: str, plan: _Plan) -> Any:
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


_state = _Integration()


# --- the shared openai clients: LiteLLM's settings read per request --------------------------------


class _Fallbacks:
    """httpx's own transports, as the openai clients LiteLLM makes without a shared client would
    use, for requests whose settings our transports cannot honour; made per settings (and per
    event loop for async: httpx's async pool is bound to the loop it was first used in)."""

    def __init__(self) -> None:
        self.sync: dict[tuple, httpx.Client] = {}
        self.by_loop: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
        self.lock = _locks.lock()

    @staticmethod
    def _options(litellm: Any) -> dict:
        verify: Any = _resolve_verify(litellm, None)
        if isinstance(verify, str) or verify is True:
            handler_module = sys.modules.get(HANDLER_MODULE)
            make = getattr(handler_module, "get_ssl_configuration", None)
            if make is not None:  # LiteLLM's own context: ciphers, curve, CA as it makes them
                verify = make(None, http2=_http2_enabled(litellm))
        cert = _client_cert(litellm)
        options: dict = {"verify": verify, "cert": cert, "http2": _http2_enabled(litellm), "trust_env": True}
        if _litellm_value(litellm, "force_ipv4") is True:
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


_fallbacks = _Fallbacks()


def _openai_plan(litellm: Any, key: tuple) -> _Plan:
    plan = _state.plans.get(key)
    if plan is None:
        plan = _plan(litellm, _resolve_verify(litellm, None), _client_cert(litellm), _http2_enabled(litellm))
        _state.plans[key] = plan
    return plan


class _LiteLLMSyncTransport(httpx.BaseTransport):
    """The transport of ``litellm.client_session``: LiteLLM's settings as they are when the
    request is sent pick our transport for them, or LiteLLM's way (counted)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        litellm = sys.modules["litellm"]
        key = _settings_key(litellm)
        plan = _openai_plan(litellm, key)
        if plan.fallback is None:
            return _state.transport("sync", plan).handle_request(request)
        _state.count_fallback(_state.fallback_requests, plan.fallback)
        return _fallbacks.sync_transport(key, litellm, request.url).handle_request(request)


class _LiteLLMAsyncTransport(httpx.AsyncBaseTransport):
    """The transport of ``litellm.aclient_session`` (see :class:`_LiteLLMSyncTransport`)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        litellm = sys.modules["litellm"]
        key = _settings_key(litellm)
        plan = _openai_plan(litellm, key)
        if plan.fallback is None:
            return await _state.transport("async", plan).handle_async_request(request)
        _state.count_fallback(_state.fallback_requests, plan.fallback)
        return await _fallbacks.async_transport(key, litellm, request.url).handle_async_request(request)


# --- the hooks -----------------------------------------------------------------------------------


def _replace(owner: Any, owner_name: str, name: str, value: Any) -> None:
    _state.originals.setdefault(f"{owner_name}.{name}", owner.__dict__.get(name, _MISSING))
    setattr(owner, name, value)


def _hook_point_present(owner: Any, owner_name: str, name: str, kind: str) -> bool:
    """Whether LiteLLM's handler class ``owner`` defines the transport factory ``name``; when it
    does not, says so (a warning, and the hook's entry in status())."""
    if owner is not None and name in getattr(owner, "__dict__", {}):
        return True
    _state.warn(f"this LiteLLM version has no {owner_name}.{name}: LiteLLM's {kind} handlers keep their own "
                "transport")
    _state.hooks[f"{owner_name}.{name}"] = "missing in this LiteLLM"
    return False


def _patch_handler_module(module: Any) -> None:
    """Replaces the transport factories of LiteLLM's async handler (both of its names) and of
    its sync handler."""
    handler = getattr(module, "AsyncHTTPHandler", None)
    if _hook_point_present(handler, "AsyncHTTPHandler", "create_async_transport", "async"):
        original_async = handler.__dict__["create_async_transport"]

        def create_async_transport(ssl_context: Any = None, ssl_verify: Any = None, shared_session: Any = None,
                                   http2: bool = False, cert: Any = None, limits: Any = None, **more: Any) -> Any:
            litellm = sys.modules.get("litellm")
            if ssl_context is not None:
                verify = _from_ssl_config(module, litellm, ssl_context)
            elif ssl_verify is False:
                verify = False
            else:
                verify = _resolve_verify(litellm, None)
            if cert is None:
                cert = _client_cert(litellm)
            plan = _plan(litellm, verify, cert, http2 or _http2_enabled(litellm), _pool_for_limits(module, limits))
            if plan.fallback is None:
                return _state.transport("async", plan)
            _state.count_fallback(_state.fallback_transports, plan.fallback)
            arguments = dict(ssl_context=ssl_context, ssl_verify=ssl_verify, shared_session=shared_session,
                             http2=http2, cert=cert, **more)
            if limits is not None:
                arguments["limits"] = limits
            return _call(original_async, **arguments)

        for name in ("create_async_transport", "_create_async_transport"):
            if name in handler.__dict__:
                _replace(handler, "AsyncHTTPHandler", name, staticmethod(create_async_transport))
        _state.hooks["AsyncHTTPHandler.create_async_transport"] = "fast_litellm"

    sync_handler = getattr(module, "HTTPHandler", None)
    if not _hook_point_present(sync_handler, "HTTPHandler", "_create_sync_transport", "sync"):
        return
    original_sync = sync_handler.__dict__["_create_sync_transport"]

    def _create_sync_transport(verify: Any = True, cert: Any = None, http2: bool = False, **more: Any) -> Any:
        litellm = sys.modules.get("litellm")
        plan = _plan(litellm, _from_ssl_config(module, litellm, verify), cert or _client_cert(litellm),
                     http2 or _http2_enabled(litellm))
        if plan.fallback is None:
            return _state.transport("sync", plan)
        _state.count_fallback(_state.fallback_transports, plan.fallback)
        return _call(original_sync, verify=verify, cert=cert, http2=http2, **more)

    _replace(sync_handler, "HTTPHandler", "_create_sync_transport", staticmethod(_create_sync_transport))
    _state.hooks["HTTPHandler._create_sync_transport"] = "fast_litellm"


def _call(original: Any, **arguments: Any) -> Any:
    function = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
    return function(**arguments)


def _patch_litellm_module(litellm: Any, clients: tuple) -> None:
    """The openai SDK's shared clients; LiteLLM's module-level clients are dropped (LiteLLM 1.110
    makes them again on first use, then on the hooks) and put back by uninstall()."""
    for name, value in zip(("client_session", "aclient_session"), clients):
        if name not in litellm.__dict__:
            _state.warn(
                f"this LiteLLM version has no litellm.{name}: its openai clients keep their own "
                "transport"
            )
            _state.hooks[f"litellm.{name}"] = "missing in this LiteLLM"
            continue
        _replace(litellm, "litellm", name, value)
        _state.hooks[f"litellm.{name}"] = "fast_litellm"
    for name in _MODULE_LEVEL_CLIENTS:
        _state.originals.setdefault(f"litellm.{name}", litellm.__dict__.get(name, _MISSING))
        litellm.__dict__.pop(name, None)
    _patch_openai_client_classes(sys.modules.get(OPENAI_CLIENTS_MODULE))
    _flush_client_cache(litellm)


def _patch_openai_client_classes(module: Any) -> None:
    """LiteLLM's ``OpenAIHTTPClient`` / ``OpenAIAsyncHTTPClient`` (a new client per call of
    moderation, files, batches, assistants, fine-tuning...) get the shared clients' transport."""
    for name, transport in (("OpenAIHTTPClient", _LITELLM_SYNC), ("OpenAIAsyncHTTPClient", _LITELLM_ASYNC)):
        cls = getattr(module, name, None)
        if not isinstance(cls, type) or len(cls.__bases__) != 1:
            _state.warn(f"this LiteLLM version has no {name}: the openai clients LiteLLM builds itself "
                        "keep their own transport")
            _state.hooks[name] = "missing in this LiteLLM"
            continue
        if not any(default.cls is cls for default in _state.client_defaults):  # once, whoever calls again
            _state.client_defaults.append(DefaultTransport(cls, transport))
        _state.hooks[name] = "fast_litellm"


def _flush_client_cache(litellm: Any) -> None:
    """Clients LiteLLM cached before the hooks changed: dropped, to be rebuilt on demand."""
    cache = litellm.__dict__.get("in_memory_llm_clients_cache")
    if cache is not None and hasattr(cache, "flush_cache"):
        cache.flush_cache()


# The transports of every openai client LiteLLM makes (they keep no state of their own).
_LITELLM_SYNC = _LiteLLMSyncTransport()
_LITELLM_ASYNC = _LiteLLMAsyncTransport()


def _shared_clients() -> tuple:
    return (_SharedClient(transport=_LITELLM_SYNC, timeout=None, follow_redirects=True),
            _SharedAsyncClient(transport=_LITELLM_ASYNC, timeout=None, follow_redirects=True))


def _apply_pool_settings() -> None:
    _state.pool_settings = _pool_settings_from_litellm_env()
    pool_settings = dict(_state.pool_settings)
    dns_ttl = pool_settings.pop("dns_cache_ttl", None)
    if dns_ttl is not None:
        _state.dns_ttl_before = _core.get_dns_cache_stats()["ttl"]
        _core.configure_dns_cache(dns_ttl)
    if pool_settings:
        pool = _core.SimpleConnectionPool()
        before = pool.settings
        _state.pool_settings_before = {k: before[k] for k in pool_settings}
        pool.configure(**pool_settings)


def _restore_pool_settings() -> None:
    if _state.pool_settings_before:
        _core.SimpleConnectionPool().configure(**_state.pool_settings_before)
    _state.pool_settings_before = {}
    if "dns_cache_ttl" in _state.pool_settings:
        _core.configure_dns_cache(_state.dns_ttl_before)


def _litellm_loaded() -> Any:
    """The litellm module once its import has finished, else None."""
    litellm = sys.modules.get("litellm")
    if litellm is None or "completion" not in litellm.__dict__:
        return None
    return litellm


def _litellm_version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("litellm")
    except Exception:
        return None


def _version_tuple(text: str) -> tuple:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _check_litellm_version() -> None:
    """One warning for a LiteLLM outside the tested range (read from its metadata: no import)."""
    if _state.warned_version:
        return
    found = _litellm_version()
    if found is None:
        return
    low, high = TESTED_LITELLM_RANGE
    if not _version_tuple(low) <= _version_tuple(found) <= _version_tuple(high):
        _state.warned_version = True
        tested = low if low == high else f"{low} to {high}"
        _state.warn(f"LiteLLM {found} is outside the tested range ({tested}): check status() and the "
                    "request counters once")


def _patch_as_it_loads(finder: AfterImport, fullname: str, module: Any) -> None:
    """Patches LiteLLM as it loads: the handler module right after its own code runs (before
    LiteLLM builds handlers with it), the package once its ``__init__`` has run."""
    clients = _shared_clients() if fullname != HANDLER_MODULE else ()
    # No import below, while holding the lock (this runs inside the import machinery).
    with _state.lock:
        if not _state.installed:
            return
        if fullname == HANDLER_MODULE:
            _patch_handler_module(module)
        else:
            _patch_litellm_module(module, clients)
        finder.names.discard(fullname)
        if not finder.names:
            _stop_waiting(finder)


def _stop_waiting(finder: AfterImport) -> None:
    finder.remove()
    _state.finder = None


def install() -> bool:
    """Routes LiteLLM's HTTP traffic through fast_litellm. Safe to call again. Returns False
    when ``FAST_LITELLM_DISABLE`` is set."""
    if env_flag("FAST_LITELLM_DISABLE"):
        return False
    _check_litellm_version()
    clients = _shared_clients()  # made before taking the lock
    with _state.lock:
        if _state.installed:
            return True
        _state.installed = True
        _apply_pool_settings()
        waiting_for = set()
        handler_module = sys.modules.get(HANDLER_MODULE)
        if handler_module is not None and "AsyncHTTPHandler" in handler_module.__dict__:
            _patch_handler_module(handler_module)
        else:
            waiting_for.add(HANDLER_MODULE)
        litellm = _litellm_loaded()
        if litellm is not None:
            _patch_litellm_module(litellm, clients)
        else:
            waiting_for.add("litellm")
        if waiting_for:
            _state.finder = AfterImport(waiting_for, _patch_as_it_loads)
            sys.meta_path.insert(0, _state.finder)
    from fast_litellm import _metrics

    _metrics.install()
    return True


def uninstall() -> None:
    """Puts back what :func:`install` replaced: the hook points, LiteLLM's module-level clients
    (the very objects from before, or none if LiteLLM had not made them yet), the pool settings
    taken from ``AIOHTTP_*``; stops the metrics. LiteLLM's cache of SDK clients
    (``in_memory_llm_clients_cache``) is emptied, at install and here: the clients it held are
    made again by LiteLLM on next use, on whatever is installed then."""
    with _state.lock:
        if not _state.installed:
            return
        _state.installed = False
        if _state.finder is not None:
            _stop_waiting(_state.finder)
        handler_module = sys.modules.get(HANDLER_MODULE)
        litellm = sys.modules.get("litellm")
        owners = {
            "AsyncHTTPHandler": getattr(handler_module, "AsyncHTTPHandler", None),
            "HTTPHandler": getattr(handler_module, "HTTPHandler", None),
            "litellm": litellm,
        }
        for key, value in _state.originals.items():
            owner_name, attr = key.split(".", 1)
            owner = owners.get(owner_name)
            if owner is None:
                continue
            if value is _MISSING:
                if attr in owner.__dict__:
                    delattr(owner, attr)
            else:
                setattr(owner, attr, value)
        _state.originals.clear()
        for default in _state.client_defaults:
            default.remove()
        _state.client_defaults.clear()
        _state.hooks.clear()
        _state.plans.clear()
        _restore_pool_settings()
        if litellm is not None:
            _flush_client_cache(litellm)
    from fast_litellm import _metrics

    _metrics.uninstall()


def transports() -> list:
    """Every transport the hooks made, with its pool's name."""
    return [(t, _state.transport_pools.get(id(t), DEFAULT_POOL)) for t in list(_state.transports.values())]


def status() -> dict:
    """What is installed and whether traffic flows through it: the hook points, the LiteLLM
    version, the pool with its settings, and request counters; the openai SDK opt-in; and the
    LiteLLM routes that run in its native core under the current settings (not through us)."""
    counters: dict = {}
    for transport, _pool in transports():
        for key, value in transport.stats().items():
            counters[key] = counters.get(key, 0) + value
    from fast_litellm import _metrics
    from fast_litellm._native_routes import native_routes
    from fast_litellm._openai_sdk import openai_sdk_status

    return {
        "installed": _state.installed,
        "disabled_by_environment": bool(env_flag("FAST_LITELLM_DISABLE")),
        "waiting_for_litellm_import": _state.finder is not None,
        "litellm_version": _litellm_version(),
        "tested_litellm_versions": TESTED_LITELLM,
        "hooks": dict(_state.hooks),
        "warnings": list(_state.warnings),
        "pool_settings_from_litellm_environment": dict(_state.pool_settings),
        "requests": counters,
        "handed_to_litellm": {"transports": dict(_state.fallback_transports),
                              "requests": dict(_state.fallback_requests)},
        "pools": _state.pool_names(),
        "openai_sdk": openai_sdk_status(),
        "not_through_fast_litellm": native_routes(),
        "prewarmed": dict(_state.prewarmed),
        "metrics": _metrics.state(),
        "pool": _core.get_connection_pool_stats(),
    }
