"""`make demo`: LiteLLM with and without fast_litellm, side by side.

By default it starts the bundled local OpenAI-compatible server (no API key, no network) and
runs a mixed workload through LiteLLM twice, in fresh processes: plain, then with
`import fast_litellm`. Then it prints requests, connections opened, latency, errors and the
pool's statistics.

    python demo/demo.py                                   # the embedded default
    python demo/demo.py --api-base https://api.openai.com/v1 --model openai/gpt-4o-mini \\
        --api-key-env OPENAI_API_KEY --requests 10        # the same workload on a real endpoint
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


# --- the workload, run in a child process -----------------------------------------------------


def progress(done: int, total: int, label: str) -> None:
    width = 30
    filled = width * done // total
    if done != total and filled == width * (done - 1) // total:
        return  # redraw only when the bar moves
    sys.stderr.write(f"\r  {label:<22} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def workload(args: argparse.Namespace) -> dict:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if args.accelerated:
        import fast_litellm  # noqa: F401  (before litellm: the documented way)
    import litellm

    call = {"model": args.model, "api_base": args.api_base, "max_tokens": 16,
            "api_key": os.environ.get(args.api_key_env, "sk-demo-no-key") if args.api_key_env else "sk-demo-no-key"}
    latencies: list[float] = []
    errors: list[str] = []
    n = args.requests
    label = "with fast_litellm" if args.accelerated else "plain LiteLLM"

    def timed_sync(stream: bool) -> None:
        start = time.perf_counter()
        try:
            messages = [{"role": "user", "content": "Say hello in one word."}]
            if stream:
                for _ in litellm.completion(messages=messages, stream=True, **call):
                    pass
            else:
                litellm.completion(messages=messages, **call)
            latencies.append(time.perf_counter() - start)
        except Exception as e:  # the report counts them; messages never hold the key
            errors.append(type(e).__name__)

    async def timed_async(stream: bool) -> None:
        start = time.perf_counter()
        try:
            messages = [{"role": "user", "content": "Say hello in one word."}]
            if stream:
                async for _ in await litellm.acompletion(messages=messages, stream=True, **call):
                    pass
            else:
                await litellm.acompletion(messages=messages, **call)
            latencies.append(time.perf_counter() - start)
        except Exception as e:
            errors.append(type(e).__name__)

    async def async_part(total: int) -> None:
        done = 0
        for stream in (False, True):
            for batch_start in range(0, n, args.concurrency):
                batch = min(args.concurrency, n - batch_start)
                await asyncio.gather(*[timed_async(stream) for _ in range(batch)])
                done += batch
                progress(3 * n + done, total, label)

    total = 5 * n
    start = time.perf_counter()
    for stream in (False, True):
        for i in range(n):
            timed_sync(stream)
            progress(i + 1 + (n if stream else 0), total, label)
    for i in range(n):  # a second sync pass: connections kept from the first get reused
        timed_sync(False)
        progress(2 * n + i + 1, total, label)
    asyncio.run(async_part(total))
    wall = time.perf_counter() - start
    report = {"requests": len(latencies) + len(errors), "errors": errors, "wall_s": wall,
              "p50_ms": statistics.median(latencies) * 1e3 if latencies else None,
              "p99_ms": sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1e3 if latencies else None}
    if args.accelerated:
        import fast_litellm

        status = fast_litellm.status()
        report["pool"] = status["pool"]
        report["hooks"] = status["hooks"]
        report["transport_requests"] = status["requests"].get("requests", 0)
    return report


# --- the driver -------------------------------------------------------------------------------


def run_child(args: argparse.Namespace, accelerated: bool, api_base: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--api-base", api_base, "--model", args.model,
           "--requests", str(args.requests), "--concurrency", str(args.concurrency)]
    if args.api_key_env:
        cmd += ["--api-key-env", args.api_key_env]
    if accelerated:
        cmd.append("--accelerated")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if not accelerated:
        env["FAST_LITELLM_DISABLE"] = "1"
    result = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"the {'accelerated' if accelerated else 'plain'} run failed")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-base", help="an OpenAI-compatible endpoint (default: the bundled local server)")
    parser.add_argument("--model", default="openai/demo-model")
    parser.add_argument("--api-key-env", help="the environment variable holding the API key")
    parser.add_argument("--requests", type=int, default=100, help="calls per phase (5 phases)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent async calls")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--accelerated", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(workload(args)))
        return

    local = None
    if args.api_base is None:
        sys.path.insert(0, str(HERE))
        from local_server import LLMServer

        local = LLMServer()
        api_base = f"{local.url}/v1"
        where = f"the bundled local OpenAI-compatible server ({local.url})"
    else:
        api_base = args.api_base
        where = "the endpoint given (connections counted by fast_litellm's pool only)"
    concurrent = min(args.concurrency, args.requests)
    print(f"LiteLLM against {where}: {args.requests} calls in each of 5 phases "
          f"(sync, sync streaming, sync again, async x{concurrent}, async streaming x{concurrent})\n")
    runs = {}
    for accelerated in (False, True):
        before = local.connections if local else None
        runs[accelerated] = run_child(args, accelerated, api_base)
        runs[accelerated]["connections"] = (local.connections - before) if local else None
    if local:
        local.close()
    plain, fast = runs[False], runs[True]
    if fast["connections"] is None:
        fast["connections"] = fast["pool"]["connections_created"]

    def cell(value: object, fmt: str = "{}") -> str:
        return "n/a" if value is None else fmt.format(value)

    rows = [
        ("requests", cell(plain["requests"]), cell(fast["requests"])),
        ("errors", cell(len(plain["errors"])), cell(len(fast["errors"]))),
        ("connections opened", cell(plain["connections"]), cell(fast["connections"])),
        ("latency p50 (ms)", cell(plain["p50_ms"], "{:.2f}"), cell(fast["p50_ms"], "{:.2f}")),
        ("latency p99 (ms)", cell(plain["p99_ms"], "{:.2f}"), cell(fast["p99_ms"], "{:.2f}")),
        ("wall time (s)", cell(plain["wall_s"], "{:.2f}"), cell(fast["wall_s"], "{:.2f}")),
    ]
    print(f"\n{'':<22}{'plain LiteLLM':>16}{'with fast_litellm':>20}")
    for name, a, b in rows:
        print(f"{name:<22}{a:>16}{b:>20}")
    pool = fast["pool"]
    print(f"\nfast_litellm: {fast['transport_requests']} requests through its transports; hooks: "
          f"{', '.join(sorted(fast['hooks']))}")
    print(f"pool: created {pool['connections_created']}, reused {pool['connections_reused']}, "
          f"now {pool['total_connections']} = active {pool['active_connections']} + idle {pool['idle_connections']}; "
          f"closed {sum(pool['connections_closed'].values())} {{"
          + ", ".join(f"{k}: {v}" for k, v in pool["connections_closed"].items() if v) + "}")
    for origin, counts in pool["endpoints"].items():
        print(f"  {origin}: {counts}")
    if plain["errors"] or fast["errors"]:
        print(f"\nerrors: plain {sorted(set(plain['errors']))}, with fast_litellm {sorted(set(fast['errors']))}")


if __name__ == "__main__":
    main()
