"""Prewarming: connections opened before they are needed.

``prewarm`` / ``aprewarm`` for an endpoint, with the TLS and HTTP settings LiteLLM's requests will
use, ``prewarm_deployments`` for a model list, and ``FAST_LITELLM_PREWARM`` at start-up.

On a real network a new connection costs a name lookup, a TCP and a TLS handshake: one to three
round trips before the first byte of a request. Opened ahead, a first burst of calls finds them
ready.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Optional, Union

import httpx

from fast_litellm._transport import origin as origin_of
from fast_litellm.litellm.settings import client_cert, http2_enabled, litellm_loaded, plan_for, resolve_verify
from fast_litellm.litellm.state import state

__all__ = ["aprewarm", "prewarm", "prewarm_deployments"]

logger = logging.getLogger("fast_litellm")

ENV = "FAST_LITELLM_PREWARM"


def _transport(kind: str) -> Any:
    """The transport LiteLLM's requests use under its settings as they are now (read from
    litellm if it is loaded, else from the environment it would read them from), so the
    connections opened are the ones its requests take: same pool, TLS settings and HTTP
    versions. None when those settings make LiteLLM send with its own transport."""
    litellm = litellm_loaded()
    plan = plan_for(litellm, resolve_verify(litellm, None), client_cert(litellm), http2_enabled(litellm))
    if plan.fallback is not None:
        logger.warning("fast_litellm: not prewarming: LiteLLM's setting %s makes it send with its own transport",
                       plan.fallback)
        return None
    return state.transport(kind, plan)


def prewarm(url: Union[str, httpx.URL], connections: int = 1, *, timeout: Optional[float] = 10.0) -> int:
    """Opens up to ``connections`` connections to ``url``'s origin in the pool LiteLLM's
    requests use (see ``HTTPTransport.prewarm``); returns how many are ready. Never raises for
    an endpoint that cannot be reached: it logs a warning and returns what it could open."""
    transport = _transport("sync")
    return 0 if transport is None else transport.prewarm(url, connections, timeout)


async def aprewarm(url: Union[str, httpx.URL], connections: int = 1, *, timeout: Optional[float] = 10.0) -> int:
    """The awaitable twin of :func:`prewarm`."""
    transport = _transport("async")
    return 0 if transport is None else await transport.aprewarm(url, connections, timeout)


def prewarm_deployments(model_list: Any, connections: int = 1, *, timeout: Optional[float] = 10.0) -> dict:
    """Prewarms the ``api_base`` of every deployment of a LiteLLM ``model_list`` (a Router's
    ``model_list``, or the proxy config's), each distinct origin once. Returns {origin: ready}.
    Deployments without an ``api_base`` (the provider's default) are left out."""
    warmed: dict = {}
    for url in _api_bases(model_list):
        origin = origin_of(httpx.URL(url))
        if origin not in warmed:
            warmed[origin] = prewarm(url, connections, timeout=timeout)
    return warmed


def _api_bases(model_list: Any) -> list:
    bases = []
    for deployment in model_list or []:
        params = deployment.get("litellm_params") if isinstance(deployment, dict) else None
        base = params.get("api_base") if isinstance(params, dict) else None
        if isinstance(base, str) and base.startswith("os.environ/"):  # LiteLLM's config syntax
            base = os.environ.get(base[len("os.environ/"):])
        if isinstance(base, str) and base.startswith(("http://", "https://")):
            bases.append(base)
    return bases


def parse(value: str) -> Union[int, list[tuple[str, int]]]:
    """``FAST_LITELLM_PREWARM``: comma-separated ``URL=N`` (``URL`` alone: 1 connection), or a
    bare count N: N connections to every deployment's ``api_base`` of the LiteLLM Proxy's
    config, once its router is loaded."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    targets = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        url, sep, count = item.rpartition("=")
        if not sep:
            url, count = item, "1"
        try:
            n = int(count)
            parsed = httpx.URL(url)
        except (ValueError, httpx.InvalidURL):
            raise ValueError(f"{ENV}: each item is an http(s) URL, optionally followed by =N") from None
        if parsed.scheme not in ("http", "https") or not parsed.host or n < 0:
            raise ValueError(f"{ENV}: each item is an http(s) URL, optionally followed by =N (N >= 0)")
        targets.append((url, n))
    return targets


def _in_background(name: str, work: Any) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except Exception as exc:  # a background warm-up never takes the process down
            logger.warning("fast_litellm: %s failed: %s", name, type(exc).__name__)

    thread = threading.Thread(target=run, name=f"fast_litellm {name}", daemon=True)
    thread.start()
    return thread


def _requested() -> Union[None, int, list[tuple[str, int]]]:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        logger.warning("fast_litellm: %s", exc)
        return None


def start_from_environment() -> Optional[threading.Thread]:
    """Warms the URLs ``FAST_LITELLM_PREWARM`` names, in a background thread: importing never
    waits for the network. A value that does not parse is a warning, not an import error. (A
    bare count waits for the proxy's router: see :func:`start_for_proxy`.)"""
    targets = _requested()
    if not isinstance(targets, list):
        return None

    def warm() -> None:
        for url, n in targets:
            state.prewarmed[origin_of(httpx.URL(url))] = prewarm(url, n)

    return _in_background("prewarm", warm)


def start_for_proxy(wait: float = 300.0) -> Optional[threading.Thread]:
    """In a LiteLLM Proxy worker (fast_litellm.proxy's import): with a bare count in
    ``FAST_LITELLM_PREWARM``, waits in the background for the proxy's router (loaded from its
    config after the callbacks) and warms every deployment's ``api_base``."""
    count = _requested()
    if not isinstance(count, int) or count == 0:
        return None

    def warm() -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            server = sys.modules.get("litellm.proxy.proxy_server")
            router = getattr(server, "llm_router", None)
            if router is not None:
                state.prewarmed.update(prewarm_deployments(router.model_list, count))
                return
            time.sleep(0.2)
        logger.warning("fast_litellm: %s=%d: no LiteLLM Proxy router appeared; nothing warmed", ENV, count)

    return _in_background("prewarm", warm)
