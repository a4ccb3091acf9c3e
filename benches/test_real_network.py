"""LiteLLM on a real network, plain against fast_litellm: the bundled server over TLS behind
demo/relay.py, which adds the round-trip time of a wide-area link (0, 20 and 80 ms), and counts on
the server side the connections and TLS handshakes (full and resumed) each workload cost.

Each client runs benches/real_network_runner.py in processes of its own, alternating plain, fast,
fast + prewarm; figures are the medians of those processes. Run alone, it replaces only its own
section of docs/benchmarks.md (benches/conftest.py); `make bench` writes it with the rest.
REAL_NETWORK_CALLS, REAL_NETWORK_BURSTS and REAL_NETWORK_REPEATS scale it (a short check run).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "demo"))

from local_server import LLMServer, throwaway_tls  # noqa: E402
from percentiles import nearest_rank  # noqa: E402
from relay import Relay  # noqa: E402

RTTS_MS = (0, 20, 80)
CALLS = int(os.environ.get("REAL_NETWORK_CALLS", "16"))  # per sequential workload and process
BURSTS = int(os.environ.get("REAL_NETWORK_BURSTS", "3"))  # per process
REPEATS = int(os.environ.get("REAL_NETWORK_REPEATS", "3"))  # processes per client and RTT
PREWARM = 16
SEQUENTIAL = ["completion", "acompletion", "stream", "astream"]
# client: (label, workloads in process order, disabled)
CLIENTS = {
    "plain": ("plain LiteLLM", ["first", *SEQUENTIAL, "bursts"], True),
    "fast": ("with fast_litellm", ["first", *SEQUENTIAL, "bursts"], False),
    "prewarm": ("with fast_litellm + prewarm", ["prewarm", "first", "prewarm", "bursts"], False),
}
COUNTS = ("connections", "tls_full", "tls_resumed")
WORKLOADS = {
    "prewarm": f"prewarm({PREWARM} connections), untimed",
    "first": "first call of a process (sync completion)",
    "completion": f"{CALLS} sync completions",
    "acompletion": f"{CALLS} async completions",
    "stream": f"{CALLS} sync streaming completions",
    "astream": f"{CALLS} async streaming completions",
    "bursts": f"{BURSTS} bursts of 16 async completions, 2 s idle before each",
}


def server_counts(server):
    with server.lock:
        return {"connections": server.connections, "tls_full": server.tls_handshakes_full,
                "tls_resumed": server.tls_handshakes_resumed}


def run(client, relay, server, ca_path):
    """One process of that client: {workload: figures, with the server's counts during it}."""
    _, workloads, disabled = CLIENTS[client]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "SSL_CERT_FILE": ca_path}
    if disabled:
        env["FAST_LITELLM_DISABLE"] = "1"
    cmd = [sys.executable, str(HERE / "real_network_runner.py"), f"{relay.url('https')}/v1", ",".join(workloads),
           "--calls", str(CALLS), "--bursts", str(BURSTS), "--prewarm", str(PREWARM)]
    figures = {}
    with tempfile.TemporaryFile("w+") as stderr, \
            subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                             env=env) as child:
        before = server_counts(server)
        for line in child.stdout:
            if not line.startswith("RESULT "):
                continue  # LiteLLM's own prints
            result = json.loads(line[len("RESULT "):])
            # A handshake the client has finished may still be on its way to the server (its
            # last message crosses the relay): let it arrive before counting.
            time.sleep(relay.rtt + 0.05)
            after = server_counts(server)
            delta = {k: after[k] - before[k] for k in COUNTS}
            before = after
            workload = result.pop("workload")
            if workload in figures:  # prewarm twice: one row for both
                delta = {k: figures[workload][k] + delta[k] for k in COUNTS}
                result["ready"] = [*figures[workload]["ready"], result["ready"]]
            elif workload == "prewarm":
                result["ready"] = [result["ready"]]
            figures[workload] = {**result, **delta}
            child.stdin.write("\n")
            child.stdin.flush()
        child.stdin.close()
        if child.wait(timeout=120) != 0:
            stderr.seek(0)
            raise AssertionError(f"{client} runner failed:\n{stderr.read()[-4000:]}")
    return figures


def merge(workload, runs):
    """The medians of one client's processes; the first call: the median and the slowest."""
    merged = {"processes": len(runs), **{k: statistics.median(r[k] for r in runs) for k in COUNTS}}
    if workload == "prewarm":
        return {**merged, "ready": runs[0]["ready"]}
    if workload == "first":
        firsts = sorted(r["p50_ms"] for r in runs)
        return {**merged, "calls": len(runs), "p50_ms": statistics.median(firsts), "p99_ms": nearest_rank(firsts, 99)}
    keys = ("p50_ms", "p99_ms", "first_p90_ms", "later_p90_ms") if workload == "bursts" else ("p50_ms", "p99_ms")
    return {**merged, "calls": runs[0]["calls"], **{k: statistics.median(r[k] for r in runs) for k in keys}}


def test_litellm_on_a_real_network(record_real_network, tmp_path):
    context, ca_path = throwaway_tls(tmp_path)
    with LLMServer(tls=context) as server:
        for rtt_ms in RTTS_MS:
            with Relay(server.port, rtt_ms / 1000) as relay:
                runs = {client: [] for client in CLIENTS}
                for _ in range(REPEATS):
                    for client in CLIENTS:  # alternating: noise on the machine falls on all alike
                        runs[client].append(run(client, relay, server, ca_path))
            for workload, label in WORKLOADS.items():
                for client, (name, workloads, _) in CLIENTS.items():
                    if workload in workloads:
                        record_real_network(rtt_ms, label, name, merge(workload, [r[workload] for r in runs[client]]))
