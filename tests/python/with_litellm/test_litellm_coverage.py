"""Every LiteLLM entry point goes through fast_litellm: the coverage table of docs/litellm.md is
this test's output. Each row drives one entry point (litellm_coverage.py: provider family, sync
or async, streaming or not) three times against a server of its own, which counts connections on
its side: through the pool, three calls share one connection and the transports counted three
requests. A LiteLLM upgrade that opens a new bypass fails here instead of slowing users down.

FAST_LITELLM_WRITE_DOCS=1 writes the table into docs/litellm.md; without it, the table there
must be the one the run produced."""

import difflib
import json
import os
import subprocess
import sys

import pytest
from helpers import HARNESS, ROOT

DOC = ROOT / "docs" / "litellm.md"
START, END = "<!-- coverage table: tests/python/with_litellm/test_litellm_coverage.py -->", "<!-- end of coverage table -->"


def drive(*args: str, **env) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FAST_LITELLM_", "LITELLM_RUST"))}
    environment.update(env)
    result = subprocess.run([sys.executable, str(HARNESS / "litellm_coverage.py"), *args], capture_output=True,
                            text=True, timeout=300, env=environment, cwd=HARNESS)
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def through(row) -> bool:
    return ("failed" not in row and not row["errors"] and row["requests"] == row["calls"]
            and row["ours"] == row["calls"] and row["connections"] == 1)


@pytest.fixture(scope="module")
def plain():
    """LiteLLM alone (FAST_LITELLM_DISABLE=1): the same rows, as the control."""
    return drive(FAST_LITELLM_DISABLE="1")


def table(rows: list, control: list) -> str:
    lines = ["| entry point | provider family | stream | sync | async | plain LiteLLM's connections (sync / async) |",
             "|---|---|---|---|---|---|"]
    by_key = {}
    for row, alone in zip(rows, control):
        by_key.setdefault((row["entry"], row["provider"], row["stream"]), {})[row["mode"]] = (row, alone)
    for (entry, provider, stream), modes in by_key.items():
        cells = ["through fast_litellm" if through(modes[m][0]) else "**not through**" for m in ("sync", "async")]
        alone = " / ".join(_connections(modes[m][1]) for m in ("sync", "async"))
        lines.append(f"| `{entry}` | {provider} | {'yes' if stream else 'no'} | {cells[0]} | {cells[1]} | {alone} |")
    return "\n".join(lines)


def _connections(row) -> str:
    """What plain LiteLLM did, in words that do not move with timing (a connection given back a
    moment late counts once more, not as a new pattern)."""
    if "connections" not in row:
        return "-"
    return "one per call" if row["connections"] == row["calls"] else "reused"


@pytest.mark.parametrize("library", ["httpx", "httpx2"])
def test_every_entry_point_goes_through_the_pool(library, plain):
    if library == "httpx2":
        pytest.importorskip("httpx2")  # CPython 3.11+
    run = drive(FAST_LITELLM_TEST_LIBRARY=library) if library == "httpx2" else drive()
    assert run["library"] == library
    assert set(run["hooks"].values()) == {"fast_litellm"}, run["hooks"]
    missed = [r for r in run["rows"] if not through(r)]
    assert not missed, missed
    # The control shows what the hooks change: LiteLLM alone sent the same requests, none through us,
    # and the entry points that build their own clients opened a connection per call.
    assert all(r["ours"] == 0 and r["requests"] == r["calls"] for r in plain["rows"]), plain["rows"]
    alone = {(r["entry"], r["mode"], r["stream"]): r["connections"] for r in plain["rows"]}
    assert alone[("moderation", "sync", False)] == 3 and alone[("file_list", "async", False)] == 3
    if library == "httpx":
        produced = table(run["rows"], plain["rows"])
        text = DOC.read_text()
        before, rest = text.split(START)
        _, after = rest.split(END)
        if os.environ.get("FAST_LITELLM_WRITE_DOCS") == "1":
            DOC.write_text(f"{before}{START}\n{produced}\n{END}{after}")
        documented = DOC.read_text().split(START)[1].split(END)[0].strip()
        assert documented == produced, "docs/litellm.md's coverage table is not this run's:\n" + "\n".join(
            difflib.unified_diff(documented.splitlines(), produced.splitlines(), "docs", "this run", lineterm=""))


def test_twenty_sync_moderation_calls_open_one_connection():
    # The path that opened a connection per call (LiteLLM builds a new OpenAIHTTPClient each time).
    (row,) = drive("--only", "moderation", "--mode", "sync", "--calls", "20")["rows"]
    assert (row["requests"], row["ours"], row["connections"]) == (20, 20, 1), row
    (alone,) = drive("--only", "moderation", "--mode", "sync", "--calls", "20", FAST_LITELLM_DISABLE="1")["rows"]
    assert (alone["requests"], alone["ours"], alone["connections"]) == (20, 0, 20), alone


def native_routes(**env) -> list:
    code = ("import json, fast_litellm, litellm; "
            "print(json.dumps(fast_litellm.status()['not_through_fast_litellm']))")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FAST_LITELLM_", "LITELLM_RUST"))}
    environment.update(LITELLM_LOCAL_MODEL_COST_MAP="True", **env)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return [(r["route"], r["providers"], r["native"]) for r in json.loads(result.stdout.strip().splitlines()[-1])]


def test_status_names_the_routes_litellms_native_core_runs():
    assert native_routes() == [("ocr", None, "always"), ("transcription", ["bedrock"], "always")]
    # LiteLLM's switch opts anthropic messages into its native core: then those are not ours either.
    assert native_routes(LITELLM_RUST="true") == [("ocr", None, "always"), ("messages", ["anthropic"], "opted in"),
                                                  ("transcription", ["bedrock"], "always")]


def test_the_command_line_status_says_what_is_not_ours():
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FAST_LITELLM_", "LITELLM_RUST"))}
    result = subprocess.run([sys.executable, "-m", "fast_litellm", "status"], capture_output=True, text=True,
                            timeout=120, env=dict(environment, LITELLM_LOCAL_MODEL_COST_MAP="True"))
    assert "not ours: ocr (every provider): LiteLLM's native core (always), not through fast_litellm" in result.stdout
    assert "not ours: transcription (bedrock)" in result.stdout
