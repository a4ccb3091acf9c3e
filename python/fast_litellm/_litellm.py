"""Routes LiteLLM's HTTP traffic through fast_litellm's transports, reversibly.

Three hook points together carry every request LiteLLM 1.110 sends (see docs/litellm.md):

* ``litellm.client_session`` / ``litellm.aclient_session``: the httpx clients the openai SDK
  uses for OpenAI-compatible models;
* ``litellm.sync_transport``: the transport LiteLLM's ``HTTPHandler`` uses (other providers);
* ``AsyncHTTPHandler.create_async_transport``: the transport factory of its async handler.

Imported before ``litellm``, the hooks go in while LiteLLM loads (a ``sys.meta_path`` finder),
so the handlers LiteLLM builds during its import use them too. Imported after, they go in at
once and the clients LiteLLM cached are dropped so that new ones are built on the hooks.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
import threading
from typing import Any, Optional

import httpx

from fast_litellm import _core
from fast_litellm._transport import AsyncHTTPTransport, HTTPTransport

logger = logging.getLogger("fast_litellm")

HANDLER_MODULE = "litellm.llms.custom_httpx.http_handler"
# The only LiteLLM release the tests ran against (Makefile: LITELLM_VERSION).
TESTED_LITELLM = "1.110.2"
_MISSING = object()


class _SharedClient(httpx.Client):
    """litellm.client_session: shared by every OpenAI SDK client LiteLLM makes, so a close()
    from one of them must not end it for the others."""

    def close(self) -> None:
        pass


class _SharedAsyncClient(httpx.AsyncClient):
    """litellm.aclient_session, for the same reason as :class:`_SharedClient`."""

    async def aclose(self) -> None:
        pass


def _env_flag(name: str) -> Optional[bool]:
    value = os.environ.get(name)
    if value is None:
        return None
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def _tls_settings(litellm: Any, ssl_verify: Any = None) -> tuple[Any, Any]:
    """(verify, cert) for our transports from LiteLLM's own TLS settings."""
    verify: Any = ssl_verify
    if verify is None:
        verify = os.environ.get("SSL_VERIFY", getattr(litellm, "ssl_verify", True))
    if isinstance(verify, str):
        lowered = verify.strip().lower()
        if lowered in ("false", "0", "no", "off"):
            verify = False
        elif lowered in ("true", "1", "yes", "on", ""):
            verify = True
    if verify is True and os.environ.get("SSL_CERT_FILE"):
        verify = os.environ["SSL_CERT_FILE"]
    if not isinstance(verify, (bool, str)):
        verify = True  # an ssl.SSLContext built by LiteLLM from the same settings
    cert = os.environ.get("SSL_CERTIFICATE") or getattr(litellm, "ssl_certificate", None)
    return verify, cert


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
    return settings


class _Integration:
    """What is installed, and what it replaced (to put back exactly)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.installed = False
        self.finder: Optional[_LiteLLMFinder] = None
        self.originals: dict[str, Any] = {}
        self.hooks: dict[str, str] = {}
        self.warnings: list[str] = []
        self.sync_transport: Optional[HTTPTransport] = None
        self.async_transports: dict[tuple, AsyncHTTPTransport] = {}
        self.pool_settings: dict = {}

    def async_transport(self, verify: Any, cert: Any) -> AsyncHTTPTransport:
        key = (verify, cert if not isinstance(cert, list) else tuple(cert))
        with self.lock:
            transport = self.async_transports.get(key)
            if transport is None:
                transport = AsyncHTTPTransport(verify=verify, cert=cert)
                self.async_transports[key] = transport
            return transport

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning("fast_litellm: %s", message)


_state = _Integration()


def _patch_handler_module(module: Any) -> None:
    """Replaces the async handler's transport factory (both of its names)."""
    handler = getattr(module, "AsyncHTTPHandler", None)
    if handler is None or not hasattr(handler, "create_async_transport"):
        _state.warn(
            "this LiteLLM version has no AsyncHTTPHandler.create_async_transport: LiteLLM's "
            "async handlers keep their own transport"
        )
        _state.hooks["AsyncHTTPHandler.create_async_transport"] = "missing in this LiteLLM"
        return
    import litellm

    def create_async_transport(ssl_context: Any = None, ssl_verify: Any = None, shared_session: Any = None,
                               http2: bool = False, cert: Any = None, limits: Any = None, **_: Any) -> Any:
        verify, default_cert = _tls_settings(litellm, ssl_verify)
        return _state.async_transport(verify, cert or default_cert)

    for name in ("create_async_transport", "_create_async_transport"):
        if name in handler.__dict__:
            _state.originals.setdefault(f"AsyncHTTPHandler.{name}", handler.__dict__[name])
            setattr(handler, name, staticmethod(create_async_transport))
    _state.hooks["AsyncHTTPHandler.create_async_transport"] = "fast_litellm"


