"""The LiteLLM hooks can be trusted: LiteLLM's settings are read when LiteLLM makes a client or
transport (not once at patch time), what the transports cannot do is handed to LiteLLM's own
transport and counted, LiteLLM's module-level clients go through the pool and come back on
uninstall(), no import runs under the integration's lock, and the pool's figures reach
prometheus_client (one process, and several). Real LiteLLM, local servers; each scenario in a
process of its own, since the integration is process-wide."""

import importlib.util
import json
import logging
import os
import ssl
import subprocess
import sys
import textwrap
import types

import pytest
import trustme

from helpers import HARNESS
from servers import LLMServer

PRELUDE = """
import asyncio, json, os, ssl, sys
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
URL = os.environ["TEST_URL"]

def openai(**kw):
    return dict(model="openai/gpt-test", api_base=URL + "/v1", api_key="sk-test-PLANTED", **kw)

def anthropic(**kw):
    return dict(model="anthropic/claude-test", api_base=URL, api_key="sk-test-PLANTED", max_tokens=20, **kw)

def msg(i):
    return [{"role": "user", "content": f"hello {i}"}]

def text(r):
    return r.choices[0].message.content

def calls(litellm):
    '''One call on each path: openai and anthropic, sync and async, one of them streaming.'''
    ok = [text(litellm.completion(messages=msg(0), **openai())) == "echo: hello 0",
          text(litellm.completion(messages=msg(1), **anthropic())) == "echo: hello 1",
          "".join(c.choices[0].delta.content or "" for c in litellm.completion(messages=msg(2), stream=True, **anthropic()))
          == "echo: hello 2"]
    async def both():
        a = await litellm.acompletion(messages=msg(3), **openai())
        b = await litellm.acompletion(messages=msg(4), **anthropic())
        return [text(a) == "echo: hello 3", text(b) == "echo: hello 4"]
    return ok + asyncio.run(both())
CALLS = 5

def our_requests(fast_litellm):
    return fast_litellm.status()["requests"].get("requests", 0)
"""


def run(code: str, url: str, **env) -> dict:
    """Runs PRELUDE + code in a fresh interpreter; the code prints one JSON line last."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SSL_", "LITELLM_", "FAST_LITELLM_",
                                                                              "PROMETHEUS_", "AIOHTTP_"))}
    environment.update(TEST_URL=url, **env)
    result = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=240, env=environment, cwd=HARNESS)
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def server():
    with LLMServer() as s:
        yield s


def tls_server(tmp_path_factory):
    """A CA bundle's path and an HTTPS LLM server with a certificate from that CA."""
    ca = trustme.CA()
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return str(bundle), LLMServer(tls=ctx)


@pytest.fixture
def tls(tmp_path_factory):
    bundle, server = tls_server(tmp_path_factory)
    with server:
        yield bundle, server


@pytest.fixture
def other_tls(tmp_path_factory):
    """Another CA's server: its certificate verifies with neither the system's nor tls's CA."""
    bundle, server = tls_server(tmp_path_factory)
    with server:
        yield bundle, server


@pytest.mark.parametrize("value", ["0", "no", "off"])
def test_ssl_verify_strings_mean_what_they_mean_to_litellm(other_tls, value):
    """LiteLLM reads SSL_VERIFY with its str_to_bool ("true"/"false" only): any other string
    that is not a file verifies. So does fast_litellm, on every path: a server whose CA is
    unknown is refused, and nothing reaches it."""
    _, server = other_tls
    report = run("""
        import fast_litellm, litellm
        refused = []
        for kw in (openai(), anthropic()):
            try:
                litellm.completion(messages=msg(0), num_retries=0, **kw)
                refused.append(False)
            except Exception as e:
                refused.append("CERTIFICATE" in str(e).upper() or "SSL" in str(e).upper() or type(e).__name__)
        print(json.dumps({"refused": refused}))
    """, server.url, SSL_VERIFY=value)
    assert all(r is not False for r in report["refused"]), report["refused"]
    assert server.requests == 0


