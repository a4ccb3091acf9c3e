"""The pool-bookkeeping workloads, shared by the pytest-benchmark suite and by the runner that
measures the published fast-litellm wheel in its own virtualenv."""

import threading
import uuid

ENDPOINTS = [
    "https://api.openai.com",
    "https://api.anthropic.com",
    "https://api.cohere.ai",
    "https://generativelanguage.googleapis.com",
    "https://api.mistral.ai",
]
ITERATIONS_PER_ROUND = 2000
THREADS = 8
# Enough per round that starting 8 threads (about 1 ms here) is a few % of the round.
THREADED_ITERATIONS_PER_ROUND = 16_000


def reference_iterations(pool, n):
    """The reference benchmark's workload: one iteration takes a connection from each of the
    5 endpoints, then returns all 5."""
    get, ret = pool.get_connection, pool.return_connection
    e0, e1, e2, e3, e4 = ENDPOINTS
    for _ in range(n):
        a = get(e0)
        b = get(e1)
        c = get(e2)
        d = get(e3)
        e = get(e4)
        ret(a)
        ret(b)
        ret(c)
        ret(d)
        ret(e)


def threaded(pool, total_iterations, threads=THREADS):
    """`total_iterations` split over `threads` threads, all started together."""
    start = threading.Barrier(threads + 1)

    def worker():
        start.wait()
        reference_iterations(pool, total_iterations // threads)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    for w in workers:
        w.join()


class PythonLockPool:
    """What one writes in plain Python: one threading.Lock around dicts, the same rules
    (most recently used idle connection first, per-endpoint and overall limits)."""

    def __init__(self, max_connections=1000, max_connections_per_endpoint=500):
        self._lock = threading.Lock()
        self._idle = {}
        self._active = {}
        self._per_endpoint = {}
        self._max = max_connections
        self._max_per_endpoint = max_connections_per_endpoint

    def get_connection(self, endpoint):
        with self._lock:
            idle = self._idle.get(endpoint)
            if idle:
                conn_id = idle.pop()
            elif (
                len(self._active) + sum(map(len, self._idle.values())) >= self._max
                or self._per_endpoint.get(endpoint, 0) >= self._max_per_endpoint
            ):
                return None
            else:
                conn_id = str(uuid.uuid4())
                self._per_endpoint[endpoint] = self._per_endpoint.get(endpoint, 0) + 1
            self._active[conn_id] = endpoint
            return conn_id

    def return_connection(self, conn_id):
        with self._lock:
            endpoint = self._active.pop(conn_id, None)
            if endpoint is not None:
                self._idle.setdefault(endpoint, []).append(conn_id)
