"""What the stress tests measured, written into docs/reliability.md by the run that measured it.

Each test hands its figures to the ``figures`` fixture (before its asserts, so a failing run still
shows them). At the end of a run that selected every stress test, the block between the
``stress:begin`` / ``stress:end`` markers of docs/reliability.md is written anew: the figures,
the machine, the date, the commit and the outcome. A run of some of them (``-k``, one node id)
leaves the doc as it is.
"""

import datetime
import os
import platform
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
BEGIN = "<!-- stress:begin (written by `make stress`: tests/stress/conftest.py) -->"
END = "<!-- stress:end -->"

# The counting servers are shared with the demo.
sys.path.insert(0, str(ROOT / "demo"))

# nodeid -> (what was run, what was measured), in the order the tests ran.
_measured: dict[str, tuple[str, str]] = {}
_deselected: list[str] = []
# nodeid -> passed | failed | skipped (a test that did not run has none).
_outcomes: dict[str, str] = {}


@pytest.fixture
def figures(request):
    """``figures(what, measured)``: one row of the doc's block for the calling test."""

    def record(what: str, measured: str) -> None:
        _measured[request.node.nodeid] = (what, measured)

    return record


def pytest_deselected(items):
    _deselected.extend(item.nodeid for item in items)


def pytest_runtest_logreport(report):
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.skipped:
        _outcomes.setdefault(report.nodeid, "skipped")
    elif report.when == "call":
        _outcomes.setdefault(report.nodeid, "passed")


def pytest_terminal_summary(terminalreporter):
    if _measured:
        terminalreporter.write_sep("-", "stress figures")
        for what, measured in _measured.values():
            terminalreporter.write_line(f"{what}: {measured}")


def pytest_sessionfinish(session, exitstatus):
    selected = [item.nodeid for item in session.items]
    # Only a run of every stress test to its end speaks for them: not one narrowed by -k, -m or
    # node ids on the command line, nor one stopped early (-x, an interrupt) or only collected.
    if not selected or _deselected or any("::" in str(arg) for arg in session.config.args):
        return
    if any(nodeid not in _outcomes for nodeid in selected):
        return
    _write_block(selected)


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not head:
        return "unknown"
    return f"{head} with uncommitted changes" if dirty else head


def _outcome(selected: list[str]) -> str:
    """"4 passed", "3 passed, 1 failed": passed first."""
    counts = Counter(_outcomes[nodeid] for nodeid in selected)
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items(), key=lambda kv: kv[0] != "passed"))


def _write_block(selected: list[str]) -> None:
    outcome = _outcome(selected)
    lines = [
        BEGIN,
        f"Last `make stress` run: {datetime.date.today().isoformat()}, {os.cpu_count()} CPUs, "
        f"CPython {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"commit {_commit()}; {outcome}.",
        "",
        "| run | measured |",
        "|---|---|",
    ]
    for nodeid in selected:
        if nodeid in _measured:
            what, measured = _measured[nodeid]
            lines.append(f"| {what} | {measured} |")
        else:
            lines.append(f"| `{nodeid.split('::')[-1]}` | not measured: the test ended before its figures |")
    lines.append(END)
    text = DOC.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        print(f"\nstress figures not written: {DOC} has no {BEGIN} ... {END} block", file=sys.stderr)
        return
    DOC.write_text(text[:start] + "\n".join(lines) + text[end + len(END):])
    print(f"\nstress figures written to {DOC.relative_to(ROOT)}")
