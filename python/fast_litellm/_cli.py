"""The command line, ``python -m fast_litellm``: what is in effect, and one check of an endpoint.

    python -m fast_litellm status [--json]
        The hooks LiteLLM gets in this environment (LiteLLM is imported), its version against
        the tested one, the LiteLLM routes its native core runs (not through fast_litellm), the
        settings in effect and where each came from, the pool's statistics.
        Exit 0 when LiteLLM's traffic goes through fast_litellm, 1 when not.

    python -m fast_litellm check URL [--json] [--insecure] [--cacert PATH] [--timeout S] [--http2]
        Two GET requests to URL through fast_litellm's pool, one after the other: protocol, TLS
        verification and its CA, time to first byte, and whether each used a new or a reused
        connection. Exit 0 when responses came back (any status), 1 when a request failed.

Usage errors exit with 2. Nothing secret is printed: URLs are shown without userinfo, query or
fragment, proxies without userinfo, headers never.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional

import httpx

import fast_litellm
from fast_litellm import _core
from fast_litellm.litellm.settings import TESTED_LITELLM, tls_settings
from fast_litellm._native_routes import describe as describe_native_route

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# The pool's settings: the FAST_LITELLM_* variable read by the default pool, and the LiteLLM
# (aiohttp) variable mapped onto it when that one is unset.
POOL_SETTINGS = {
    "max_connections": ("FAST_LITELLM_MAX_CONNECTIONS", "AIOHTTP_CONNECTOR_LIMIT"),
    "max_connections_per_endpoint": ("FAST_LITELLM_MAX_CONNECTIONS_PER_ENDPOINT", "AIOHTTP_CONNECTOR_LIMIT_PER_HOST"),
    "idle_timeout": ("FAST_LITELLM_IDLE_TIMEOUT", "AIOHTTP_KEEPALIVE_TIMEOUT"),
    "max_lifetime": ("FAST_LITELLM_MAX_LIFETIME", None),
    "reaper_interval": ("FAST_LITELLM_REAPER_INTERVAL", None),
}
BUNDLED_ROOTS = "bundled Mozilla roots"


class UsageError(Exception):
    pass


# --- what is shown, free of secrets -------------------------------------------------------------


def shown_url(url: httpx.URL) -> str:
    """scheme://host[:port]/path: no userinfo, query or fragment."""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


def shown_proxy(proxy: Any) -> Optional[str]:
    if proxy is None:
        return None
    url = proxy.url if isinstance(proxy, httpx.Proxy) else httpx.URL(str(proxy))
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"


def env_proxies() -> dict:
    """The proxies httpx (and fast_litellm's transports, with trust_env) take from the
    environment: URL pattern -> proxy (None: NO_PROXY)."""
    return {pattern: shown_proxy(proxy) for pattern, proxy in httpx._utils.get_environment_proxies().items()}


def proxy_for(url: httpx.URL) -> Optional[str]:
    routes = sorted((httpx._utils.URLPattern(k), v) for k, v in httpx._utils.get_environment_proxies().items())
    for pattern, proxy in routes:
        if pattern.matches(url):
            return shown_proxy(proxy)
    return None


def tls_in_effect(verify: Any, cert: Any, verify_source: str, cert_source: str) -> dict:
    if verify is False:
        return {"verify": False, "ca": None, "source": verify_source, "client_certificate": cert,
                "client_certificate_source": cert_source}
    ca = BUNDLED_ROOTS if verify is True else verify
    return {"verify": True, "ca": ca, "source": verify_source, "client_certificate": cert,
            "client_certificate_source": cert_source}


def tls_from_environment(litellm: Any) -> dict:
    """TLS settings as fast_litellm's LiteLLM hooks read them, and where each came from."""
    verify, cert = tls_settings(litellm)
    if "SSL_VERIFY" in os.environ:
        source = "SSL_VERIFY"
    elif getattr(litellm, "ssl_verify", True) is not True:
        source = "litellm.ssl_verify"
    else:
        source = "default"
    if isinstance(verify, str) and verify == os.environ.get("SSL_CERT_FILE"):
        source = "SSL_CERT_FILE" if source == "default" else f"{source}, SSL_CERT_FILE"
    if os.environ.get("SSL_CERTIFICATE"):
        cert_source = "SSL_CERTIFICATE"
    elif cert:
        cert_source = "litellm.ssl_certificate"
    else:
        cert_source = "default"
    return tls_in_effect(verify, cert, source, cert_source)


