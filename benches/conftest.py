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
TRANSPORTS = []  # (mode, case, transport, {rps, p50_ms, p99_ms, cpu_ms_per_request, requests})

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


@pytest.fixture
def record_transport():
    def add(mode, case, transport, figures):
        TRANSPORTS.append((mode, case, transport, figures))
    return add


def transport_section():
    lines = ["## HTTP transports through httpx (local nginx, keep-alive, POST with a ~250-byte JSON answer)",
             "", "Each case: every transport in processes of its own, alternating; figures are the medians "
             "of those processes. CPU is the whole client process (Python and Rust threads) per request; "
             "nginx runs in its own process. Ratios compare with fast_litellm in the same case.", "",
             "| mode | case | transport | requests/s | p50 ms | p99 ms | CPU ms/request | fast_litellm's requests/s is |",
             "|---|---|---|---|---|---|---|---|"]
    ours = {(m, c): f["rps"] for m, c, t, f in TRANSPORTS if t == "fast_litellm"}
    for mode, case, transport, f in TRANSPORTS:
        if mode == "litellm":
            continue
        ratio = ours[mode, case] / f["rps"]
        lines.append(f"| {mode} | {case} | {transport} | {f['rps']:.0f} | {f['p50_ms']:.2f} | "
                     f"{f['p99_ms']:.2f} | {f['cpu_ms_per_request']:.3f} | {ratio:.2f}x |")
    return lines + [""]


def litellm_section():
    lines = ["## LiteLLM end to end (bundled local OpenAI-compatible server, keep-alive)", "",
             "Plain LiteLLM (its async path uses aiohttp) against LiteLLM after `import fast_litellm`, "
             "each workload in processes of its own, alternating; medians of those processes. Connections "
             "are the ones the server accepted during the workload.", "",
             "| workload | client | requests/s | p50 ms | p99 ms | connections opened |", "|---|---|---|---|---|---|"]
    for mode, case, client, f in TRANSPORTS:
        if mode == "litellm":
            lines.append(f"| {case} | {client} | {f['rps']:.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | "
                         f"{f['connections']:.0f} |")
    return lines + [""]


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
    if not (RESULTS or TRANSPORTS) or exitstatus != 0:
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
    if any(t[0] != "litellm" for t in TRANSPORTS):
        lines += transport_section()
    if any(t[0] == "litellm" for t in TRANSPORTS):
        lines += litellm_section()
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text("\n".join(lines))
    print(f"\nwrote {REPORT.relative_to(ROOT)}")
