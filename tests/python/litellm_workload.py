"""Runs LiteLLM against a test server in a process of its own (the integration is process-wide)
and prints a JSON report: what each call returned, the integration's status, the pool's stats.

usage: litellm_workload.py ORDER PROVIDER URL [PHASES]
  ORDER: before (import fast_litellm first), after (import litellm first), uninstall (install,
         then uninstall), none (plain LiteLLM, fast_litellm never imported)
  PROVIDER: openai | anthropic
  PHASES: all (default) | streaming (20 sync, then 20 async streaming calls) | quick
"""

import asyncio
import json
import os
import sys

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

order, provider, url = sys.argv[1], sys.argv[2], sys.argv[3]
phases = sys.argv[4] if len(sys.argv) > 4 else "all"


def hook_points():
    """What fast_litellm's hooks replace, as LiteLLM has it now."""
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler

    points = {name: AsyncHTTPHandler.__dict__[name] for name in ("create_async_transport", "_create_async_transport")}
    points["_create_sync_transport"] = HTTPHandler.__dict__["_create_sync_transport"]
    points.update({name: getattr(litellm, name, None) for name in ("client_session", "aclient_session")})
    return points


originals = {}
if order == "before":
    import fast_litellm  # noqa: E402
    import litellm  # noqa: E402
elif order == "after":
    import litellm  # noqa: E402
    import fast_litellm  # noqa: E402
elif order == "uninstall":
    import litellm  # noqa: E402

    # Recorded before fast_litellm is imported, then compared with what uninstall() leaves.
    originals = hook_points()
    import fast_litellm  # noqa: E402

    installed = hook_points()
    assert all(installed[name] is not originals[name] for name in originals), "the hooks were not installed"
    fast_litellm.uninstall()
else:
    import litellm  # noqa: E402

    fast_litellm = None

if provider == "openai":
    MODEL, BASE = "openai/gpt-test", f"{url}/v1"
else:
    MODEL, BASE = "anthropic/claude-test", url
ARGS = {"model": MODEL, "api_base": BASE, "api_key": "sk-test-PLANTED", "max_tokens": 20}


def messages(i):
    return [{"role": "user", "content": f"hello {i}"}]


def text(response):
    return response.choices[0].message.content


def collect(stream):
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream)


async def acollect(stream):
    parts = []
    async for chunk in stream:
        parts.append(chunk.choices[0].delta.content or "")
    return "".join(parts)


def phase(name, results):
    report["phases"].append({"name": name, "ok": results})


async def async_phases():
    results = []
    for i in range(5):
        results.append(text(await litellm.acompletion(messages=messages(i), **ARGS)) == f"echo: hello {i}")
    phase("async sequential", results)
    responses = await asyncio.gather(*[litellm.acompletion(messages=messages(i), **ARGS) for i in range(50)])
    phase("async concurrent 50", [text(r) == f"echo: hello {i}" for i, r in enumerate(responses)])
    results = []
    for i in range(10):
        stream = await litellm.acompletion(messages=messages(i), stream=True, **ARGS)
        results.append(await acollect(stream) == f"echo: hello {i}")
    phase("async streaming", results)


async def async_streaming():
    results = []
    for i in range(20):
        stream = await litellm.acompletion(messages=messages(i), stream=True, **ARGS)
        results.append(await acollect(stream) == f"echo: hello {i}")
    phase("async streaming", results)


async def async_quick():
    phase("async sequential", [text(await litellm.acompletion(messages=messages(i), **ARGS)) == f"echo: hello {i}"
                               for i in range(3)])


report = {"phases": []}
if phases == "streaming":
    phase("sync streaming", [collect(litellm.completion(messages=messages(i), stream=True, **ARGS)) == f"echo: hello {i}"
                             for i in range(20)])
    asyncio.run(async_streaming())
elif phases == "quick":
    phase("sync sequential", [text(litellm.completion(messages=messages(i), **ARGS)) == f"echo: hello {i}" for i in range(3)])
    asyncio.run(async_quick())
else:
    phase("sync sequential", [text(litellm.completion(messages=messages(i), **ARGS)) == f"echo: hello {i}"
                              for i in range(5)])
    phase("sync streaming", [collect(litellm.completion(messages=messages(i), stream=True, **ARGS)) == f"echo: hello {i}"
                             for i in range(20)])
    asyncio.run(async_phases())
    asyncio.run(async_phases())  # a second event loop in the same process
if fast_litellm is not None:
    report["status"] = fast_litellm.status()
if originals:
    now = hook_points()
    report["restored"] = all(now[name] is originals[name] for name in originals)
print(json.dumps(report))
