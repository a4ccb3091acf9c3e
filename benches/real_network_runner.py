"""One client's turn at the real-network workloads, in a process of its own: plain LiteLLM or
with fast_litellm (FAST_LITELLM_DISABLE decides), the server's CA from SSL_CERT_FILE.

usage: real_network_runner.py API_BASE WORKLOAD[,WORKLOAD...] [--calls N] [--bursts N] [--prewarm N]
  WORKLOAD: first (the process's first call: must come first) | completion | acompletion | stream |
            astream (N sequential calls each) | bursts (N bursts of 16 acompletion calls, each after
            2 s idle) | prewarm (fast_litellm.prewarm(API_BASE, connections=N), untimed)

After each workload it prints `RESULT {json}` and waits for a line on stdin: the parent reads the
server's counts in between, so that they can be told apart per workload.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import fast_litellm  # noqa: E402  (inert when FAST_LITELLM_DISABLE=1)
import litellm  # noqa: E402
from percentiles import nearest_rank  # noqa: E402

BURST = 16
IDLE_BEFORE_BURST = 2.0
MESSAGES = [{"role": "user", "content": "Say hello."}]


def sync_call(call, stream):
    start = time.perf_counter()
    if stream:
        for _ in litellm.completion(messages=MESSAGES, stream=True, **call):
            pass
    else:
        litellm.completion(messages=MESSAGES, **call)
    return time.perf_counter() - start


async def async_call(call, stream):
    start = time.perf_counter()
    if stream:
        async for _ in await litellm.acompletion(messages=MESSAGES, stream=True, **call):
            pass
    else:
        await litellm.acompletion(messages=MESSAGES, **call)
    return time.perf_counter() - start


async def sequential(call, stream, calls):
    return [await async_call(call, stream) for _ in range(calls)]


async def bursts(call, count):
    """Each burst's latencies, in order."""
    each = []
    for _ in range(count):
        await asyncio.sleep(IDLE_BEFORE_BURST)
        each.append(await asyncio.gather(*[async_call(call, False) for _ in range(BURST)]))
    return each


def p90(latencies):
    return nearest_rank(latencies, 90) * 1e3


def measure(workload, args, call, loop):
    if workload == "prewarm":
        return {"ready": fast_litellm.prewarm(args.api_base, connections=args.prewarm)}
    extra = {}
    if workload == "first":
        latencies = [sync_call(call, False)]
    elif workload in ("completion", "stream"):
        latencies = [sync_call(call, workload == "stream") for _ in range(args.calls)]
    elif workload in ("acompletion", "astream"):
        latencies = loop.run_until_complete(sequential(call, workload == "astream", args.calls))
    elif workload == "bursts":
        each = loop.run_until_complete(bursts(call, args.bursts))
        latencies = [t for burst in each for t in burst]
        # The first burst pays for the connections a burst needs, unless they were warmed.
        extra = {"first_p90_ms": p90(each[0]), "later_p90_ms": p90([t for burst in each[1:] for t in burst])}
    else:
        raise SystemExit(f"unknown workload {workload!r}")
    latencies.sort()
    return {"calls": len(latencies), "p50_ms": statistics.median(latencies) * 1e3,
            "p99_ms": nearest_rank(latencies, 99) * 1e3, **extra}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("api_base")
    parser.add_argument("workloads")
    parser.add_argument("--calls", type=int, default=16)
    parser.add_argument("--bursts", type=int, default=2)
    parser.add_argument("--prewarm", type=int, default=BURST)
    args = parser.parse_args()
    call = {"model": "openai/bench", "api_base": args.api_base, "api_key": "sk-bench", "max_tokens": 16}
    # One event loop for every async workload, as in an application: LiteLLM keeps its async
    # clients (and their connections) across calls, bound to the loop that made them.
    loop = asyncio.new_event_loop()
    try:
        for workload in args.workloads.split(","):
            figures = measure(workload, args, call, loop)
            print("RESULT " + json.dumps({"workload": workload, **figures}), flush=True)
            sys.stdin.readline()
    finally:
        loop.close()


if __name__ == "__main__":
    main()
