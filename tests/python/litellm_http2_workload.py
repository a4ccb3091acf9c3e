"""LiteLLM against tests/python/h2server.py, in a process of its own, for test_litellm_http2.py:
openai/ and anthropic/ models, sync and async, streaming and not. Prints a JSON report on its last
line: each call's reply, the pool's endpoints while two streams are open, fast_litellm.status(),
and whether LiteLLM itself counts HTTP/2 as asked for (its http2_enabled()).

usage: litellm_http2_workload.py URL [HOW]
  URL: the server (https://127.0.0.1:PORT); its CA comes from the environment (SSL_CERT_FILE)
  HOW: env (default: HTTP/2, if wanted, from LITELLM_HTTP2) | attribute (litellm.http2 = True,
       set in code after the import)

Each provider makes, in this order: 4 sync calls, 2 sync streaming calls, then in one event loop 4
concurrent calls and 2 concurrent streaming calls, each with its own tag (sync-0, sync-stream-0,
async-0, async-stream-0, ...) in its message "hello TAG"; the server's reply is "echo: hello TAG".
"""

import asyncio
import json
import os
import sys
import time

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import fast_litellm  # noqa: E402  (first: LiteLLM is hooked as it loads)
import litellm  # noqa: E402

url = sys.argv[1]
how = sys.argv[2] if len(sys.argv) > 2 else "env"
if how == "attribute":
    litellm.http2 = True

PROVIDERS = {
    "openai": {"model": "openai/gpt-test", "api_base": f"{url}/v1"},
    "anthropic": {"model": "anthropic/claude-test", "api_base": url},
}
SYNC, SYNC_STREAMING, ASYNC, ASYNC_STREAMING = 4, 2, 4, 2
CALLS_PER_PROVIDER = SYNC + SYNC_STREAMING + ASYNC + ASYNC_STREAMING


def args(provider):
    return {**PROVIDERS[provider], "api_key": "sk-test-h2", "max_tokens": 20}


def messages(tag):
    return [{"role": "user", "content": f"hello {tag}"}]


def text(response):
    return response.choices[0].message.content


def collect(stream):
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream)


async def acollect(stream):
    return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])


def sync_calls(provider):
    """{tag: reply}; tags are unique per provider and kind, so the server's log can be matched."""
    replies = {}
    for i in range(SYNC):
        replies[f"sync-{i}"] = text(litellm.completion(messages=messages(f"sync-{i}"), **args(provider)))
    for i in range(SYNC_STREAMING):
        tag = f"sync-stream-{i}"
        replies[tag] = collect(litellm.completion(messages=messages(tag), stream=True, **args(provider)))
    return replies


async def async_calls(provider):
    tags = [f"async-{i}" for i in range(ASYNC)]
    responses = await asyncio.gather(*[litellm.acompletion(messages=messages(t), **args(provider)) for t in tags])
    replies = {t: text(r) for t, r in zip(tags, responses)}

    # The streams are opened together, and the pool looked at while they are open (the server
    # holds each one open before its last event), then read.
    tags = [f"async-stream-{i}" for i in range(ASYNC_STREAMING)]
    streams = await asyncio.gather(*[litellm.acompletion(messages=messages(t), stream=True, **args(provider))
                                     for t in tags])
    report["pool_while_streaming"][provider] = fast_litellm.get_connection_pool_stats()["endpoints"]
    replies.update(zip(tags, await asyncio.gather(*[acollect(s) for s in streams])))
    return replies


report = {"replies": {}, "errors": {}, "pool_while_streaming": {}}
for provider in PROVIDERS:
    try:
        report["replies"][provider] = sync_calls(provider)
        report["replies"][provider].update(asyncio.run(async_calls(provider)))
    except Exception as exc:  # reported, so the test shows the other provider's result too
        report["errors"][provider] = f"{type(exc).__name__}: {exc}"
report["calls"] = {"per_provider": CALLS_PER_PROVIDER, "streaming_per_provider": SYNC_STREAMING + ASYNC_STREAMING}


def busy():
    """Connections checked out and streams in use, over every endpoint of the default pool."""
    endpoints = fast_litellm.get_connection_pool_stats()["endpoints"].values()
    return sum(e["active"] for e in endpoints), sum(e["streams_in_use"] for e in endpoints)


# LiteLLM's Anthropic stream iterator stops at message_delta and leaves the response open: its
# connection (HTTP/1.1) or stream (HTTP/2) is released once the rest of the body has come (the
# server sends message_stop after its pause). The pool is looked at once it has settled.
deadline = time.monotonic() + 5
while busy() != (0, 0) and time.monotonic() < deadline:
    time.sleep(0.02)
report["busy_after_calls"] = busy()
report["status"] = fast_litellm.status()
# LiteLLM's own verdict on these settings, for comparison with what the server saw.
from litellm.llms.custom_httpx.http_handler import http2_enabled  # noqa: E402

report["litellm_http2_enabled"] = http2_enabled()
print(json.dumps(report, default=repr))
