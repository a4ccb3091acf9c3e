"""LiteLLM end to end against the bundled local keep-alive server: plain LiteLLM (its async path
uses aiohttp) against LiteLLM with fast_litellm, each workload in processes of its own."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "demo"))

from local_server import LLMServer  # noqa: E402

PHASES = {"completion": "sequential completion", "acompletion": "acompletion, 64 concurrent",
          "stream": "sequential streaming completion", "astream": "streaming acompletion, 64 concurrent"}
REPEATS = 2


def run(phase, api_base, accelerated):
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if not accelerated:
        env["FAST_LITELLM_DISABLE"] = "1"
    out = subprocess.run([sys.executable, str(HERE / "litellm_runner.py"), phase, api_base], capture_output=True,
                         text=True, timeout=900, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_litellm_end_to_end(record_transport):
    server = LLMServer()
    try:
        for phase, label in PHASES.items():
            runs = {False: [], True: []}
            for _ in range(REPEATS):
                for accelerated in (False, True):
                    before = server.connections
                    figures = run(phase, f"{server.url}/v1", accelerated)
                    figures["connections"] = server.connections - before
                    runs[accelerated].append(figures)
            for accelerated, results in runs.items():
                merged = {k: statistics.median(r[k] for r in results) for k in results[0]}
                name = "LiteLLM with fast_litellm" if accelerated else "plain LiteLLM"
                record_transport("litellm", label, name, merged)
    finally:
        server.close()