def _patch_litellm_module(litellm: Any) -> None:
    """The openai SDK's clients and the sync handler's transport."""
    verify, cert = _tls_settings(litellm)
    _state.sync_transport = HTTPTransport(verify=verify, cert=cert)
    for name, value in (
        ("client_session", _SharedClient(transport=_state.sync_transport, timeout=None, follow_redirects=True)),
        ("aclient_session", _SharedAsyncClient(transport=_state.async_transport(verify, cert), timeout=None,
                                               follow_redirects=True)),
        ("sync_transport", _state.sync_transport),
    ):
        _state.originals.setdefault(f"litellm.{name}", litellm.__dict__.get(name, _MISSING))
        setattr(litellm, name, value)
        _state.hooks[f"litellm.{name}"] = "fast_litellm"


def _drop_cached_clients(litellm: Any) -> None:
    """Clients LiteLLM built before the hooks changed: dropped, to be rebuilt on demand."""
    cache = litellm.__dict__.get("in_memory_llm_clients_cache")
    if cache is not None and hasattr(cache, "flush_cache"):
        cache.flush_cache()
    for name in ("module_level_client", "module_level_aclient"):
        litellm.__dict__.pop(name, None)


def _apply_pool_settings() -> None:
    _state.pool_settings = _pool_settings_from_litellm_env()
    if _state.pool_settings:
        _core.SimpleConnectionPool().configure(**_state.pool_settings)


def _litellm_loaded() -> Any:
    """The litellm module once its import has finished, else None."""
    litellm = sys.modules.get("litellm")
    if litellm is None or "completion" not in litellm.__dict__:
        return None
    return litellm


class _LiteLLMFinder(importlib.abc.MetaPathFinder):
    """Patches LiteLLM as it loads: the handler module right after its own code runs (before
    LiteLLM builds handlers with it), the package once its ``__init__`` has run."""

    def __init__(self, waiting_for: set) -> None:
        self.waiting_for = waiting_for

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self.waiting_for:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        original_exec = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            with _state.lock:
                if not _state.installed:
                    return
                if fullname == HANDLER_MODULE:
                    _patch_handler_module(module)
                else:
                    _patch_litellm_module(module)
                    _drop_cached_clients(module)
                self.waiting_for.discard(fullname)
                if not self.waiting_for:
                    self.remove()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        _state.finder = None


def install() -> bool:
    """Routes LiteLLM's HTTP traffic through fast_litellm. Safe to call again. Returns False
    when ``FAST_LITELLM_DISABLE`` is set."""
    if _env_flag("FAST_LITELLM_DISABLE"):
        return False
    with _state.lock:
        if _state.installed:
            return True
        _state.installed = True
        _apply_pool_settings()
        waiting_for = set()
        handler_module = sys.modules.get(HANDLER_MODULE)
        if handler_module is not None:
            _patch_handler_module(handler_module)
        else:
            waiting_for.add(HANDLER_MODULE)
        litellm = _litellm_loaded()
        if litellm is not None:
            _patch_litellm_module(litellm)
            _drop_cached_clients(litellm)
        else:
            waiting_for.add("litellm")
        if waiting_for:
            _state.finder = _LiteLLMFinder(waiting_for)
            sys.meta_path.insert(0, _state.finder)
        return True


def uninstall() -> None:
    """Puts back exactly what :func:`install` replaced, and drops the clients LiteLLM built on
    fast_litellm's transports meanwhile."""
    with _state.lock:
        if not _state.installed:
            return
        _state.installed = False
        if _state.finder is not None:
            _state.finder.remove()
        handler_module = sys.modules.get(HANDLER_MODULE)
        litellm = sys.modules.get("litellm")
        for key, value in _state.originals.items():
            owner_name, attr = key.split(".", 1)
            if owner_name == "AsyncHTTPHandler" and handler_module is not None:
                setattr(handler_module.AsyncHTTPHandler, attr, value)
            elif owner_name == "litellm" and litellm is not None:
                if value is _MISSING:
                    litellm.__dict__.pop(attr, None)
                else:
                    setattr(litellm, attr, value)
        _state.originals.clear()
        _state.hooks.clear()
        if litellm is not None:
            _drop_cached_clients(litellm)


def status() -> dict:
    """What is installed and whether traffic flows through it: the hook points, the LiteLLM
    version, the pool with its settings, and request counters."""
    try:
        from importlib.metadata import version

        litellm_version: Optional[str] = version("litellm")
    except Exception:
        litellm_version = None
    transports = [t for t in [_state.sync_transport, *_state.async_transports.values()] if t is not None]
    counters: dict = {}
    for transport in transports:
        for key, value in transport.stats().items():
            counters[key] = counters.get(key, 0) + value
    return {
        "installed": _state.installed,
        "disabled_by_environment": bool(_env_flag("FAST_LITELLM_DISABLE")),
        "waiting_for_litellm_import": _state.finder is not None,
        "litellm_version": litellm_version,
        "tested_litellm_versions": TESTED_LITELLM,
        "hooks": dict(_state.hooks),
        "warnings": list(_state.warnings),
        "pool_settings_from_litellm_environment": dict(_state.pool_settings),
        "requests": counters,
        "pool": _core.get_connection_pool_stats(),
    }
