"""Collects the medians of the benchmarks of one run and writes them, with ratios measured in
that run, the machine and the versions, to docs/benchmarks.md."""

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "benchmarks.md"
RESULTS = []  # (section, implementation, case, median µs, iqr µs)

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def record():
    """Records a pytest-benchmark result, per iteration of the round."""
    def add(section, implementation, case, benchmark, iterations):
        stats = benchmark.stats.stats
        RESULTS.append((section, implementation, case, stats.median / iterations * 1e6,
                        stats.iqr / iterations * 1e6))
    return add


@pytest.fixture
def record_rows():
    """Records a result measured outside pytest-benchmark (median and IQR in µs)."""
    def add(section, implementation, case, median, iqr):
        RESULTS.append((section, implementation, case, median, iqr))
    return add


def machine():
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    import fast_litellm
    return (f"{os.cpu_count()} cores, {model}; Linux {platform.release()}; "
            f"Python {platform.python_version()}; fast_litellm {fast_litellm.__version__} (commit {commit}); "
            f"{datetime.date.today().isoformat()}")


def pytest_sessionfinish(session, exitstatus):
    if not RESULTS or exitstatus != 0:
        return
    rows = RESULTS
    lines = ["# Benchmarks", "", f"Machine: {machine()}.", "",
             "Every figure below was measured in the same run (`make bench`); ratios compare rows of "
             "that run. Times are medians per iteration, with the interquartile range.", ""]
    for section in dict.fromkeys(r[0] for r in rows):
        lines += [f"## {section}", ""]
        section_rows = [r for r in rows if r[0] == section]
        baseline = {r[2]: r[3] for r in section_rows if r[1] == "fast_litellm"}
        lines += ["| implementation | case | µs per iteration (median) | IQR | vs fast_litellm |",
                  "|---|---|---|---|---|"]
        for _, implementation, case, median, iqr in section_rows:
            ratio = median / baseline[case] if case in baseline else float("nan")
            lines.append(f"| {implementation} | {case} | {median:.3f} | {iqr:.3f} | {ratio:.2f}x |")
        lines.append("")
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text("\n".join(lines))
    print(f"\nwrote {REPORT.relative_to(ROOT)}")
