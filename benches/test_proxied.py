"""Requests through a forward proxy: fast_litellm's transport (tunnels pooled in Rust) against
httpx's own proxy transport, HTTPS to nginx through a CONNECT tunnel of the test suite's forward
proxy (tests/python/servers.py), which counts the tunnels it opened. The proxy relays bytes with
Python threads, so both transports run well below their direct speed: what the rows compare is
the same path taken by both."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from nginx_server import Nginx, nginx_binary

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE.parent / "tests" / "python"), str(HERE.parent / "demo")]

from servers import ForwardProxy  # noqa: E402

REPEATS = 2  # processes per case, alternating
CASES = [("sync", 1, 3000), ("async", 16, 3000)]
LABELS = {"fast_litellm": "fast_litellm (pooled in Rust)", "httpx": "httpx stock transport"}


def measure(mode, transport, url, concurrency, total, proxy, ca):
    env = {**os.environ, "BENCH_PROXY": proxy, "BENCH_CA": ca}
    out = subprocess.run([sys.executable, str(HERE / "transport_runner.py"), mode, transport, url, str(concurrency),
                          str(total)], capture_output=True, text=True, timeout=900, check=True, cwd=HERE, env=env)
    return json.loads(out.stdout)


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")
def test_through_a_proxy(record_proxied):
    nginx = Nginx(tls_streams=128)
    try:
        url = f"{nginx.tls_base}/v1/chat/completions"
        for mode, concurrency, total in CASES:
            runs = {t: [] for t in LABELS}
            tunnels = {t: [] for t in LABELS}
            for _ in range(REPEATS):
                for transport in LABELS:
                    with ForwardProxy() as proxy:
                        runs[transport].append(measure(mode, transport, url, concurrency, total, proxy.url,
                                                       nginx.ca_file))
                        tunnels[transport].append(proxy.tunnels)
            for transport, label in LABELS.items():
                figures = {k: statistics.median(r[k] for r in runs[transport]) for k in runs[transport][0]}
                figures["tunnels"] = statistics.median(tunnels[transport])
                record_proxied(mode, concurrency, label, figures)
    finally:
        nginx.close()
