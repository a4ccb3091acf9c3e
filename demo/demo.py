"""`make demo`: LiteLLM with and without fast_litellm, side by side.

By default it starts the bundled local OpenAI-compatible server over TLS (a throw-away CA, given
to LiteLLM as SSL_CERT_FILE; no API key, no network) behind a relay that adds the round-trip time
of a real network (40 ms), and runs a mixed workload through LiteLLM twice, in fresh processes:
plain, then with `import fast_litellm`. Then it prints requests, connections opened and TLS
handshakes (counted by the server), latency, errors and the pool's statistics.

    python demo/demo.py                                   # the embedded default, 40 ms round trips
    python demo/demo.py --rtt 0                           # straight to the server on loopback, no relay
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
import tempfile
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
    latencies: dict[str, list[float]] = {}  # per phase, in order
    errors: list[str] = []
    n = args.requests
    concurrent = min(args.concurrency, n)
    label = "with fast_litellm" if args.accelerated else "plain LiteLLM"

    def timed_sync(phase: str, stream: bool) -> None:
        start = time.perf_counter()
        try:
            messages = [{"role": "user", "content": "Say hello in one word."}]
            if stream:
                for _ in litellm.completion(messages=messages, stream=True, **call):
                    pass
            else:
                litellm.completion(messages=messages, **call)
            latencies.setdefault(phase, []).append(time.perf_counter() - start)
        except Exception as e:  # the report counts them; messages never hold the key
            errors.append(type(e).__name__)

    async def timed_async(phase: str, stream: bool) -> None:
        start = time.perf_counter()
        try:
            messages = [{"role": "user", "content": "Say hello in one word."}]
            if stream:
                async for _ in await litellm.acompletion(messages=messages, stream=True, **call):
                    pass
            else:
                await litellm.acompletion(messages=messages, **call)
            latencies.setdefault(phase, []).append(time.perf_counter() - start)
        except Exception as e:
            errors.append(type(e).__name__)

    async def async_part(total: int) -> None:
        done = 0
        for phase, stream in ((f"async x{concurrent}", False), (f"async streaming x{concurrent}", True)):
            for batch_start in range(0, n, concurrent):
                batch = min(concurrent, n - batch_start)
                await asyncio.gather(*[timed_async(phase, stream) for _ in range(batch)])
                done += batch
                progress(3 * n + done, total, label)

    total = 5 * n
    start = time.perf_counter()
    for i, (phase, stream) in enumerate((("sync", False), ("sync streaming", True),
                                         ("sync again", False))):  # again: connections kept get reused
        for j in range(n):
            timed_sync(phase, stream)
            progress(i * n + j + 1, total, label)
    asyncio.run(async_part(total))
    wall = time.perf_counter() - start
    every = sorted(t for phase in latencies.values() for t in phase)
    report = {"requests": len(every) + len(errors), "errors": errors, "wall_s": wall,
              "p50_ms": statistics.median(every) * 1e3 if every else None,
              "p99_ms": every[int(len(every) * 0.99) - 1] * 1e3 if every else None,
              "phases_p50_ms": {phase: statistics.median(ts) * 1e3 for phase, ts in latencies.items()}}
    if args.accelerated:
        import fast_litellm

        status = fast_litellm.status()
        report["pool"] = status["pool"]
        report["hooks"] = status["hooks"]
        report["transport_requests"] = status["requests"].get("requests", 0)
    return report


# --- the driver -------------------------------------------------------------------------------


def run_child(args: argparse.Namespace, accelerated: bool, api_base: str, ca_path: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--api-base", api_base, "--model", args.model,
           "--requests", str(args.requests), "--concurrency", str(args.concurrency)]
    if args.api_key_env:
        cmd += ["--api-key-env", args.api_key_env]
    if accelerated:
        cmd.append("--accelerated")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if ca_path:
        env["SSL_CERT_FILE"] = ca_path  # as a user trusts a private CA
    if not accelerated:
        env["FAST_LITELLM_DISABLE"] = "1"
    result = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"the {'accelerated' if accelerated else 'plain'} run failed")
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_local(rtt_ms: float, directory: str) -> tuple[object, object, str | None, str]:
    """The bundled server (over TLS when trustme is there) and, for an RTT, the relay in front of
    it: (server, relay or None, CA file or None, what the header line says)."""
    sys.path.insert(0, str(HERE))
    from local_server import LLMServer, throwaway_tls
    from relay import Relay

    try:
        tls, ca_path = throwaway_tls(directory)
        over = "over TLS (a throw-away CA as SSL_CERT_FILE)"
    except ImportError:
        print("note: TLS needs the `trustme` package (`make venv` installs it; or `pip install trustme`): "
              "serving plain HTTP instead\n")
        tls, ca_path, over = None, None, "over plain HTTP"
    server = LLMServer(tls=tls)
    relay = Relay(server.port, rtt_ms / 1000) if rtt_ms > 0 else None
    through = f"through a relay adding {rtt_ms:g} ms round trips" if relay else "on loopback, no added latency"
    return server, relay, ca_path, f"the bundled local OpenAI-compatible server {over}, {through}"


def server_counts(server) -> dict:
    with server.lock:
        return {"connections": server.connections, "tls_full": server.tls_handshakes_full,
                "tls_resumed": server.tls_handshakes_resumed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-base", help="an OpenAI-compatible endpoint (default: the bundled local server)")
    parser.add_argument("--model", default="openai/demo-model")
    parser.add_argument("--api-key-env", help="the environment variable holding the API key")
    parser.add_argument("--rtt", type=float, default=40.0,
                        help="round-trip time (ms) added in front of the bundled server (default 40; 0: plain "
                             "loopback, no relay); not used with --api-base")
    parser.add_argument("--requests", type=int,
                        help="calls per phase (5 phases; default 100, or 32 with an added round-trip time)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent async calls")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--accelerated", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.requests is None:  # every round trip costs --rtt: fewer calls make the same point
        args.requests = 32 if args.api_base is None and args.rtt > 0 else 100
    if args.child:
        print(json.dumps(workload(args)))
        return

    with tempfile.TemporaryDirectory(prefix="fast-litellm-demo-") as directory:
        server = relay = ca_path = None
        if args.api_base is None:
            server, relay, ca_path, where = start_local(args.rtt, directory)
            api_base = f"{'https' if server.tls else 'http'}://127.0.0.1:{(relay or server).port}/v1"
        else:
            api_base = args.api_base
            where = "the endpoint given (connections counted by fast_litellm's pool only)"
        concurrent = min(args.concurrency, args.requests)
        print(f"LiteLLM against {where}: {args.requests} calls in each of 5 phases "
              f"(sync, sync streaming, sync again, async x{concurrent}, async streaming x{concurrent})\n")
        runs = {}
        try:
            for accelerated in (False, True):
                before = server_counts(server) if server else None
                runs[accelerated] = run_child(args, accelerated, api_base, ca_path)
                after = server_counts(server) if server else None
                runs[accelerated].update({k: after[k] - before[k] if server else None for k in
                                          ("connections", "tls_full", "tls_resumed")})
        finally:
            if relay:
                relay.close()
            if server:
                server.close()
    plain, fast = runs[False], runs[True]
    if fast["connections"] is None:
        fast["connections"] = fast["pool"]["connections_created"]

    def cell(value: object, fmt: str = "{}") -> str:
        return "n/a" if value is None else fmt.format(value)

    def handshakes(run: dict) -> str:
        return f"{run['tls_full']} / {run['tls_resumed']}" if server and server.tls else "n/a"

    rows = [
        ("requests", cell(plain["requests"]), cell(fast["requests"])),
        ("errors", cell(len(plain["errors"])), cell(len(fast["errors"]))),
        ("connections opened", cell(plain["connections"]), cell(fast["connections"])),
        ("TLS handshakes full / resumed", handshakes(plain), handshakes(fast)),
        ("latency p50 (ms)", cell(plain["p50_ms"], "{:.2f}"), cell(fast["p50_ms"], "{:.2f}")),
        ("latency p99 (ms)", cell(plain["p99_ms"], "{:.2f}"), cell(fast["p99_ms"], "{:.2f}")),
        ("wall time (s)", cell(plain["wall_s"], "{:.2f}"), cell(fast["wall_s"], "{:.2f}")),
        ("p50 per phase (ms):", "", ""),
    ]
    for phase in dict.fromkeys([*plain["phases_p50_ms"], *fast["phases_p50_ms"]]):
        rows.append((f"  {phase}", cell(plain["phases_p50_ms"].get(phase), "{:.2f}"),
                     cell(fast["phases_p50_ms"].get(phase), "{:.2f}")))
    print(f"\n{'':<30}{'plain LiteLLM':>16}{'with fast_litellm':>20}")
    for name, a, b in rows:
        print(f"{name:<30}{a:>16}{b:>20}".rstrip())
    pool = fast["pool"]
    print(f"\nfast_litellm: {fast['transport_requests']} requests through its transports; hooks: "
          f"{', '.join(sorted(fast['hooks']))}")
    print(f"pool: created {pool['connections_created']}, reused {pool['connections_reused']}, "
          f"now {pool['total_connections']} = active {pool['active_connections']} + idle {pool['idle_connections']}; "
          f"closed {sum(pool['connections_closed'].values())} {{"
          + ", ".join(f"{k}: {v}" for k, v in pool["connections_closed"].items() if v) + "}")
    for origin, e in pool["endpoints"].items():
        connect = e["connect_seconds"]
        mean = f"{connect['sum'] / connect['count'] * 1e3:.1f} ms" if connect["count"] else "n/a"
        print(f"  {origin}: {e['total']} connections ({e['http1_connections']} HTTP/1.1, {e['http2_connections']} HTTP/2), "
              f"TLS handshakes {e['tls_handshakes_full']} full / {e['tls_handshakes_resumed']} resumed, "
              f"mean connect time {mean}")
    if plain["errors"] or fast["errors"]:
        print(f"\nerrors: plain {sorted(set(plain['errors']))}, with fast_litellm {sorted(set(fast['errors']))}")


if __name__ == "__main__":
    main()