def test_tls_settings_made_after_import_are_honoured(tls, other_tls):
    """`litellm.ssl_verify` set after fast_litellm and LiteLLM are imported: a CA bundle, then
    False (against a server whose CA is unknown). Every path honours both."""
    bundle, server = tls
    _, other = other_tls
    report = run(f"""
        import fast_litellm, litellm
        litellm.ssl_verify = {bundle!r}
        ok = calls(litellm)
        litellm.ssl_verify = False
        # Clients LiteLLM made before keep the settings they were made with, as without
        # fast_litellm: its cache and its module-level clients are emptied, as one would then.
        litellm.in_memory_llm_clients_cache.flush_cache()
        for name in ("module_level_client", "module_level_aclient"):
            litellm.__dict__.pop(name, None)
        URL = {other.url!r}
        ok += calls(litellm)
        print(json.dumps({{"ok": ok, "requests": our_requests(fast_litellm), "status": fast_litellm.status()}}))
    """, server.url)
    assert all(report["ok"]) and len(report["ok"]) == 10, report["ok"]
    assert server.requests == other.requests == 5
    assert report["requests"] == 10
    assert report["status"]["handed_to_litellm"] == {"transports": {}, "requests": {}}


def test_what_the_transports_cannot_do_is_handed_to_litellm_and_counted(tls):
    """An ssl.SSLContext of one's own (LiteLLM passes it to the factories as is) and LiteLLM's
    cipher setting (SSL_SECURITY_LEVEL) go to LiteLLM's own transport, counted by reason."""
    bundle, server = tls
    report = run(f"""
        import fast_litellm, litellm
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler
        context = ssl.create_default_context(cafile={bundle!r})
        body = {{"model": "claude-test", "max_tokens": 5, "messages": msg(0)}}
        sync = HTTPHandler(ssl_verify=context).post(URL + "/v1/messages", json=body)
        async def go():
            handler = AsyncHTTPHandler(ssl_verify=context)
            return await handler.post(URL + "/v1/messages", json=body)
        answers = [sync.status_code, asyncio.run(go()).status_code]
        litellm.ssl_verify = context  # the openai clients (read per request)
        answers.append(text(litellm.completion(messages=msg(1), **openai())))
        os.environ["SSL_SECURITY_LEVEL"] = "DEFAULT@SECLEVEL=1"
        litellm.ssl_verify = True
        os.environ["SSL_CERT_FILE"] = {bundle!r}
        answers.append(text(litellm.completion(messages=msg(2), **openai())))
        answers.append(text(litellm.completion(messages=msg(3), **anthropic())))
        status = fast_litellm.status()
        print(json.dumps({{"answers": answers, "requests": our_requests(fast_litellm), "status": status}}))
    """, server.url)
    assert report["answers"] == [200, 200, "echo: hello 1", "echo: hello 2", "echo: hello 3"]
    assert report["requests"] == 0  # none of them went through fast_litellm's transports
    handed = report["status"]["handed_to_litellm"]
    assert handed["transports"]["ssl_context"] == 2
    assert handed["transports"]["ssl_security_level"] >= 1
    assert handed["requests"] == {"ssl_context": 1, "ssl_security_level": 1}
    assert server.requests == 5


def test_http2_asked_of_litellm_is_asked_of_the_transports(server):
    """LITELLM_HTTP2=true: LiteLLM asks its factories for HTTP/2; the transports are made with
    http2=True (HTTP/1.1 stays on for servers without HTTP/2, as in httpx). Without it, off."""
    for env, expected in (({"LITELLM_HTTP2": "true"}, True), ({}, False)):
        requests_before = server.requests
        report = run("""
            import fast_litellm, litellm
            from fast_litellm.litellm import hooks
            from fast_litellm.litellm.state import state
            ok = calls(litellm)
            made = [key for key in state.transports]
            print(json.dumps({"ok": ok, "made": [[k[0], k[3]] for k in made],
                              "requests": our_requests(fast_litellm)}))
        """, server.url, **env)
        assert all(report["ok"])
        assert report["made"] and all(http2 is expected for _, http2 in report["made"]), report["made"]
        assert {kind for kind, _ in report["made"]} == {"sync", "async"}
        assert report["requests"] == server.requests - requests_before == 5


