"""HTTP transports through httpx against a local nginx keep-alive server: fast_litellm against
httpx's stock transports, LiteLLM's aiohttp transport (its async default) and raw aiohttp, each
measured in processes of its own, alternating, in one run; a floor per mode shows what no transport
can beat here (benches/transport_runner.py: sync, one raw socket; async, no network at all), and a
minimal asyncio transport what plain asyncio networking costs under httpx.AsyncClient."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from nginx_server import Nginx, nginx_binary
from report import FLOOR, MINIMAL_ASYNC

HERE = Path(__file__).parent
REPEATS = 2  # processes per case, alternating between transports

ASYNC = {1: 2000, 64: 6000, 512: 6000}
ASYNC_TRANSPORTS = ["fast_litellm", "litellm-aiohttp", "httpx", "aiohttp", "minimal", "floor"]
SYNC = {1: 3000, 16: 3000}
SYNC_TRANSPORTS = ["fast_litellm", "httpx", "floor"]
LABELS = {
    "fast_litellm": "fast_litellm",
    "litellm-aiohttp": "LiteLLM's aiohttp transport",
    "httpx": "httpx stock transport",
    "aiohttp": "raw aiohttp (no httpx)",
    "minimal": MINIMAL_ASYNC,
    "floor": FLOOR,  # one label for both modes' floors: one series in the chart
}


def measure(mode, transport, url, concurrency, total):
    if transport == "httpx" and concurrency >= 64:
        total //= 3  # httpx's async pool is slow enough that fewer requests tell the same story
    out = subprocess.run([sys.executable, str(HERE / "transport_runner.py"), mode, transport, url,
                          str(concurrency), str(total)], capture_output=True, text=True, timeout=900,
                         check=True, cwd=HERE)
    return json.loads(out.stdout)


def merged(results):
    """Several processes of one case: medians of their figures."""
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


class _Fallback:
    """The bundled LLM server, when nginx is not there: slower, so transports look closer."""

    def __init__(self):
        sys.path.insert(0, str(HERE.parent / "demo"))
        from local_server import LLMServer

        self.server = LLMServer()
        self.url = f"{self.server.url}/v1/chat/completions"

    def close(self):
        self.server.close()


@pytest.fixture(scope="module")
def nginx(server_note):
    if nginx_binary() is None:
        server_note["note"] = ("nginx was not available, so the bundled Python server answered (threaded, far "
                               "slower than nginx: the transports' differences are understated)")
        server = _Fallback()
    else:
        server = Nginx()
    yield server
    server.close()


@pytest.mark.parametrize("mode, cases, transports", [("async", ASYNC, ASYNC_TRANSPORTS),
                                                     ("sync", SYNC, SYNC_TRANSPORTS)])
def test_transports(nginx, record_transport, mode, cases, transports):
    for concurrency, total in cases.items():
        runs = {t: [] for t in transports}
        for _ in range(REPEATS):
            for t in transports:
                runs[t].append(measure(mode, t, nginx.url, concurrency, total))
        for t in transports:
            unit = "concurrent" if mode == "async" else ("thread" if concurrency == 1 else "threads")
            record_transport(mode, f"{concurrency} {unit}", LABELS[t], merged(runs[t]))
