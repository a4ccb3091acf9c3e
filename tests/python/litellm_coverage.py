"""Drives each LiteLLM entry point of the coverage table (test_litellm_coverage.py) against a
server of its own, and prints one JSON line: per row, what the server counted (connections,
requests) and what fast_litellm's transports counted. Run as a script, in a process of its own:
fast_litellm's integration is process-wide. With FAST_LITELLM_TEST_LIBRARY=httpx2, `import httpx`
resolves to httpx2 (httpx2.alias_httpx(), first)."""

import asyncio
import json
import os
import sys
import time
from pathlib import Path

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "demo"))
if os.environ.get("FAST_LITELLM_TEST_LIBRARY") == "httpx2":
    import httpx2

    httpx2.alias_httpx()

import fast_litellm  # noqa: E402  (before litellm: the hooks go in as it loads)
import litellm  # noqa: E402

from servers import APIServer  # noqa: E402

CALLS = 3  # per row: pooled, they share one connection
KEY = "sk-test-PLANTED"
MESSAGES = [{"role": "user", "content": "hello"}]


def openai(url):
    return dict(api_base=url + "/v1", api_key=KEY)


def chat(provider, model):
    def call(url, stream, run):
        if provider == "anthropic":
            kw = dict(model=f"anthropic/{model}", api_base=url, api_key=KEY, max_tokens=20)
        elif provider == "azure":
            kw = dict(model=f"azure/{model}", api_base=url, api_key=KEY, api_version="2024-10-21")
        else:
            kw = dict(model=f"{provider}/{model}", **openai(url))
        return run("completion", messages=MESSAGES, stream=stream, **kw)
    return call


def simple(name, provider="openai", **arguments):
    def call(url, stream, run):
        return run(name, custom_llm_provider=provider, **arguments, **openai(url)) if provider_arg(name) \
            else run(name, **arguments, **openai(url))
    return call


def provider_arg(name):
    return name in ("file_list", "list_batches", "get_assistants", "list_fine_tuning_jobs")


# (entry point, provider family, streams, how to call it)
ROWS = [
    ("completion", "openai", (False, True), chat("openai", "gpt-test")),
    ("completion", "anthropic", (False, True), chat("anthropic", "claude-test")),
    ("completion", "azure", (False, True), chat("azure", "gpt-deployment")),
    ("completion", "hosted_vllm (OpenAI-compatible)", (False, True), chat("hosted_vllm", "llama-test")),
    ("embedding", "openai", (False,), simple("embedding", model="openai/text-embedding-3-small", input=["hi"])),
    ("moderation", "openai", (False,), simple("moderation", model="openai/omni-moderation-latest", input="hi")),
    ("image_generation", "openai", (False,), simple("image_generation", model="openai/dall-e-3", prompt="a cat")),
    ("speech", "openai", (False,), simple("speech", model="openai/tts-1", voice="alloy", input="hi")),
    ("responses", "openai", (False,), simple("responses", model="openai/gpt-test", input="hi")),
    ("file_list", "openai", (False,), simple("file_list")),
    ("list_batches", "openai", (False,), simple("list_batches")),
    ("get_assistants", "openai", (False,), simple("get_assistants")),
    ("list_fine_tuning_jobs", "openai", (False,), simple("list_fine_tuning_jobs")),
]


def consume(result, stream):
    """Reads a streamed answer to its end, as a caller would."""
    if stream:
        for _ in result:
            pass
        settle()


def settle():
    """Waits (at most 1 s) until no connection of the default pool is in use. The openai SDK
    closes a sync stream at `data: [DONE]`, before the body's last chunk: the connection goes
    back to the pool once fast_litellm's background drain has read it, a few ms later. A call
    made in that window would open a second connection, which says nothing about whether calls
    go through the pool; real calls are further apart than a loopback drain."""
    if fast_litellm.status()["installed"]:
        deadline = time.monotonic() + 1.0
        while fast_litellm.get_connection_pool_stats()["active_connections"] and time.monotonic() < deadline:
            time.sleep(0.002)


async def aconsume(result, stream):
    if stream:
        async for _ in result:
            pass
        # The async twin of settle(), for both columns: a stream's connection goes back to its
        # pool in a callback a moment after the last chunk (aiohttp's release, our drain); a
        # call made before the loop ran it opens another connection, whatever the pool. Seen
        # under load: plain LiteLLM's async anthropic stream counted "one per call" once.
        await asyncio.sleep(0.05)


def our_requests():
    return fast_litellm.status()["requests"].get("requests", 0)


def measure(call, stream, mode):
    with APIServer() as server:
        before = our_requests()
        if mode == "sync":
            for _ in range(CALLS):
                consume(call(server.url, stream, lambda name, **kw: getattr(litellm, name)(**kw)), stream)
        else:
            async def calls():
                for _ in range(CALLS):
                    await aconsume(await call(server.url, stream, lambda name, **kw: getattr(litellm, "a" + name)(**kw)),
                                   stream)
            asyncio.run(calls())
        return {"connections": server.connections, "requests": server.requests,
                "ours": our_requests() - before, "errors": list(server.errors)}


def main():
    """Every row, or with `--only ENTRY --mode MODE --calls N` one entry point N times."""
    global CALLS
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    CALLS = int(args.get("--calls", CALLS))
    results = []
    for entry, provider, streams, call in ROWS:
        if args.get("--only", entry) != entry:
            continue
        for stream in streams:
            for mode in ("sync", "async"):
                if args.get("--mode", mode) != mode:
                    continue
                try:
                    outcome = measure(call, stream, mode)
                except Exception as exc:  # reported as a row that failed, with its reason
                    outcome = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
                results.append(dict(entry=entry, provider=provider, stream=stream, mode=mode, calls=CALLS, **outcome))
    print(json.dumps({"rows": results, "library": fast_litellm.HTTPTransport.library.name,
                      "hooks": fast_litellm.status()["hooks"]}))


if __name__ == "__main__":
    main()
