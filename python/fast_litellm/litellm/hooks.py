"""The hooks into LiteLLM: install and uninstall them (LiteLLM's HTTP traffic through fast_litellm's
transports, reversibly), and status().

These hook points together carry every request LiteLLM 1.110 sends from Python (see
docs/litellm.md; its coverage table comes from tests/python/with_litellm/test_litellm_coverage.py):

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

Lock order: see state.py.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import httpx

from fast_litellm import _core
from fast_litellm._after_import import AfterImport
from fast_litellm._client_default import DefaultTransport
from fast_litellm.litellm.settings import (
    HANDLER_MODULE, OPENAI_CLIENTS_MODULE, TESTED_LITELLM, TESTED_LITELLM_RANGE, Plan, client_cert, env_flag,
    from_ssl_config, http2_enabled, litellm_loaded, plan_for, pool_settings_from_environment, resolve_verify, settings_key,
)
from fast_litellm.litellm.state import fallbacks, state, transports

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
    return state.limits_pool(limits)


def _openai_plan(litellm: Any, key: tuple) -> Plan:
    plan = state.plans.get(key)
    if plan is None:
        plan = plan_for(litellm, resolve_verify(litellm, None), client_cert(litellm), http2_enabled(litellm))
        state.plans[key] = plan
    return plan


class _LiteLLMSyncTransport(httpx.BaseTransport):
    """The transport of ``litellm.client_session``: LiteLLM's settings as they are when the
    request is sent pick our transport for them, or LiteLLM's way (counted)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        litellm = sys.modules["litellm"]
        key = settings_key(litellm)
        plan = _openai_plan(litellm, key)
        if plan.fallback is None:
            return state.transport("sync", plan).handle_request(request)
        state.count_fallback(state.fallback_requests, plan.fallback)
        return fallbacks.sync_transport(key, litellm, request.url).handle_request(request)


