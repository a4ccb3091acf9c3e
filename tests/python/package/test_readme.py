"""The README's LiteLLM example runs as the README says: against the bundled local server
(demo/local_server.py), with no API key and no network."""

import os
import re
import subprocess
import sys

from helpers import ROOT
from servers import LLMServer, Server, refused_port



def test_readme_litellm_example_runs_against_the_bundled_server(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use with LiteLLM", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    commands = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    assert "demo/local_server.py &" in commands and "example.py" in commands
    env_assignments = dict(re.findall(r"\b([A-Z_]+)=(\S+)", commands))
    assert env_assignments["OPENAI_API_BASE"] == "http://127.0.0.1:8000/v1"
    (tmp_path / "example.py").write_text(example)

    port = refused_port()  # free; the README's 8000 may be taken here
    with subprocess.Popen([sys.executable, str(ROOT / "demo" / "local_server.py"), "--port", str(port)],
                          stdout=subprocess.PIPE, text=True) as server:
        try:
            assert f"serving on http://127.0.0.1:{port}" in server.stdout.readline()
            env = {k: v for k, v in os.environ.items()  # what the README sets, nothing else
                   if k.upper() not in ("LITELLM_LOCAL_MODEL_COST_MAP", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
            env.update(env_assignments, OPENAI_API_BASE=f"http://127.0.0.1:{port}/v1")
            result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True,
                                    text=True, timeout=120)
        finally:
            server.terminate()
    assert result.returncode == 0, result.stderr[-4000:]
    assert "model cost map" not in result.stderr  # LiteLLM did not go to the network for it
    # The status printed: one request went through fast_litellm's hooks, on a pooled connection.
    assert "'requests': 1" in result.stdout and "'connections_created': 1" in result.stdout, result.stdout


def run_snippet(code, tmp_path, name):
    """Runs a documented snippet in a fresh interpreter (pool names are process-wide)."""
    (tmp_path / name).write_text(code)
    env = {k: v for k, v in os.environ.items() if k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    return subprocess.run([sys.executable, name], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)


def test_readme_pool_snippet_sends_a_request_on_the_held_connection(tmp_path):
    section = (ROOT / "README.md").read_text().split("## Use the pool directly", 1)[1].split("\n## ", 1)[0]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "extensions={CONNECTION_ID: conn_id}" in snippet and "https://api.openai.com" in snippet
    with Server() as server:  # stands in for the API: same code, the origin swapped
        result = run_snippet(snippet.replace("https://api.openai.com", server.url), tmp_path, "pool.py")
    assert result.returncode == 0, result.stderr[-4000:]
    # One connection, opened by the request on the held id, and reused by connection().
    assert (server.connections, server.requests) == (1, 1)
    assert result.stdout.splitlines()[0] == "True", result.stdout
    assert "'connections_created': 1" in result.stdout and "'connections_reused': 1" in result.stdout


def id_api_examples():
    doc = (ROOT / "docs" / "connection-pool.md").read_text()
    section = doc.split("## What the id API is for", 1)[1].split("\n## ", 1)[0]
    examples = [code for code in re.findall(r"```python\n(.*?)```", section, re.S) if "BASE = " in code]
    assert len(examples) == 3
    return examples


def test_the_id_api_examples_run_against_the_bundled_server(tmp_path):
    """docs/connection-pool.md's examples, as written, against the bundled server's class
    (demo/local_server.py's LLMServer, in this process so that it can count)."""
    outputs, counts = [], []
    for n, example in enumerate(id_api_examples()):
        assert 'BASE = "http://127.0.0.1:8000"' in example
        with LLMServer() as server:
            result = run_snippet(example.replace("http://127.0.0.1:8000", server.url), tmp_path, f"example{n}.py")
        assert result.returncode == 0, result.stderr[-4000:]
        outputs.append(result.stdout.splitlines())
        counts.append((server.connections, server.requests, server.max_open_connections))
    several, critical, limited = outputs
    assert several == ["echo: one", "echo: two", "echo: three", "1"]
    assert counts[0][:2] == (1, 3), "three requests on one held connection"
    assert critical == ["200 True"] and counts[1][:2] == (1, 1)
    assert limited[0] == str([f"echo: question {i}" for i in range(8)])
    assert int(limited[1]) <= 2 and counts[2][1] == 8
    assert counts[2][0] <= 2 and counts[2][2] <= 2, "the server saw more than two connections"
