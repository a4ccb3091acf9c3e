"""LiteLLM's routes that its own native core (``litellm.rust_bridge``, reqwest inside) runs outside
Python under the current settings: their requests cannot go through fast_litellm, and status()
says so rather than let them pass for ours.

Read from LiteLLM's routing table (``litellm.rust_bridge.catalog.RULES``, first matching rule
wins) and its switch (``LITELLM_RUST`` / ``litellm.rust_bridge.configuration.rust()``), only once
LiteLLM is loaded: nothing is imported here.
"""

from __future__ import annotations

import sys


__all__ = ["describe", "native_routes"]

_CATALOG = "litellm.rust_bridge.catalog"
_CONFIGURATION = "litellm.rust_bridge.configuration"


def native_routes() -> list[dict]:
    """One entry per rule of LiteLLM's table that sends a route to its native core now: the route,
    the providers it is limited to (None: every provider), and whether that is ``always``
    (LiteLLM has no Python path for it) or ``opted in`` (``LITELLM_RUST``; a request with a
    feature LiteLLM keeps in Python still runs there). Empty without LiteLLM, or with a LiteLLM
    that has no native core."""
    catalog, configuration = sys.modules.get(_CATALOG), sys.modules.get(_CONFIGURATION)
    if catalog is None or configuration is None:
        return []
    routes = []
    try:
        python = configuration.Decision.PYTHON
        required = configuration.Decision.RUST_REQUIRED
        for rule in catalog.RULES:
            if rule.features is not None or rule.targets is not None:
                continue  # the rules that keep some requests of a route in Python
            decided = configuration.decision(rule.rollout)
            if decided is python:
                continue
            routes.append({
                "route": rule.route.value,
                "providers": sorted(rule.providers) if rule.providers is not None else None,
                "native": "always" if decided is required else "opted in",
            })
    except (AttributeError, TypeError):  # a LiteLLM whose table has another shape: say nothing false
        return [{"route": "unknown", "providers": None, "native": "LiteLLM's routing table was not readable"}]
    return routes


def describe(route: dict) -> str:
    """One line for people: 'ocr (every provider): LiteLLM's native core (always), not through ...'."""
    providers = ", ".join(route["providers"]) if route["providers"] else "every provider"
    return f"{route['route']} ({providers}): LiteLLM's native core ({route['native']}), not through fast_litellm"
