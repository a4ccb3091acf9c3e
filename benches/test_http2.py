"""HTTP/2 over TLS against a local nginx (ALPN h2, stream limit 128): fast_litellm's HTTP/2 and
HTTP/1.1 against LiteLLM's own HTTP/2 path (httpx + h2 spread over connections), httpx's
`http2=True` and LiteLLM's aiohttp transport (HTTP/1.1), async at 64 and 512 concurrent
requests, whole JSON responses and event streams. Each in processes of its own, alternating."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from nginx_server import Nginx, nginx_binary

HERE = Path(__file__).parent
REPEATS = 2
STREAM_LIMIT = 128
CASES = {64: 6000, 512: 6000}
TRANSPORTS = ["fast_litellm-h2", "fast_litellm-h1", "litellm-h2", "httpx-h2", "litellm-aiohttp"]
LABELS = {
    "fast_litellm-h2": "fast_litellm, HTTP/2",
    "fast_litellm-h1": "fast_litellm, HTTP/1.1",
    "litellm-h2": "LiteLLM's HTTP/2 path",
    "httpx-h2": "httpx http2=True",
    "litellm-aiohttp": "LiteLLM's aiohttp transport (HTTP/1.1)",
}


def measure(transport, nginx, concurrency, total, kind):
    if not transport.startswith("fast_litellm"):
        total //= 3  # the Python HTTP/2 stacks are slow enough that fewer requests tell the same story
    out = subprocess.run([sys.executable, str(HERE / "http2_runner.py"), transport, nginx.tls_base, nginx.ca_file,
                          str(concurrency), str(total), kind], capture_output=True, text=True, timeout=900,
                         check=True, cwd=HERE)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def nginx():
    if nginx_binary() is None:
        pytest.skip("nginx is not installed: the HTTP/2 benchmark needs it")
    server = Nginx(tls_streams=STREAM_LIMIT)
    yield server
    server.close()


@pytest.mark.parametrize("kind", ["json", "sse"])
def test_http2(nginx, record_transport, kind):
    for concurrency, total in CASES.items():
        runs = {t: [] for t in TRANSPORTS}
        for _ in range(REPEATS):
            for t in TRANSPORTS:
                runs[t].append(measure(t, nginx, concurrency, total, kind))
        for t in TRANSPORTS:
            figures = {k: statistics.median(r[k] for r in runs[t]) for k in runs[t][0] if k != "versions"}
            figures["versions"] = "/".join(sorted({v for r in runs[t] for v in r["versions"]}))
            workload = "whole JSON responses" if kind == "json" else "event streams (21 events)"
            record_transport("http2", f"{concurrency} concurrent, {workload}", LABELS[t], figures)
