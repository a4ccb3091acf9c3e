"""One LiteLLM workload in a process of its own, plain or with fast_litellm (FAST_LITELLM_DISABLE
decides); prints requests/s and latency percentiles as JSON.

usage: litellm_runner.py PHASE API_BASE
  PHASE: completion (sequential) | acompletion (64 concurrent) | stream (sequential, sync) |
         astream (64 concurrent)
"""

import asyncio
import json
import os
import statistics
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import fast_litellm  # noqa: E402,F401  (inert when FAST_LITELLM_DISABLE=1)
import litellm  # noqa: E402
from percentiles import nearest_rank  # noqa: E402

PHASE, API_BASE = sys.argv[1], sys.argv[2]
CALL = {"model": "openai/bench", "api_base": API_BASE, "api_key": "sk-bench", "max_tokens": 16}
MESSAGES = [{"role": "user", "content": "Say hello."}]
CONCURRENCY = 64
COUNTS = {"completion": 200, "acompletion": 640, "stream": 100, "astream": 320}
latencies = []


def sync_call(stream):
    start = time.perf_counter()
    if stream:
        for _ in litellm.completion(messages=MESSAGES, stream=True, **CALL):
            pass
    else:
        litellm.completion(messages=MESSAGES, **CALL)
    latencies.append(time.perf_counter() - start)


async def async_call(stream):
    start = time.perf_counter()
    if stream:
        async for _ in await litellm.acompletion(messages=MESSAGES, stream=True, **CALL):
            pass
    else:
        await litellm.acompletion(messages=MESSAGES, **CALL)
    latencies.append(time.perf_counter() - start)


async def concurrent(stream, total):
    async def worker():
        for _ in range(total // CONCURRENCY):
            await async_call(stream)

    await asyncio.gather(*[worker() for _ in range(CONCURRENCY)])


def main():
    total = COUNTS[PHASE]
    wall = time.perf_counter()
    if PHASE in ("completion", "stream"):
        for _ in range(total):
            sync_call(PHASE == "stream")
    else:
        asyncio.run(concurrent(PHASE == "astream", total))
    wall = time.perf_counter() - wall
    latencies.sort()
    print(json.dumps({"requests": len(latencies), "rps": len(latencies) / wall,
                      "p50_ms": statistics.median(latencies) * 1e3,
                      "p99_ms": nearest_rank(latencies, 99) * 1e3}))


if __name__ == "__main__":
    main()