def test_module_level_clients_use_the_pool_and_come_back_on_uninstall(server):
    """LiteLLM's module-level clients made before fast_litellm was imported are dropped (LiteLLM
    1.110 makes them again on first use, on the hooks), carry the anthropic streams (a path that
    uses them), and are the very same objects again after uninstall(); so are the pool settings
    taken from AIOHTTP_*."""
    report = run("""
        import litellm
        before = (litellm.module_level_client, litellm.module_level_aclient)
        import fast_litellm
        from fast_litellm import _core
        dropped = "module_level_client" not in litellm.__dict__ and "module_level_aclient" not in litellm.__dict__
        ok = ["".join(c.choices[0].delta.content or "" for c in litellm.completion(messages=msg(i), stream=True, **anthropic()))
              == f"echo: hello {i}" for i in range(3)]
        async def astream():
            s = await litellm.acompletion(messages=msg(9), stream=True, **anthropic())
            return "".join([c.choices[0].delta.content or "" async for c in s]) == "echo: hello 9"
        ok.append(asyncio.run(astream()))
        rebuilt_on_hooks = litellm.module_level_client.client._transport is not before[0].client._transport
        settings_installed = _core.get_connection_pool_stats()["settings"]["max_connections"]
        requests = our_requests(fast_litellm)
        fast_litellm.uninstall()
        restored = (litellm.module_level_client is before[0], litellm.module_level_aclient is before[1])
        settings_after = _core.get_connection_pool_stats()["settings"]["max_connections"]
        print(json.dumps({"dropped": dropped, "ok": ok, "rebuilt": rebuilt_on_hooks, "requests": requests,
                          "restored": restored, "settings": [settings_installed, settings_after]}))
    """, server.url, AIOHTTP_CONNECTOR_LIMIT="77")
    assert report["dropped"] and report["rebuilt"] and all(report["ok"])
    assert report["requests"] == server.requests == 4
    assert report["restored"] == [True, True]
    assert report["settings"] == [77, 1000]


def test_no_import_runs_under_the_integrations_lock(server):
    """The import finder takes the integration's lock inside the import machinery: an import
    made while holding that lock could deadlock two threads. Every module found while the lock
    is held is recorded: none, through install before LiteLLM loads, calls on every path,
    uninstall and install again."""
    report = run("""
        import importlib.abc
        import fast_litellm
        from fast_litellm.litellm import hooks
        from fast_litellm.litellm.state import state

        under_lock = []
        class Watch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if state.lock._is_owned():
                    under_lock.append(name)
                return None
        sys.meta_path.insert(0, Watch())
        import litellm
        ok = calls(litellm)
        fast_litellm.uninstall()
        fast_litellm.install()
        ok += calls(litellm)
        print(json.dumps({"ok": ok, "under_lock": under_lock, "prometheus_imported": "prometheus_client" in sys.modules}))
    """, server.url)
    assert all(report["ok"])
    assert report["under_lock"] == []
    assert report["prometheus_imported"] is False  # fast_litellm does not import it on its own


def test_a_litellm_outside_the_tested_range_gets_one_warning(monkeypatch, caplog):
    from fast_litellm.litellm import hooks
    from fast_litellm.litellm.state import state

    caplog.set_level(logging.WARNING, logger="fast_litellm")
    monkeypatch.setattr(hooks, "litellm_version", lambda: "1.99.0")
    monkeypatch.setattr(state, "warned_version", False)
    before = list(state.warnings)
    try:
        hooks.check_litellm_version()
        hooks.check_litellm_version()
        new = state.warnings[len(before):]
        assert len(new) == 1 and "1.99.0" in new[0] and hooks.TESTED_LITELLM in new[0]
        assert caplog.text.count("outside the tested range") == 1
    finally:
        state.warnings[:] = before
    monkeypatch.setattr(hooks, "litellm_version", lambda: hooks.TESTED_LITELLM)
    monkeypatch.setattr(state, "warned_version", False)
    hooks.check_litellm_version()
    assert state.warnings == before


def test_a_litellm_without_client_session_is_a_warning_not_hooked(caplog):
    from fast_litellm.litellm import hooks
    from fast_litellm.litellm.state import state

    caplog.set_level(logging.WARNING, logger="fast_litellm")
    saved = (dict(state.originals), dict(state.hooks), list(state.warnings))
    fake = types.ModuleType("litellm")  # a LiteLLM without client_session / aclient_session
    try:
        hooks._patch_litellm_module(fake, hooks._shared_clients())
        assert state.hooks["litellm.client_session"] == "missing in this LiteLLM"
        assert state.hooks["litellm.aclient_session"] == "missing in this LiteLLM"
        new = state.warnings[len(saved[2]):]
        assert len([w for w in new if "client_session" in w]) == 2, new
        assert "client_session" not in fake.__dict__
    finally:
        state.originals.clear()
        state.originals.update(saved[0])
        state.hooks.clear()
        state.hooks.update(saved[1])
        state.warnings[:] = saved[2]


