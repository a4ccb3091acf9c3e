"""Warm connections before they are needed: ``prewarm`` / ``aprewarm`` for an endpoint, with the
TLS and HTTP settings LiteLLM's requests will use, and ``FAST_LITELLM_PREWARM`` at start-up.

On a real network a new connection costs a name lookup, a TCP and a TLS handshake: one to three
round trips before the first byte of a request. Opened ahead, a first burst of calls finds them
ready.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Optional, Union

import httpx

from fast_litellm import _litellm

__all__ = ["aprewarm", "prewarm"]

logger = logging.getLogger("fast_litellm")

ENV = "FAST_LITELLM_PREWARM"


def _transport(kind: str) -> Any:
    """The transport LiteLLM's requests use under its settings as they are now (read from
    litellm if it is loaded, else from the environment it would read them from), so the
    connections opened are the ones its requests take: same pool, TLS settings and HTTP
    versions. None when those settings make LiteLLM send with its own transport."""
    litellm = _litellm._litellm_loaded()
    verify = _litellm._resolve_verify(litellm, None)
    plan = _litellm._plan(litellm, verify, _litellm._client_cert(litellm), _litellm._http2_enabled(litellm))
    if plan.fallback is not None:
        logger.warning("fast_litellm: not prewarming: LiteLLM's setting %s makes it send with its own transport",
                       plan.fallback)
        return None
    return _litellm._state.transport(kind, plan)


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


def parse(value: str) -> list[tuple[str, int]]:
    """``FAST_LITELLM_PREWARM``: comma-separated ``URL=N`` (``URL`` alone: 1 connection)."""
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


def start_from_environment() -> Optional[threading.Thread]:
    """Warms what ``FAST_LITELLM_PREWARM`` names, in a background thread: importing never waits
    for the network. A value that does not parse is a warning, not an import error."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    try:
        targets = parse(value)
    except ValueError as exc:
        logger.warning("fast_litellm: %s", exc)
        return None

    def warm() -> None:
        for url, n in targets:
            prewarm(url, n)

    thread = threading.Thread(target=warm, name="fast_litellm prewarm", daemon=True)
    thread.start()
    return thread
