"""Collects the figures of one benchmark run; at its end, benches/report.py writes
docs/benchmarks.md and the charts."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import report  # noqa: E402

RESULTS = []  # (section, implementation, case, median µs, iqr µs)
TRANSPORTS = []  # (mode, case, transport, {rps, p50_ms, p99_ms, cpu_ms_per_request, requests, ...})
PROXY = []  # (phase, proxy, {rps, p50_ms, p99_ms, outcomes, connections, ...})
REAL_NETWORK = []  # (rtt ms, workload, client, {calls, p50_ms, p99_ms, connections, tls_full, tls_resumed})
PROXIED = []  # (mode, concurrency, transport, {rps, p50_ms, p99_ms, cpu_ms_per_request, requests, tunnels})
LONG_STREAMS = []  # (client, N streams, {cpu_us_per_event, rss_kb_per_stream, lateness..., connections, ...})
SERVER = {"note": "nginx from Debian (worker_processes 1), answering every request with a ~250-byte JSON body"}


@pytest.fixture
def record():
    """Records a pytest-benchmark result, per iteration of the round."""
    def add(section, implementation, case, benchmark, iterations):
        stats = benchmark.stats.stats
        RESULTS.append((section, implementation, case, stats.median / iterations * 1e6,
                        stats.iqr / iterations * 1e6))
    return add


def _appender(rows: list):
    """What a record_* fixture gives: a function that appends its arguments as one row."""
    return lambda *row: rows.append(row)


@pytest.fixture
def record_rows():
    """Records a result measured outside pytest-benchmark: (section, implementation, case,
    median µs, IQR µs)."""
    return _appender(RESULTS)


@pytest.fixture
def record_transport():
    return _appender(TRANSPORTS)


@pytest.fixture
def record_proxy():
    return _appender(PROXY)


@pytest.fixture
def record_real_network():
    return _appender(REAL_NETWORK)


@pytest.fixture
def record_proxied():
    return _appender(PROXIED)


@pytest.fixture
def record_long_streams():
    return _appender(LONG_STREAMS)


@pytest.fixture(scope="session")
def server_note():
    return SERVER


def pytest_sessionfinish(session, exitstatus):
    if exitstatus != 0:
        return
    if RESULTS or TRANSPORTS:
        path = report.write(RESULTS, TRANSPORTS, SERVER["note"], PROXY, REAL_NETWORK, PROXIED, LONG_STREAMS)
        print(f"\nwrote {path.relative_to(report.ROOT)} and its charts")
        return
    # A benchmark with a section of its own, run alone: only that section of the report changes.
    if REAL_NETWORK:
        path = report.replace_real_network_section(REAL_NETWORK)
        print(f"\nreplaced the real-network section of {path.relative_to(report.ROOT)}")
    if PROXIED:
        path = report.replace_proxied_section(PROXIED)
        print(f"\nreplaced the proxied-requests section of {path.relative_to(report.ROOT)}")
    if LONG_STREAMS:
        path = report.replace_long_streams_section(LONG_STREAMS)
        print(f"\nreplaced the long-streams section of {path.relative_to(report.ROOT)}")
    if PROXY:
        path = report.replace_proxy_section(PROXY)
        print(f"\nreplaced the LiteLLM Proxy section of {path.relative_to(report.ROOT)}")
