"""LiteLLM's settings as fast_litellm reads them (TLS verification, CA bundle, client
certificate, HTTP/2, IPv4, the ``AIOHTTP_*`` connection settings), and the plan they make for a
request: our transports with these arguments, or LiteLLM's own transport (and why)."""

from __future__ import annotations

import os
import ssl
import sys
from typing import Any, NamedTuple, Optional


HANDLER_MODULE = "litellm.llms.custom_httpx.http_handler"
# Where LiteLLM's own httpx clients for the openai SDK are defined (loaded by `import litellm`).
OPENAI_CLIENTS_MODULE = "litellm.llms.openai.common_utils"
# The LiteLLM releases the tests ran against (Makefile: LITELLM_VERSION), lowest and highest.
TESTED_LITELLM = "1.110.2"
TESTED_LITELLM_RANGE = ("1.110.2", "1.110.2")
IPV4_LOCAL_ADDRESS = "0.0.0.0"


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


class Plan(NamedTuple):
    """How requests made with some LiteLLM settings are sent: by our transports with these
    arguments, or (``fallback`` set: the reason) by LiteLLM's own transport."""

    verify: Any = True
    cert: Any = None
    http2: bool = False
    pool: Optional[str] = None
    local_address: Optional[str] = None
    fallback: Optional[str] = None


def litellm_value(litellm: Any, name: str, default: Any = None) -> Any:
    # Through __dict__: a missing name must not reach litellm.__getattr__ (which imports).
    return litellm.__dict__.get(name, default) if litellm is not None else default


def http2_enabled(litellm: Any) -> bool:
    """LiteLLM's ``http2_enabled()``: ``litellm.http2 = True`` or ``LITELLM_HTTP2``."""
    if litellm_value(litellm, "http2") is True:
        return True
    return _str_to_bool(os.environ.get("LITELLM_HTTP2", "False")) is True


def client_cert(litellm: Any) -> Any:
    return os.environ.get("SSL_CERTIFICATE") or litellm_value(litellm, "ssl_certificate")


def cipher_settings(litellm: Any) -> Optional[str]:
    """The reason LiteLLM's SSL context cannot be reproduced, if its cipher or curve settings
    are set (``SSL_SECURITY_LEVEL`` / ``SSL_ECDH_CURVE``, or litellm's attributes)."""
    if os.environ.get("SSL_SECURITY_LEVEL", litellm_value(litellm, "ssl_security_level")):
        return "ssl_security_level"
    if os.environ.get("SSL_ECDH_CURVE", litellm_value(litellm, "ssl_ecdh_curve")):
        return "ssl_ecdh_curve"
    return None


def resolve_verify(litellm: Any, ssl_verify: Any) -> Any:
    """LiteLLM's ``get_ssl_verify``: the argument, else ``SSL_VERIFY``, else ``litellm.ssl_verify``;
    "false"-like strings are False, an existing path is a CA bundle, and ``SSL_CERT_FILE`` (an
    existing file) is the CA bundle when verification is simply on."""
    verify = ssl_verify
    if verify is None:
        verify = os.environ.get("SSL_VERIFY", litellm_value(litellm, "ssl_verify", True))
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


def plan_for(litellm: Any, verify: Any, cert: Any, http2: bool, pool: Optional[str] = None) -> Plan:
    """The plan for one resolved setting of LiteLLM's (``verify``: bool, CA path or context)."""
    if verify is not False:
        reason = cipher_settings(litellm)
        if reason is not None:
            return Plan(fallback=reason)
    if isinstance(verify, ssl.SSLContext):
        return Plan(fallback="ssl_context")
    if not isinstance(verify, (bool, str)):
        return Plan(fallback="ssl_verify_type")
    # LiteLLM's force_ipv4 binds httpx's sockets to 0.0.0.0 (local_address): so do we.
    local_address = IPV4_LOCAL_ADDRESS if litellm_value(litellm, "force_ipv4") is True else None
    return Plan(verify=verify, cert=cert or None, http2=bool(http2), pool=pool, local_address=local_address)


def from_ssl_config(handler_module: Any, litellm: Any, ssl_config: Any) -> Any:
    """What LiteLLM's ``get_ssl_configuration`` made, as our ``verify``: False, a CA bundle, or
    True (certifi's Mozilla roots, which the transports bundle too). One of LiteLLM's own cached
    contexts is recognised by identity; a context of anyone else's is kept as is (handed over)."""
    if not isinstance(ssl_config, ssl.SSLContext):
        return resolve_verify(litellm, ssl_config)
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


def settings_key(litellm: Any) -> tuple:
    """Everything the openai clients' plan depends on, read raw (cheap: no file system)."""
    env = os.environ.get
    get = litellm.__dict__.get
    return (env("SSL_VERIFY"), get("ssl_verify", True), env("SSL_CERT_FILE"), env("SSL_CERTIFICATE"),
            get("ssl_certificate"), env("SSL_SECURITY_LEVEL"), get("ssl_security_level"), env("SSL_ECDH_CURVE"),
            get("ssl_ecdh_curve"), get("http2"), env("LITELLM_HTTP2"), get("force_ipv4"))


def pool_settings_from_environment() -> dict:
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


def tls_settings(litellm: Any, ssl_verify: Any = None) -> tuple[Any, Any]:
    """(verify, cert) for our transports from LiteLLM's global TLS settings, as they are now
    (an ``ssl.SSLContext`` in ``litellm.ssl_verify`` is shown as True: requests made with it
    are handed to LiteLLM's own transport)."""
    verify = resolve_verify(litellm, ssl_verify)
    if not isinstance(verify, (bool, str)):
        verify = True
    return verify, client_cert(litellm)


def litellm_loaded() -> Any:
    """The litellm module once its import has finished, else None."""
    litellm = sys.modules.get("litellm")
    if litellm is None or "completion" not in litellm.__dict__:
        return None
    return litellm
