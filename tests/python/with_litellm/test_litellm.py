"""`import fast_litellm` routes LiteLLM's HTTP traffic through the Rust pool: real LiteLLM,
local OpenAI- and Anthropic-compatible servers that count connections and requests. Each case
runs in a process of its own, since the integration is process-wide."""

import json
import logging
import os
import ssl
import subprocess
import sys
import types

import pytest
import trustme

from helpers import HARNESS
from servers import LLMServer


ALL_PHASES_REQUESTS = 5 + 20 + 2 * (5 + 50 + 10)


def run(order, provider, url, phases="all", **env):
    result = subprocess.run(
        [sys.executable, str(HARNESS / "litellm_workload.py"), order, provider, url, phases],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **env},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def all_ok(report):
    return {p["name"]: all(p["ok"]) and len(p["ok"]) > 0 for p in report["phases"]}


@pytest.fixture
def server():
    s = LLMServer()
    yield s
    s.close()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("order", ["before", "after"])
def test_every_request_goes_through_the_pool(server, provider, order):
    report = run(order, provider, server.url)
    assert all(all_ok(report).values()), all_ok(report)
    status = report["status"]
    assert status["installed"] and status["warnings"] == []
    assert set(status["hooks"].values()) == {"fast_litellm"}
    # Every request the server saw was sent by fast_litellm's transports.
    assert server.requests == ALL_PHASES_REQUESTS
    assert status["requests"]["requests"] == ALL_PHASES_REQUESTS
    assert status["requests"]["proxied_requests"] == 0
    pool = status["pool"]
    assert pool["active_connections"] == 0
    assert pool["connections_created"] == server.connections <= 51
    assert pool["connections_reused"] >= ALL_PHASES_REQUESTS - 51


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_sequential_streaming_calls_share_one_connection(server, provider):
    report = run("before", provider, server.url, "streaming")
    assert all(all_ok(report).values())
    assert server.requests == 40
    assert server.connections == 1


def test_plain_litellm_opens_a_connection_per_sync_stream(server):
    """The behaviour fast_litellm fixes, measured on the same server."""
    report = run("none", "openai", server.url, "streaming")
    assert all(all_ok(report).values())
    assert server.connections >= 20


def test_uninstall_restores_litellms_originals(server):
    report = run("uninstall", "openai", server.url, "quick")
    assert all(all_ok(report).values())
    assert report["restored"] is True
    status = report["status"]
    assert not status["installed"] and status["hooks"] == {}
    assert status["requests"].get("requests", 0) == 0
    assert status["pool"]["connections_created"] == 0


def test_opt_out_with_an_environment_variable(server):
    report = run("before", "anthropic", server.url, "quick", FAST_LITELLM_DISABLE="1")
    assert all(all_ok(report).values())
    status = report["status"]
    assert status["disabled_by_environment"] and not status["installed"]
    assert status["hooks"] == {} and status["pool"]["connections_created"] == 0


def test_litellm_connection_settings_map_to_the_pool(server):
    report = run("before", "openai", server.url, "quick", AIOHTTP_CONNECTOR_LIMIT="77",
                 AIOHTTP_CONNECTOR_LIMIT_PER_HOST="9", AIOHTTP_KEEPALIVE_TIMEOUT="3")
    settings = report["status"]["pool"]["settings"]
    assert (settings["max_connections"], settings["max_connections_per_endpoint"], settings["idle_timeout"]) == (77, 9, 3.0)
    assert report["status"]["pool_settings_from_litellm_environment"] == {
        "max_connections": 77, "max_connections_per_endpoint": 9, "idle_timeout": 3.0}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_litellm_tls_settings_keep_their_meaning(provider, tmp_path):
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with LLMServer(tls=ctx) as server:
        report = run("before", provider, server.url, "quick", SSL_CERT_FILE=str(bundle))
        assert all(all_ok(report).values())
        assert report["status"]["requests"]["requests"] == server.requests == 6
        assert server.connections == 1


def test_secrets_never_reach_the_status(server):
    report = run("before", "openai", server.url, "quick")
    assert "sk-test-PLANTED" not in json.dumps(report)


def test_a_litellm_without_a_hook_point_gets_one_warning(caplog):
    from fast_litellm.litellm import hooks
    from fast_litellm.litellm.state import state

    caplog.set_level(logging.WARNING, logger="fast_litellm")
    before = len(state.warnings)
    hooks._patch_handler_module(types.SimpleNamespace())  # a handler module without the classes
    # One warning for each hook point it lacks.
    assert len(state.warnings) == before + 2
    assert "create_async_transport" in caplog.text and "_create_sync_transport" in caplog.text
    assert state.hooks.pop("AsyncHTTPHandler.create_async_transport") == "missing in this LiteLLM"
    assert state.hooks.pop("HTTPHandler._create_sync_transport") == "missing in this LiteLLM"
    del state.warnings[before:]