class _LiteLLMAsyncTransport(httpx.AsyncBaseTransport):
    """The transport of ``litellm.aclient_session`` (see :class:`_LiteLLMSyncTransport`)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        litellm = sys.modules["litellm"]
        key = settings_key(litellm)
        plan = _openai_plan(litellm, key)
        if plan.fallback is None:
            return await state.transport("async", plan).handle_async_request(request)
        state.count_fallback(state.fallback_requests, plan.fallback)
        return await fallbacks.async_transport(key, litellm, request.url).handle_async_request(request)


# --- the hooks -----------------------------------------------------------------------------------


def _replace(owner: Any, owner_name: str, name: str, value: Any) -> None:
    state.originals.setdefault(f"{owner_name}.{name}", owner.__dict__.get(name, _MISSING))
    setattr(owner, name, value)


def _hook_point_present(owner: Any, owner_name: str, name: str, kind: str) -> bool:
    """Whether LiteLLM's handler class ``owner`` defines the transport factory ``name``; when it
    does not, says so (a warning, and the hook's entry in status())."""
    if owner is not None and name in getattr(owner, "__dict__", {}):
        return True
    state.warn(f"this LiteLLM version has no {owner_name}.{name}: LiteLLM's {kind} handlers keep their own "
                "transport")
    state.hooks[f"{owner_name}.{name}"] = "missing in this LiteLLM"
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
                verify = from_ssl_config(module, litellm, ssl_context)
            elif ssl_verify is False:
                verify = False
            else:
                verify = resolve_verify(litellm, None)
            if cert is None:
                cert = client_cert(litellm)
            plan = plan_for(litellm, verify, cert, http2 or http2_enabled(litellm), _pool_for_limits(module, limits))
            if plan.fallback is None:
                return state.transport("async", plan)
            state.count_fallback(state.fallback_transports, plan.fallback)
            arguments = dict(ssl_context=ssl_context, ssl_verify=ssl_verify, shared_session=shared_session,
                             http2=http2, cert=cert, **more)
            if limits is not None:
                arguments["limits"] = limits
            return _call(original_async, **arguments)

        for name in ("create_async_transport", "_create_async_transport"):
            if name in handler.__dict__:
                _replace(handler, "AsyncHTTPHandler", name, staticmethod(create_async_transport))
        state.hooks["AsyncHTTPHandler.create_async_transport"] = "fast_litellm"

    sync_handler = getattr(module, "HTTPHandler", None)
    if not _hook_point_present(sync_handler, "HTTPHandler", "_create_sync_transport", "sync"):
        return
    original_sync = sync_handler.__dict__["_create_sync_transport"]

    def _create_sync_transport(verify: Any = True, cert: Any = None, http2: bool = False, **more: Any) -> Any:
        litellm = sys.modules.get("litellm")
        plan = plan_for(litellm, from_ssl_config(module, litellm, verify), cert or client_cert(litellm),
                     http2 or http2_enabled(litellm))
        if plan.fallback is None:
            return state.transport("sync", plan)
        state.count_fallback(state.fallback_transports, plan.fallback)
        return _call(original_sync, verify=verify, cert=cert, http2=http2, **more)

    _replace(sync_handler, "HTTPHandler", "_create_sync_transport", staticmethod(_create_sync_transport))
    state.hooks["HTTPHandler._create_sync_transport"] = "fast_litellm"


def _call(original: Any, **arguments: Any) -> Any:
    function = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
    return function(**arguments)


def _patch_litellm_module(litellm: Any, clients: tuple) -> None:
    """The openai SDK's shared clients; LiteLLM's module-level clients are dropped (LiteLLM 1.110
    makes them again on first use, then on the hooks) and put back by uninstall()."""
    for name, value in zip(("client_session", "aclient_session"), clients):
        if name not in litellm.__dict__:
            state.warn(
                f"this LiteLLM version has no litellm.{name}: its openai clients keep their own "
                "transport"
            )
            state.hooks[f"litellm.{name}"] = "missing in this LiteLLM"
            continue
        _replace(litellm, "litellm", name, value)
        state.hooks[f"litellm.{name}"] = "fast_litellm"
    for name in _MODULE_LEVEL_CLIENTS:
        state.originals.setdefault(f"litellm.{name}", litellm.__dict__.get(name, _MISSING))
        litellm.__dict__.pop(name, None)
    _patch_openai_client_classes(sys.modules.get(OPENAI_CLIENTS_MODULE))
    _flush_client_cache(litellm)


def _patch_openai_client_classes(module: Any) -> None:
    """LiteLLM's ``OpenAIHTTPClient`` / ``OpenAIAsyncHTTPClient`` (a new client per call of
    moderation, files, batches, assistants, fine-tuning...) get the shared clients' transport."""
    for name, transport in (("OpenAIHTTPClient", _LITELLM_SYNC), ("OpenAIAsyncHTTPClient", _LITELLM_ASYNC)):
        cls = getattr(module, name, None)
        if not isinstance(cls, type) or len(cls.__bases__) != 1:
            state.warn(f"this LiteLLM version has no {name}: the openai clients LiteLLM builds itself "
                        "keep their own transport")
            state.hooks[name] = "missing in this LiteLLM"
            continue
        if not any(default.cls is cls for default in state.client_defaults):  # once, whoever calls again
            state.client_defaults.append(DefaultTransport(cls, transport))
        state.hooks[name] = "fast_litellm"


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
    state.pool_settings = pool_settings_from_environment()
    pool_settings = dict(state.pool_settings)
    dns_ttl = pool_settings.pop("dns_cache_ttl", None)
    if dns_ttl is not None:
        state.dns_ttl_before = _core.get_dns_cache_stats()["ttl"]
        _core.configure_dns_cache(dns_ttl)
    if pool_settings:
        pool = _core.SimpleConnectionPool()
        before = pool.settings
        state.pool_settings_before = {k: before[k] for k in pool_settings}
        pool.configure(**pool_settings)


def _restore_pool_settings() -> None:
    if state.pool_settings_before:
        _core.SimpleConnectionPool().configure(**state.pool_settings_before)
    state.pool_settings_before = {}
    if "dns_cache_ttl" in state.pool_settings:
        _core.configure_dns_cache(state.dns_ttl_before)


def litellm_version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("litellm")
    except Exception:
        return None


def version_tuple(text: str) -> tuple:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_litellm_version() -> None:
    """One warning for a LiteLLM outside the tested range (read from its metadata: no import)."""
    if state.warned_version:
        return
    found = litellm_version()
    if found is None:
        return
    low, high = TESTED_LITELLM_RANGE
    if not version_tuple(low) <= version_tuple(found) <= version_tuple(high):
        state.warned_version = True
        tested = low if low == high else f"{low} to {high}"
        state.warn(f"LiteLLM {found} is outside the tested range ({tested}): check status() and the "
                    "request counters once")


def _patch_as_it_loads(finder: AfterImport, fullname: str, module: Any) -> None:
    """Patches LiteLLM as it loads: the handler module right after its own code runs (before
    LiteLLM builds handlers with it), the package once its ``__init__`` has run."""
    clients = _shared_clients() if fullname != HANDLER_MODULE else ()
    # No import below, while holding the lock (this runs inside the import machinery).
    with state.lock:
        if not state.installed:
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
    state.finder = None


def install() -> bool:
    """Routes LiteLLM's HTTP traffic through fast_litellm. Safe to call again. Returns False
    when ``FAST_LITELLM_DISABLE`` is set."""
    if env_flag("FAST_LITELLM_DISABLE"):
        return False
    check_litellm_version()
    clients = _shared_clients()  # made before taking the lock
    with state.lock:
        if state.installed:
            return True
        state.installed = True
        _apply_pool_settings()
        waiting_for = set()
        handler_module = sys.modules.get(HANDLER_MODULE)
        if handler_module is not None and "AsyncHTTPHandler" in handler_module.__dict__:
            _patch_handler_module(handler_module)
        else:
            waiting_for.add(HANDLER_MODULE)
        litellm = litellm_loaded()
        if litellm is not None:
            _patch_litellm_module(litellm, clients)
        else:
            waiting_for.add("litellm")
        if waiting_for:
            state.finder = AfterImport(waiting_for, _patch_as_it_loads)
            sys.meta_path.insert(0, state.finder)
    from fast_litellm import _metrics

    _metrics.install()
    return True


def uninstall() -> None:
    """Puts back what :func:`install` replaced: the hook points, LiteLLM's module-level clients
    (the very objects from before, or none if LiteLLM had not made them yet), the pool settings
    taken from ``AIOHTTP_*``; stops the metrics. LiteLLM's cache of SDK clients
    (``in_memory_llm_clients_cache``) is emptied, at install and here: the clients it held are
    made again by LiteLLM on next use, on whatever is installed then."""
    with state.lock:
        if not state.installed:
            return
        state.installed = False
        if state.finder is not None:
            _stop_waiting(state.finder)
        handler_module = sys.modules.get(HANDLER_MODULE)
        litellm = sys.modules.get("litellm")
        owners = {
            "AsyncHTTPHandler": getattr(handler_module, "AsyncHTTPHandler", None),
            "HTTPHandler": getattr(handler_module, "HTTPHandler", None),
            "litellm": litellm,
        }
        for key, value in state.originals.items():
            owner_name, attr = key.split(".", 1)
            owner = owners.get(owner_name)
            if owner is None:
                continue
            if value is _MISSING:
                if attr in owner.__dict__:
                    delattr(owner, attr)
            else:
                setattr(owner, attr, value)
        state.originals.clear()
        for default in state.client_defaults:
            default.remove()
        state.client_defaults.clear()
        state.hooks.clear()
        state.plans.clear()
        _restore_pool_settings()
        if litellm is not None:
            _flush_client_cache(litellm)
    from fast_litellm import _metrics

    _metrics.uninstall()


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
        "installed": state.installed,
        "disabled_by_environment": bool(env_flag("FAST_LITELLM_DISABLE")),
        "waiting_for_litellm_import": state.finder is not None,
        "litellm_version": litellm_version(),
        "tested_litellm_versions": TESTED_LITELLM,
        "hooks": dict(state.hooks),
        "warnings": list(state.warnings),
        "pool_settings_from_litellm_environment": dict(state.pool_settings),
        "requests": counters,
        "handed_to_litellm": {"transports": dict(state.fallback_transports),
                              "requests": dict(state.fallback_requests)},
        "pools": state.pool_names(),
        "openai_sdk": openai_sdk_status(),
        "not_through_fast_litellm": native_routes(),
        "prewarmed": dict(state.prewarmed),
        "metrics": _metrics.state(),
        "pool": _core.get_connection_pool_stats(),
    }
