"""The LiteLLM Proxy under load and faults, plain against fast_litellm.

Two proxies started once, as an operator runs them (`litellm --config … --num_workers 2`, the
documented config of docs/litellm-proxy.md, master key): one with fast_litellm, one with the
same config and FAST_LITELLM_DISABLE=1, which is plain LiteLLM. Both in front of the same
bundled backend (demo/local_server.py) on 127.0.0.1, which counts the connections it accepts.
Phases, each run against one proxy at a time in two halves, alternating (ABBA, the order flipped
from one phase to the next): non-streaming, streaming, then
faults (the backend answers 30% of requests 429 and cuts 10% of the other streams in the middle
of an event; every other request streams). The load comes from benches/proxy_load.py, a
process of its own (httpx.AsyncClient, httpx's own transport).

Both proxies run at about the proxy's own speed (its Python is ~10 ms of CPU a request on a
small machine): the figures to compare are connections, errors and tail latency.

Run alone, it replaces only its own section of docs/benchmarks.md (benches/conftest.py);
`make bench` writes it with the rest.
"""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE.parent / "demo"), str(HERE.parent / "tests" / "python")]

from litellm_proxy_process import LITELLM_CLI, ProxyProcess  # noqa: E402
from local_server import LLMServer  # noqa: E402
from percentiles import nearest_rank  # noqa: E402

PROXY_MODULES = ["fastapi", "uvicorn", "orjson", "apscheduler", "backoff", "multipart", "jwt", "prometheus_client"]
MISSING = [m for m in PROXY_MODULES if importlib.util.find_spec(m) is None]

pytestmark = pytest.mark.skipif(bool(MISSING) or not LITELLM_CLI.exists(),
                                reason=f"LiteLLM Proxy dependencies missing ({', '.join(MISSING) or 'litellm CLI'}): "
                                       "`make venv` installs them")

MASTER_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
WORKERS = 2
REQUESTS = int(os.environ.get("PROXY_BENCH_REQUESTS", "2000"))  # per phase and proxy
CONCURRENCY = 64
WARMUP = 128
RATE_LIMIT, CUT_STREAMS = 0.30, 0.10
PHASES = [("non-streaming", "plain", False), ("streaming", "stream", False),
          (f"faults: {RATE_LIMIT:.0%} 429, {CUT_STREAMS:.0%} of streams cut, half streaming", "mixed", True)]
NAMES = {"plain": "plain LiteLLM Proxy", "fast": "with fast_litellm"}

CONFIG = """\
model_list:
  - model_name: gpt-test
    litellm_params:
      model: openai/gpt-test
      api_base: {api_base}
      api_key: sk-backend
litellm_settings:
  callbacks: ["fast_litellm.proxy.callback", "prometheus"]
general_settings:
  master_key: {master_key}
"""


def start_proxy(tmp: Path, name: str, api_base: str, **env: str) -> ProxyProcess:
    # Idle connections outlive the other proxy's turn (15 s by default, in aiohttp and, taken from
    # this same variable, in fast_litellm): connections opened are then what the load and the
    # faults need, not what the schedule expired.
    return ProxyProcess(tmp, name, CONFIG.format(api_base=api_base, master_key=MASTER_KEY), WORKERS,
                        AIOHTTP_KEEPALIVE_TIMEOUT="300", **env)


def load(proxy: ProxyProcess, mode: str, n: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "proxy_load.py"), proxy.url, MASTER_KEY, mode, str(n),
                          str(CONCURRENCY)], capture_output=True, text=True, timeout=1800, check=True,
                         env={**os.environ, "FAST_LITELLM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def merge(rounds: list) -> dict:
    """One proxy's figures for a phase from its rounds: sums, requests/s over their total time,
    percentiles over every latency."""
    latencies = sorted(x for r in rounds for x in r["latencies_ms"])
    outcomes: dict = {}
    for r in rounds:
        for kind, count in r["outcomes"].items():
            outcomes[kind] = outcomes.get(kind, 0) + count
    merged = {k: sum(r[k] for r in rounds) for k in ("requests", "seconds", "connections", "backend_requests",
                                                      "backend_429", "backend_cut")}
    merged.update(rps=merged["requests"] / merged["seconds"], p50_ms=statistics.median(latencies),
                  p99_ms=nearest_rank(latencies, 99), outcomes=outcomes,
                  rounds_rps=[round(r["rps"], 1) for r in rounds])
    return merged


def test_litellm_proxy_under_load_and_faults(record_proxy, tmp_path):
    backend = LLMServer(seed=12)
    tmp = tmp_path
    proxies = {"plain": start_proxy(tmp, "plain", f"{backend.url}/v1", FAST_LITELLM_DISABLE="1"),
               "fast": start_proxy(tmp, "fast", f"{backend.url}/v1")}
    try:
        for proxy in proxies.values():
            proxy.wait_ready(240)
        for proxy in proxies.values():  # lazy imports and first connections, not measured
            load(proxy, "mixed", WARMUP)
        for index, (phase, mode, faults) in enumerate(PHASES):
            backend.rate_limit, backend.cut_streams = (RATE_LIMIT, CUT_STREAMS) if faults else (0.0, 0.0)
            first, second = ("plain", "fast") if index % 2 == 0 else ("fast", "plain")
            rounds = {"plain": [], "fast": []}
            for name in (first, second, second, first):  # two halves each, ABBA: drift hits both alike
                before = (backend.connections, backend.requests, backend.rate_limited, backend.streams_cut)
                figures = load(proxies[name], mode, REQUESTS // 2)
                after = (backend.connections, backend.requests, backend.rate_limited, backend.streams_cut)
                figures["connections"], figures["backend_requests"], figures["backend_429"], figures["backend_cut"] = (
                    a - b for a, b in zip(after, before))
                rounds[name].append(figures)
            for name in ("plain", "fast"):
                figures = merge(rounds[name])
                record_proxy(phase, NAMES[name], figures)
                print(f"\n{phase} | {NAMES[name]} | {json.dumps(figures)}", flush=True)
        backend.rate_limit = backend.cut_streams = 0.0
        # The fast proxy ran with fast_litellm in both workers, the plain one without.
        deadline = time.monotonic() + 30
        while True:
            installed = [line for line in proxies["fast"].metrics(MASTER_KEY).splitlines()
                         if line.startswith("fast_litellm_installed{") and line.endswith(" 1.0")]
            if len(installed) == WORKERS or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(installed) == WORKERS, installed
        assert "fast_litellm_" not in proxies["plain"].metrics(MASTER_KEY)
    finally:
        for proxy in proxies.values():
            proxy.stop()
        backend.close()
