"""LiteLLM asking for HTTP/2 (`LITELLM_HTTP2`, `litellm.http2 = True`) with `import fast_litellm`:
its calls go over HTTP/2 through the Rust engine. Real LiteLLM (openai/ and anthropic/ models,
sync and async, streaming and not) against tests/python/h2server.py over TLS (a trustme CA given
as SSL_CERT_FILE), which offers h2 and http/1.1 by ALPN and records, on its side, each request's
protocol and connection.

Each scenario is a process of its own (the integration is process-wide) running
litellm_http2_workload.py with a clean environment, against a server of its own. The scenarios
run in parallel, once per module (the `runs` fixture), and the tests read their results:

  ours-h2            LITELLM_HTTP2=true: every call over HTTP/2, on one or two connections, through
                     our transports (their counters, the pool's http2_connections).
  ours-h2-attribute  litellm.http2 = True, set in code after the import: the same.
  ours-http1         no LITELLM_HTTP2: the same calls over HTTP/1.1 (ALPN picks it), one
                     connection per concurrent call.
  litellm-own-h2     LITELLM_HTTP2=true with FAST_LITELLM_DISABLE=1: nothing installed; LiteLLM's
                     own httpx + h2 speaks HTTP/2 (on more connections).
  ours-h2-env-1      LITELLM_HTTP2=1, which LiteLLM 1.110.2 itself does not count as "on" (its
                     str_to_bool knows "true" only): the protocol should be the one LiteLLM would
                     use (see test_litellm_http2_values_mean_what_they_mean_to_litellm).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import subprocess
import sys

import h2.errors
import pytest

from h2server import H2Server
from helpers import HARNESS

pytestmark = pytest.mark.timeout(120)

WORKLOAD = HARNESS / "litellm_http2_workload.py"
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
# What the workload does per provider (see litellm_http2_workload.py).
SYNC, SYNC_STREAMING, ASYNC, ASYNC_STREAMING = 4, 2, 4, 2
TAGS = ([f"sync-{i}" for i in range(SYNC)] + [f"sync-stream-{i}" for i in range(SYNC_STREAMING)]
        + [f"async-{i}" for i in range(ASYNC)] + [f"async-stream-{i}" for i in range(ASYNC_STREAMING)])
PER_PROVIDER = len(TAGS)
CALLS = PER_PROVIDER * len(PATHS)
# Inherited variables that would change what LiteLLM or the transports do (proxies, CA bundles,
# LiteLLM's and our settings, provider keys) are not passed to the workload.
DROPPED = ("PROXY", "SSL_", "CA_BUNDLE", "CA_CERTS", "LITELLM", "AIOHTTP", "OPENAI", "ANTHROPIC")

SCENARIOS = {
    "ours-h2": ("env", {"LITELLM_HTTP2": "true"}),
    "ours-h2-attribute": ("attribute", {}),
    "ours-http1": ("env", {}),
    "litellm-own-h2": ("env", {"LITELLM_HTTP2": "true", "FAST_LITELLM_DISABLE": "1"}),
    "ours-h2-env-1": ("env", {"LITELLM_HTTP2": "1"}),
}


@dataclasses.dataclass
class Run:
    name: str
    server: H2Server  # stopped; its counters stay readable
    report: dict | None
    stderr: str

    @property
    def status(self) -> dict:
        return self.report["status"]

    def check_ran(self) -> None:
        assert self.report is not None, f"{self.name}: the workload failed:\n{self.stderr[-4000:]}"
        assert self.report["errors"] == {}, (self.report["errors"], self.stderr[-4000:])

    def endpoint(self, endpoints: dict) -> dict:
        """The pool's stats for the server, summed over its keys: the pool keys an origin reached
        with custom TLS settings (our CA) apart, as "https://127.0.0.1:PORT (tls settings #N)"."""
        origin = self.server.url
        total = collections.Counter()
        for key, stats in endpoints.items():
            if key == origin or key.startswith(origin + " "):
                total.update(stats)
        return dict(total)


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not any(word in k.upper() for word in DROPPED) and not k.startswith("FAST_LITELLM")}
    return {**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def runs():
    """Every scenario, each against a server of its own, run at once."""
    servers, processes = {}, {}
    try:
        for name, (how, env) in SCENARIOS.items():
            server = servers[name] = H2Server(tls=True).start()
            server.llm_delay = 0.1  # concurrent calls overlap on the server
            server.llm_stream_pause = 0.4  # streams stay open while the workload looks at the pool
            processes[name] = subprocess.Popen(
                [sys.executable, str(WORKLOAD), server.url, how], cwd=HARNESS, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(SSL_CERT_FILE=server.ca_path, **env))

        def wait(name):
            try:
                out, err = processes[name].communicate(timeout=100)
            except subprocess.TimeoutExpired:
                processes[name].kill()
                out, err = processes[name].communicate()
                err += "\n(killed: timed out)"
            report = None
            if processes[name].returncode == 0 and out.strip():
                report = json.loads(out.strip().splitlines()[-1])
            return Run(name, servers[name], report, err)

        with concurrent.futures.ThreadPoolExecutor(len(processes)) as executor:
            results = dict(zip(processes, executor.map(wait, processes)))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for server in servers.values():
            server.stop()
    return results


def check_calls(run: Run, protocol: str) -> None:
    """Every call answered and parsed right, and seen once by the server, over `protocol`."""
    run.check_ran()
    expected = {tag: f"echo: hello {tag}" for tag in TAGS}
    assert run.report["replies"] == {"openai": expected, "anthropic": expected}
    server = run.server
    assert server.protocol_errors == []
    assert server.protocols() == {protocol: CALLS}, run.server.connection_infos()
    for provider, path in PATHS.items():
        requests = [r for r in server.requests() if r.path == path]
        assert all(r.method == "POST" for r in requests)
        bodies = [json.loads(r.body) for r in requests]
        prompts = sorted(b["messages"][-1]["content"] if isinstance(b["messages"][-1]["content"], str)
                         else "".join(p["text"] for p in b["messages"][-1]["content"]) for b in bodies)
        assert prompts == sorted(f"hello {tag}" for tag in TAGS), provider  # each call once
        assert sum(1 for b in bodies if b.get("stream")) == SYNC_STREAMING + ASYNC_STREAMING, provider
    alpn = {"h2": "h2", "http/1.1": "http/1.1"}[protocol]
    assert {(c.protocol, c.alpn) for c in server.connection_infos()} == {(protocol, alpn)}


def check_through_our_transports(run: Run) -> None:
    status = run.status
    assert status["installed"] and status["warnings"] == []
    assert set(status["hooks"].values()) == {"fast_litellm"}
    assert status["handed_to_litellm"] == {"transports": {}, "requests": {}}
    assert status["requests"]["requests"] >= CALLS  # every call went through our transports
    assert status["requests"]["requests"] == run.server.count()  # and nothing was sent twice
    assert status["requests"]["retried_on_fresh_connection"] == 0


@pytest.mark.parametrize("scenario", ["ours-h2", "ours-h2-attribute"])
def test_litellm_calls_go_over_http2_through_the_rust_engine(runs, scenario):
    run = runs[scenario]
    check_calls(run, "h2")
    check_through_our_transports(run)
    assert run.report["litellm_http2_enabled"] is True  # LiteLLM itself asks for HTTP/2
    server = run.server
    # 24 calls (sync and async, both providers, 8 of them streamed) share one or two connections,
    # several streams at once on one of them.
    assert server.connections <= 2 and server.tls_handshakes == server.connections, server.connection_infos()
    assert server.max_open_per_connection >= 2, server.connection_infos()
    # LiteLLM closes an Anthropic stream once it has message_delta, before message_stop (which the
    # server sends after a pause): that stream is reset (CANCEL), as an HTTP/2 client does with a
    # body closed early. Nothing else is.
    requests = {(r.connection, r.stream_id): r for r in server.requests()}
    for connection, stream_id, code in server.resets():
        request = requests[connection, stream_id]
        assert request.path == PATHS["anthropic"] and json.loads(request.body).get("stream"), request
        assert code == h2.errors.ErrorCodes.CANCEL
    # The pool: HTTP/2 connections only, none in use once the calls are done.
    assert run.report["busy_after_calls"] == [0, 0]
    end = run.endpoint(run.status["pool"]["endpoints"])
    assert end["http2_connections"] >= 1 and end["http1_connections"] == 0, end
    assert (end["active"], end["streams_in_use"]) == (0, 0), end
    assert end["http2_connections"] <= server.connections
    # While two async streams were open (each provider): both streams on one HTTP/2 connection.
    for provider in PATHS:
        during = run.endpoint(run.report["pool_while_streaming"][provider])
        assert during["http2_connections"] >= 1 and during["http1_connections"] == 0, (provider, during)
        assert during["streams_in_use"] >= ASYNC_STREAMING, (provider, during)


def test_without_litellm_http2_the_same_calls_stay_on_http11(runs):
    run = runs["ours-http1"]
    check_calls(run, "http/1.1")
    check_through_our_transports(run)
    assert run.report["litellm_http2_enabled"] is False
    server = run.server
    # One request at a time per connection: the 4 concurrent calls needed 4 connections.
    assert server.max_open_per_connection == 1
    assert server.connections >= ASYNC, server.connection_infos()
    assert run.report["busy_after_calls"] == [0, 0]
    end = run.endpoint(run.status["pool"]["endpoints"])
    assert end["http2_connections"] == 0 and end["http1_connections"] >= 1, end
    assert (end["active"], end["streams_in_use"]) == (0, 0), end
    for provider in PATHS:
        during = run.endpoint(run.report["pool_while_streaming"][provider])
        assert during["http2_connections"] == 0 and during["http1_connections"] >= ASYNC_STREAMING, (provider, during)


def test_with_fast_litellm_disabled_litellm_speaks_http2_itself(runs):
    run = runs["litellm-own-h2"]
    check_calls(run, "h2")  # LiteLLM's own httpx + h2
    status = run.status
    assert status["disabled_by_environment"] and not status["installed"]
    assert status["hooks"] == {} and status["requests"] == {}
    assert status["pool"]["connections_created"] == 0
    assert run.endpoint(status["pool"]["endpoints"]) == {}
    # Ours shares its connections between sync and async calls and both providers; LiteLLM's
    # own clients each have theirs.
    assert runs["ours-h2"].server.connections <= run.server.connections


def test_litellm_http2_1_calls_are_answered_through_our_transports(runs):
    run = runs["ours-h2-env-1"]
    protocols = list(run.server.protocols())
    assert len(protocols) == 1, protocols
    check_calls(run, protocols[0])
    check_through_our_transports(run)


def test_litellm_http2_values_mean_what_they_mean_to_litellm(runs):
    run = runs["ours-h2-env-1"]
    run.check_ran()
    # LiteLLM's own verdict, taken in the same process (1.110.2: False for "1").
    expected = "h2" if run.report["litellm_http2_enabled"] else "http/1.1"
    assert run.server.protocols() == {expected: CALLS}
