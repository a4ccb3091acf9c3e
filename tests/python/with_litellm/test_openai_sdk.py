"""The openai SDK opt-in: openai.OpenAI() / AsyncOpenAI() made without an http_client share
fast_litellm's pool, counted on the server's side; off by default; status() says which. Each
scenario in a process of its own (the opt-in changes the SDK's classes process-wide)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from servers import LLMServer

pytest.importorskip("openai")

SCENARIO = """
import asyncio, json, os, sys
import fast_litellm
if "--opt-in" in sys.argv:
    fast_litellm.install_openai_sdk()
before = fast_litellm.status()["openai_sdk"]["hook"]
import openai
URL = os.environ["TEST_URL"] + "/v1"
ask = dict(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
replies = [openai.OpenAI(base_url=URL, api_key="sk-test").chat.completions.create(**ask).choices[0].message.content
           for _ in range(20)]
async def twenty():
    return [(await openai.AsyncOpenAI(base_url=URL, api_key="sk-test").chat.completions.create(**ask)).choices[0].message.content
            for _ in range(20)]
replies += asyncio.run(twenty())
status = fast_litellm.status()["openai_sdk"]
if "--then-uninstall" in sys.argv:
    fast_litellm.uninstall_openai_sdk()
    openai.OpenAI(base_url=URL, api_key="sk-test").chat.completions.create(**ask)
print(json.dumps({"before": before, "hook": status["hook"], "ours": status["requests"], "replies": replies}))
"""


def scenario(server, *args, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FAST_LITELLM_")}
    environment.update(TEST_URL=server.url, **env)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SCENARIO), *args], capture_output=True,
                            text=True, timeout=120, env=environment)
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("how", ["call", "environment"])
def test_with_the_opt_in_forty_sdk_clients_share_one_connection(how):
    with LLMServer() as server:
        if how == "call":
            run = scenario(server, "--opt-in")
        else:
            run = scenario(server, FAST_LITELLM_OPENAI_SDK="1")
        assert run["replies"] == ["echo: hi"] * 40
        assert (server.requests, server.connections) == (40, 1)
    assert run["ours"] == 40
    assert run["before"] == "waiting for openai's import" and run["hook"] == "fast_litellm"


def test_off_by_default_each_sdk_client_opens_its_own_connection():
    with LLMServer() as server:
        run = scenario(server)
        assert (server.requests, server.connections) == (40, 40)
    assert (run["before"], run["hook"], run["ours"]) == ("off", "off", 0)


def test_uninstall_gives_the_sdk_its_own_transport_back():
    with LLMServer() as server:
        run = scenario(server, "--opt-in", "--then-uninstall")
        assert server.requests == 41 and server.connections == 2  # the last client opened its own
    assert run["ours"] == 40
