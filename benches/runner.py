"""Times the reference workload in a process of its own and prints one JSON object of
per-round seconds. Every implementation is measured through this same runner (the published
wheel from its own virtualenv), alternating processes, so that they are compared alike."""

import json
import sys
import time

from pool_workloads import (
    ITERATIONS_PER_ROUND,
    THREADED_ITERATIONS_PER_ROUND,
    PythonLockPool,
    reference_iterations,
    threaded,
)


def rounds(fn, count):
    fn()  # warm up
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main():
    implementation, count = sys.argv[1], int(sys.argv[2])
    if implementation == "python":
        pool, version = PythonLockPool(), ""
    else:
        import fast_litellm

        pool, version = fast_litellm.SimpleConnectionPool("bench"), fast_litellm.__version__
    print(json.dumps({
        "version": version,
        "1 thread": rounds(lambda: reference_iterations(pool, ITERATIONS_PER_ROUND), count),
        "8 threads": rounds(lambda: threaded(pool, THREADED_ITERATIONS_PER_ROUND), 5),
    }))


if __name__ == "__main__":
    main()
