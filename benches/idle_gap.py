"""What the idle policy costs and saves: LiteLLM under load (64 concurrent calls), a quiet gap,
then a burst of 64 streaming calls, as a LiteLLM Proxy sees traffic. The server counts the
connections the burst had to open. Plain LiteLLM (aiohttp) against fast_litellm with several
idle timeouts; every case in its own process against its own server, all cases at once (the
gaps are sleeps).

    .venv/bin/python benches/idle_gap.py [--gaps 5 20 45] [--timeouts 15 90]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "demo"))

from local_server import LLMServer  # noqa: E402

CHILD = textwrap.dedent("""
    import asyncio, json, sys
    import litellm

    api_base, gap = sys.argv[1], float(sys.argv[2])

    async def call(stream):
        kwargs = dict(model="openai/m", api_base=api_base, api_key="sk-test",
                      messages=[{"role": "user", "content": "hi"}])
        if stream:
            async for _ in await litellm.acompletion(stream=True, **kwargs):
                pass
        else:
            await litellm.acompletion(**kwargs)

    async def main():
        for _ in range(3):
            await asyncio.gather(*[call(False) for _ in range(64)])
        print("loaded", flush=True)
        sys.stdin.readline()
        await asyncio.sleep(gap)
        print("burst", flush=True)
        sys.stdin.readline()
        await asyncio.gather(*[call(True) for _ in range(64)])
        print("done", flush=True)

    asyncio.run(main())
""")


def run_case(variant: str, timeout: float | None, gap: float, results: dict) -> None:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    code = CHILD
    if variant == "plain":
        env["FAST_LITELLM_DISABLE"] = "1"
    else:
        env["FAST_LITELLM_IDLE_TIMEOUT"] = str(timeout)
        code = "import fast_litellm\n" + CHILD
    with LLMServer() as server, subprocess.Popen(
        [sys.executable, "-c", code, f"{server.url}/v1", str(gap)], env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as child:
        counts = []
        for expected in ("loaded", "burst", "done"):
            line = child.stdout.readline().strip()
            if line != expected:
                results[(variant, timeout, gap)] = {"error": child.stderr.read()[-2000:]}
                child.kill()
                return
            counts.append(server.connections)
            if expected != "done":
                child.stdin.write("\n")
                child.stdin.flush()
        child.wait(timeout=60)
    results[(variant, timeout, gap)] = {"under_load": counts[0], "opened_by_burst": counts[2] - counts[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gaps", type=float, nargs="+", default=[5, 20, 45])
    parser.add_argument("--timeouts", type=float, nargs="+", default=[15, 90])
    args = parser.parse_args()
    cases = [("plain", None, g) for g in args.gaps] + [("fast_litellm", t, g) for t in args.timeouts for g in args.gaps]
    results: dict = {}
    threads = [threading.Thread(target=run_case, args=(*case, results)) for case in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{'case':<28}{'gap s':>7}{'conns under load':>18}{'opened by burst':>17}")
    for variant, timeout, gap in cases:
        r = results[(variant, timeout, gap)]
        name = variant if timeout is None else f"{variant} idle {timeout:g} s"
        if "error" in r:
            print(f"{name:<28}{gap:>7g}  failed: {r['error'][-300:]}")
        else:
            print(f"{name:<28}{gap:>7g}{r['under_load']:>18}{r['opened_by_burst']:>17}")
    print(json.dumps({f"{v}|{t}|{g}": r for (v, t, g), r in results.items()}))


if __name__ == "__main__":
    main()