def io_threads() -> dict:
    value = os.environ.get("FAST_LITELLM_IO_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return {"value": int(value), "source": "FAST_LITELLM_IO_THREADS"}
    return {"value": 1, "source": "default"}


# --- status ------------------------------------------------------------------------------------


def status_report() -> dict:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import
    litellm: Any = None
    litellm_error = None
    try:
        import litellm  # noqa: F811  (the hooks go in as it loads)
    except Exception as exc:  # not installed, or failing to import: reported
        litellm_error = f"{type(exc).__name__}: {exc}"
    try:
        report = fast_litellm.status()
    except ValueError as exc:  # a FAST_LITELLM_* variable the default pool refuses
        return {"ok": False, "error": f"the default pool cannot be made: {exc}",
                "fast_litellm_version": fast_litellm.__version__}
    from_litellm_env = report["pool_settings_from_litellm_environment"]
    settings: dict = {}
    for name, (own, theirs) in POOL_SETTINGS.items():
        if own in os.environ:
            source = own
        elif name in from_litellm_env and theirs:
            source = f"{theirs} (LiteLLM)"
        else:
            source = "default"
        settings[name] = {"value": report["pool"]["settings"][name], "source": source}
    settings["tls"] = tls_from_environment(litellm if litellm is not None else argparse.Namespace())
    settings["proxies"] = {"value": env_proxies(), "source": "environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY)"}
    settings["io_threads"] = io_threads()
    settings["disabled"] = {"value": report["disabled_by_environment"],
                            "source": "FAST_LITELLM_DISABLE" if "FAST_LITELLM_DISABLE" in os.environ else "default"}
    hooked = bool(report["hooks"]) and all(v == "fast_litellm" for v in report["hooks"].values())
    report.update(
        ok=bool(report["installed"] and litellm is not None and hooked and not report["warnings"]),
        fast_litellm_version=fast_litellm.__version__,
        package=os.path.dirname(os.path.abspath(fast_litellm.__file__)),
        litellm_import_error=litellm_error,
        litellm_version_matches_tested=report["litellm_version"] == TESTED_LITELLM,
        settings=settings,
    )
    return report


def print_status(report: dict) -> None:
    print(f"fast_litellm {report['fast_litellm_version']}" + (f" ({report['package']})" if "package" in report else ""))
    if "error" in report:
        print(f"error: {report['error']}")
        return
    if report["litellm_import_error"]:
        print(f"LiteLLM: cannot be imported ({report['litellm_import_error']})")
    else:
        match = "the tested one" if report["litellm_version_matches_tested"] else f"untested; tested with {TESTED_LITELLM}"
        print(f"LiteLLM {report['litellm_version']} ({match})")
    if report["disabled_by_environment"]:
        state = "not installed: FAST_LITELLM_DISABLE is set"
    elif not report["installed"]:
        state = "not installed (uninstall() was called)"
    elif report["waiting_for_litellm_import"]:
        state = "waiting for LiteLLM to be imported"
    else:
        state = "installed"
    print(f"hooks: {state}")
    for point, by in report["hooks"].items():
        print(f"  {point:<42} {by}")
    for warning in report["warnings"]:
        print(f"  warning: {warning}")
    sdk = report["openai_sdk"]
    print(f"openai SDK's own clients: {sdk['hook'] if sdk['hook'] != 'off' else 'off (install_openai_sdk(), FAST_LITELLM_OPENAI_SDK=1)'}")
    for route in report["not_through_fast_litellm"]:
        print(f"  not ours: {describe_native_route(route)}")
    print("settings in effect:")
    s = report["settings"]
    for name in POOL_SETTINGS:
        print(f"  {name:<30} {_value(s[name]['value']):<40} {s[name]['source']}")
    tls = s["tls"]
    verify = f"on, CA: {tls['ca']}" if tls["verify"] else "off"
    print(f"  {'tls verification':<30} {verify:<40} {tls['source']}")
    print(f"  {'client certificate':<30} {_value(tls['client_certificate']):<40} {tls['client_certificate_source']}")
    proxies = s["proxies"]["value"]
    shown = ", ".join(f"{p} -> {v or 'no proxy'}" for p, v in proxies.items()) or "none"
    print(f"  {'proxies':<30} {shown:<40} {s['proxies']['source'] if proxies else 'default'}")
    print(f"  {'io_threads':<30} {s['io_threads']['value']:<40} {s['io_threads']['source']}")
    pool, requests = report["pool"], report["requests"]
    print(f"pool {pool['pool_name']!r}: {pool['total_connections']} connections ({pool['active_connections']} active, "
          f"{pool['idle_connections']} idle), created {pool['connections_created']}, reused {pool['connections_reused']}, "
          f"closed {sum(pool['connections_closed'].values())}, waits {pool['waits']}")
    for origin, counts in pool["endpoints"].items():
        print(f"  {origin}: {counts}")
    print(f"requests through the hooks in this process: {requests.get('requests', 0)} "
          f"(proxied {requests.get('proxied_requests', 0)})")


def _value(value: Any) -> str:
    return "none" if value is None else str(value)


# --- check -------------------------------------------------------------------------------------


def check_report(url_text: str, insecure: bool, cacert: Optional[str], timeout: float, http2: bool = False) -> dict:
    try:
        url = httpx.URL(url_text)
    except Exception as exc:
        raise UsageError(f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError("the URL must be http:// or https:// with a host")
    if insecure and cacert:
        raise UsageError("--insecure and --cacert exclude each other")
    if insecure:
        tls = tls_in_effect(False, None, "--insecure", "default")
    elif cacert:
        tls = tls_in_effect(cacert, None, "--cacert", "default")
    else:  # what LiteLLM's traffic gets through fast_litellm in this environment
        tls = tls_from_environment(argparse.Namespace())
    verify = False if not tls["verify"] else (True if tls["ca"] == BUNDLED_ROOTS else tls["ca"])
    try:
        options = {"http2": True} if http2 else {}
        transport = fast_litellm.HTTPTransport(verify=verify, cert=tls["client_certificate"], **options)
    except (ValueError, TypeError) as exc:  # an unreadable CA bundle or client certificate
        raise UsageError(str(exc)) from None
    report: dict = {
        "url": shown_url(url), "ok": False, "tls": tls if url.scheme == "https" else None,
        "proxy": proxy_for(url), "requests": [], "connect_s": None, "error": None,
    }
    with httpx.Client(transport=transport, timeout=timeout) as client:
        for _ in range(2):
            result = _timed_get(client, url)
            report["requests"].append(result)
            if "error" in result:
                report["error"] = result["error"]
                break
    first, second = (report["requests"] + [None])[:2]
    if second and "error" not in second and first["connection"] == "new" and second["connection"] == "reused":
        # The engine reports a request's connection events with its head, so the setup cost is
        # measured as the difference between a request on a new connection and one on a kept one.
        report["connect_s"] = max(0.0, first["time_to_first_byte_s"] - second["time_to_first_byte_s"])
    report["ok"] = report["error"] is None
    report["via"] = "proxy (httpx's transport, not pooled)" if transport.stats()["proxied_requests"] else "fast_litellm pool"
    report["pool"] = _core.get_connection_pool_stats()["endpoints"]
    return report


def _timed_get(client: httpx.Client, url: httpx.URL) -> dict:
    events: list = []

    def trace(name: str, info: dict) -> None:
        events.append((name, time.perf_counter()))

    start = time.perf_counter()
    try:
        response = client.get(url, extensions={"trace": trace})
    except httpx.HTTPError as exc:
        return {"error": {"type": type(exc).__name__, "message": str(exc)},
                "elapsed_s": time.perf_counter() - start}
    total = time.perf_counter() - start
    head = next((t for name, t in events if name.endswith("receive_response_headers.complete")), None)
    return {
        "status": response.status_code,
        "reason": response.reason_phrase,
        "http_version": response.http_version,
        "connection": "new" if any(name == "connection.connect_tcp.started" for name, _ in events) else "reused",
        "time_to_first_byte_s": (head if head is not None else start + total) - start,
        "total_s": total,
        "bytes": len(response.content),
    }


def print_check(report: dict) -> None:
    via = f"proxy {report['proxy']} (httpx's transport, not pooled)" if report["via"] != "fast_litellm pool" else "fast_litellm's pool"
    print(f"GET {report['url']} through {via}")
    tls = report["tls"]
    if tls is None:
        print("  TLS: not used (http)")
    elif tls["verify"]:
        print(f"  TLS: certificate verified, CA: {tls['ca']} ({tls['source']})")
    else:
        print(f"  TLS: certificate NOT verified ({tls['source']})")
    for i, r in enumerate(report["requests"], 1):
        if "error" in r:
            print(f"  request {i}: failed after {_ms(r['elapsed_s'])}: {r['error']['type']}: {r['error']['message']}")
        else:
            print(f"  request {i}: {r['status']} {r['reason']}, {r['http_version']}, {r['connection']} connection, "
                  f"first byte {_ms(r['time_to_first_byte_s'])}, total {_ms(r['total_s'])}")
    if report["connect_s"] is not None:
        print(f"  connection setup: {_ms(report['connect_s'])} (request 1's time to first byte minus request 2's)")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


# --- the command -------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fast_litellm", description=__doc__.split("\n\n")[0],
                                epilog="exit codes: 0 ok, 1 not routed / request failed, 2 usage")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    status = sub.add_parser("status", help="hooks, LiteLLM version, settings in effect, pool statistics")
    status.add_argument("--json", action="store_true", help="one JSON object on stdout")
    check = sub.add_parser("check", help="two GET requests through the pool: protocol, TLS, timings, reuse")
    check.add_argument("url", metavar="URL")
    check.add_argument("--json", action="store_true", help="one JSON object on stdout")
    check.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    check.add_argument("--cacert", metavar="PATH", help="verify with this CA bundle (PEM)")
    check.add_argument("--timeout", type=float, default=10.0, metavar="S", help="per-phase timeout in seconds (10)")
    check.add_argument("--http2", action="store_true", help="offer HTTP/2 too (https: the server chooses), as http2=True")
    return p


def main(argv: Optional[list] = None) -> int:
    p = parser()
    args = p.parse_args(argv)  # exits with 2 on a usage error
    if args.command == "status":
        report = status_report()
        if args.json:
            print(json.dumps(report, indent=2, default=str))
        else:
            print_status(report)
        return EXIT_OK if report["ok"] else EXIT_FAILED
    if args.command == "check":
        if args.timeout <= 0:
            p.error("--timeout must be positive")
        try:
            report = check_report(args.url, args.insecure, args.cacert, args.timeout, args.http2)
        except UsageError as exc:
            p.error(str(exc))
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print_check(report)
        return EXIT_OK if report["ok"] else EXIT_FAILED
    p.print_help(sys.stderr)
    return EXIT_USAGE
