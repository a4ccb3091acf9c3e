"""Pool bookkeeping: the reference workload (5 endpoints, take then return), 1 and 8 threads,
fast_litellm against a plain threading.Lock pool and (when installed by `make bench`) the
published fast-litellm 0.1.10 wheel; and checkout cost against the number of idle connections."""

import json
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import report

from fast_litellm import SimpleConnectionPool
from pool_workloads import (
    ITERATIONS_PER_ROUND,
    THREADED_ITERATIONS_PER_ROUND,
    PythonLockPool,
    reference_iterations,
    threaded,
)

ROUNDS = 150
HERE = Path(__file__).parent
PUBLISHED_PYTHON = HERE.parent / ".venv-published" / "bin" / "python"
# Processes of one machine differ by up to ±25% here (placement, caches), so each
# implementation runs in several processes, alternating, and rounds are pooled.
PROCESSES = 3


def fast_pool():
    return SimpleConnectionPool(f"bench-{uuid.uuid4()}", reaper_interval=None)


IMPLEMENTATIONS = {"fast_litellm": fast_pool, "python threading.Lock pool": PythonLockPool}


def run_in_process(python, implementation):
    out = subprocess.run([str(python), str(HERE / "runner.py"), implementation, str(ROUNDS)], cwd=HERE,
                         capture_output=True, text=True, timeout=600, check=True).stdout
    return json.loads(out)


def test_reference_workload_process_per_implementation(record_rows):
    """fast_litellm, the plain Python pool and the published wheel, each in its own processes."""
    candidates = [("fast_litellm", sys.executable, "fast_litellm"),
                  ("python threading.Lock pool", sys.executable, "python")]
    if PUBLISHED_PYTHON.exists():
        candidates.append(("published fast-litellm 0.1.10 (PyPI wheel)", PUBLISHED_PYTHON, "fast_litellm"))
    times = {(label, case): [] for label, _, _ in candidates for case in ("1 thread", "8 threads")}
    for _ in range(PROCESSES):
        for label, python, implementation in candidates:
            data = run_in_process(python, implementation)
            for case, per_round in (("1 thread", ITERATIONS_PER_ROUND), ("8 threads", THREADED_ITERATIONS_PER_ROUND)):
                times[label, case] += [t / per_round * 1e6 for t in data[case]]
    for (label, case), values in times.items():
        q = statistics.quantiles(values, n=4)
        record_rows(report.POOL_SECTION, label, case,
                    statistics.median(values), q[2] - q[0])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("threads", [1, 8])
def test_reference_workload(benchmark, record, implementation, threads):
    pool = IMPLEMENTATIONS[implementation]()
    if threads == 1:
        per_round, rounds = ITERATIONS_PER_ROUND, ROUNDS
        run = lambda: reference_iterations(pool, per_round)  # noqa: E731
    else:
        per_round, rounds = THREADED_ITERATIONS_PER_ROUND, 5
        run = lambda: threaded(pool, per_round, threads)  # noqa: E731
    run()
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    record(report.POOL_INPROCESS_SECTION, implementation,
           f"{threads} thread{'s' if threads > 1 else ''}", benchmark, per_round)


@pytest.mark.parametrize("idle", [1, 100, 10_000])
def test_checkout_cost_against_idle_connections(benchmark, record, idle):
    pool = SimpleConnectionPool(f"bench-{uuid.uuid4()}", reaper_interval=None, max_connections=20_000,
                                max_connections_per_endpoint=20_000, idle_timeout=None, max_lifetime=None)
    endpoint = "https://api.openai.com"
    ids = [pool.get_connection(endpoint) for _ in range(idle)]
    for conn_id in ids:
        pool.return_connection(conn_id)
    assert pool.get_stats()["idle_connections"] == idle
    get, ret = pool.get_connection, pool.return_connection

    def run():
        for _ in range(ITERATIONS_PER_ROUND):
            ret(get(endpoint))

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=3)
    record(report.POOL_SIZE_SECTION, "fast_litellm", f"{idle} idle", benchmark,
           ITERATIONS_PER_ROUND)