needs_prometheus = pytest.mark.skipif(importlib.util.find_spec("prometheus_client") is None,
                                      reason="prometheus_client (the prometheus extra) is not installed")


@needs_prometheus
def test_metrics_in_prometheus_clients_registry(server):
    """One process: a collector in the default registry, read at scrape time; labels are the
    pool and the endpoint's origin only; gone after uninstall()."""
    report = run("""
        import fast_litellm, litellm
        ok = calls(litellm)
        fast_litellm.SimpleConnectionPool("made-directly", max_connections=7)
        import prometheus_client
        text = prometheus_client.generate_latest().decode()
        fast_litellm.uninstall()
        after = prometheus_client.generate_latest().decode()
        print(json.dumps({"ok": ok, "text": text, "after": after, "requests": our_requests(fast_litellm)}))
    """, server.url)
    assert all(report["ok"])
    lines = [line for line in report["text"].splitlines() if line.startswith("fast_litellm_")]
    assert "fast_litellm_installed 1.0" in lines
    assert 'fast_litellm_pool_max_connections{pool="made-directly"} 7.0' in lines  # every pool, not only the hooks'
    assert f'fast_litellm_requests_total{{pool="default"}} {float(server.requests)}' in lines
    assert f'fast_litellm_connections_created_total{{pool="default"}} {float(server.connections)}' in lines
    origin = f'endpoint="http://127.0.0.1:{server.port}"'
    assert any(line.startswith("fast_litellm_connections{") and origin in line for line in lines)
    assert any(line.startswith("fast_litellm_drains_total{") for line in lines)
    # Connect times: one observation per connection the server accepted, in cumulative buckets.
    connect = f'fast_litellm_connect_duration_seconds_count{{{origin},pool="default"}} {float(server.connections)}'
    assert connect in lines, [line for line in lines if "connect_duration" in line]
    assert f'fast_litellm_connect_duration_seconds_bucket{{{origin},le="+Inf",pool="default"}} {float(server.connections)}' in lines
    assert 'fast_litellm_pool_wait_duration_seconds_count{pool="default"} 0.0' in lines
    assert f'fast_litellm_tls_handshakes_total{{{origin},kind="full",pool="default"}} 0.0' in lines  # cleartext
    for secret in ("sk-test-PLANTED", "/v1", "messages"):
        assert secret not in "\n".join(lines)
    assert "fast_litellm_" not in report["after"]


@needs_prometheus
def test_metrics_of_several_processes_through_the_multiprocess_files(server, tmp_path):
    """PROMETHEUS_MULTIPROC_DIR: each process writes its figures there from a background thread;
    a reader (as LiteLLM's /metrics) sums counters over processes and sees each one installed."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "FAST_LITELLM_METRICS_INTERVAL": "0.2"}
    worker = """
        import time, fast_litellm, litellm, prometheus_client
        ok = [text(litellm.completion(messages=msg(i), **openai())) == f"echo: hello {i}" for i in range(3)]
        time.sleep(0.8)
        print(json.dumps({"ok": ok, "metrics": fast_litellm.status()["metrics"]}))
    """
    workers = [subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(worker)], stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "TEST_URL": server.url, **env}, cwd=HARNESS)
               for _ in range(2)]
    reports = [json.loads(w.communicate(timeout=120)[0].strip().splitlines()[-1]) for w in workers]
    assert all(all(r["ok"]) for r in reports)
    assert all(r["metrics"]["prometheus"].startswith("multiprocess") for r in reports)
    read = run("""
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        print(json.dumps({"text": generate_latest(registry).decode()}))
    """, server.url, **env)
    lines = read["text"].splitlines()
    installed = [line for line in lines if line.startswith("fast_litellm_installed{")]
    assert len(installed) == 2 and all(line.endswith(" 1.0") for line in installed), installed
    assert 'fast_litellm_requests_total{pool="default"} 6.0' in lines
    assert f'fast_litellm_connections_created_total{{pool="default"}} {float(server.connections)}' in lines
    assert any(line.startswith('fast_litellm_connections{') for line in lines)
    origin = f'endpoint="http://127.0.0.1:{server.port}"'
    connect = f'fast_litellm_connect_duration_seconds_count{{{origin},pool="default"}} {float(server.connections)}'
    assert connect in lines, [line for line in lines if "connect_duration" in line]
