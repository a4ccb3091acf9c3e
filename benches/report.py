"""Writes docs/benchmarks.md and one PNG bar chart per section from the figures of one run."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pool_workloads import ENDPOINTS, ITERATIONS_PER_ROUND, THREADED_ITERATIONS_PER_ROUND, THREADS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

POOL_SECTION = "reference workload, one process per implementation"
POOL_INPROCESS_SECTION = "reference workload, in one process (pytest-benchmark)"
POOL_SIZE_SECTION = "checkout + return against idle connections"

# Whether fast_litellm's pool ran its reaper (the background thread that runs cleanup() every
# `reaper_interval` seconds) during a table's measurements, as the benchmark set the pool up.
REAPER_OFF = "fast_litellm's pool runs with its reaper off (`reaper_interval=None`: no background cleanup)."


def reaper_of_default_pool() -> str:
    """The reaper of a pool made with default settings (LiteLLM's hooks' pool, benches/runner.py's):
    the benchmark's processes inherit this environment, so FAST_LITELLM_REAPER_INTERVAL, if set,
    applies there too."""
    setting = os.environ.get("FAST_LITELLM_REAPER_INTERVAL")
    if setting is None:
        return "fast_litellm's pool runs with its reaper on (the default: a background cleanup every 5 s)."
    return f"fast_litellm's pool runs with its reaper as `FAST_LITELLM_REAPER_INTERVAL={setting}` sets it."


def _section_text(section: str) -> str:
    """What a row of a pool-bookkeeping section measures."""
    workload = (f"One iteration takes a connection from each of {len(ENDPOINTS)} endpoints, then returns all "
                f"{len(ENDPOINTS)} (ids only, no sockets: bookkeeping); a round is {ITERATIONS_PER_ROUND:,} "
                f"iterations in one thread, or {THREADED_ITERATIONS_PER_ROUND:,} split over {THREADS} threads.")
    if section == POOL_SECTION:
        return (f"{workload} A row: µs per iteration, the median of the rounds of several processes per "
                "implementation (alternating), pooled; the IQR of the same rounds. benches/runner.py makes "
                f"fast_litellm's pool with default settings. {reaper_of_default_pool()}")
    if section == POOL_INPROCESS_SECTION:
        return (f"{workload} A row: µs per iteration, the median and IQR of pytest-benchmark's rounds in the "
                f"pytest process. {REAPER_OFF}")
    if section == POOL_SIZE_SECTION:
        return (f"One iteration is one checkout and its return on one endpoint that holds N idle connections "
                f"(ids only, no sockets), {ITERATIONS_PER_ROUND:,} per round. A row: µs per iteration, the median "
                f"and IQR of pytest-benchmark's rounds. {REAPER_OFF} No expiry either (`idle_timeout` and "
                "`max_lifetime` None), so N stays N.")
    return ""


def _fewer_requests(rows: list, why: str) -> str:
    """A sentence naming the rows that ran fewer requests than the most in their case (rows:
    (case, name, figures)), and why; empty when every row of a case ran as many."""
    most: dict = {}
    for case, _, f in rows:
        most[case] = max(most.get(case, 0), f["requests"])
    fewer: dict = {}
    for case, name, f in rows:
        if f["requests"] < most[case]:
            fewer.setdefault(name, []).append(f"{case} ({f['requests'] / most[case]:.0%})")
    if not fewer:
        return ""
    listed = "; ".join(f"{name} at {', '.join(cases)}" for name, cases in fewer.items())
    return (f" Not every row ran as many requests as the others of its case (the requests column; in brackets, "
            f"the share of the most): {listed}. {why}")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine() -> str:
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
    versions = ", ".join(f"{p} {_version(p)}" for p in ("fast_litellm", "litellm", "httpx", "aiohttp"))
    return (f"{os.cpu_count()} cores, {model}; Linux {platform.release()}; Python {platform.python_version()}; "
            f"{versions}; commit {commit}; {datetime.date.today().isoformat()}")


def _bar_chart(path: Path, title: str, groups: list[str], series: dict[str, list[float]], ylabel: str,
               labels: dict[str, list[str]]) -> None:
    """Grouped bars: one group per case, one bar per series, a label printed on each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(groups) * max(1, len(series)) / 2), 4.5))
    _bars(ax, groups, series, labels)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax, groups: list[str], series: dict[str, list[float]], labels: dict[str, list[str]]) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, [v if v == v else 0 for v in values], width, label=name)
        for bar, text in zip(bars, labels[name]):
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.legend(fontsize=7)
    ax.margins(y=0.15)


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def pool_lines(results: list) -> list[str]:
    lines = []
    for section in dict.fromkeys(r[0] for r in results):
        rows = [r for r in results if r[0] == section]
        baseline = {r[2]: r[3] for r in rows if r[1] == "fast_litellm"}
        lines += [f"## {section}", "", _section_text(section), "",
                  "| implementation | case | µs per iteration (median) | IQR | time vs fast_litellm |",
                  "|---|---|---|---|---|"]
        for _, implementation, case, median, iqr in rows:
            lines.append(f"| {implementation} | {case} | {median:.3f} | {iqr:.3f} | "
                         f"{_ratio(median, baseline.get(case, 0))} |")
        lines.append("")
        chart = _chart_name(section)
        cases = list(dict.fromkeys(r[2] for r in rows))
        impls = list(dict.fromkeys(r[1] for r in rows))
        series = {i: [next((r[3] for r in rows if r[1] == i and r[2] == c), float("nan")) for c in cases] for i in impls}
        labels = {i: [f"{v:.2f} µs ({_ratio(v, baseline.get(c, 0))})" if v == v else "" for v, c in zip(series[i], cases)]
                  for i in impls}
        _bar_chart(DOCS / chart, f"Pool bookkeeping: {section} (lower is better)", cases, series,
                   "µs per iteration (median)", labels)
        lines += [f"![{section}]({chart})", ""]
    return lines


def _chart_name(section: str) -> str:
    return "bench-" + "".join(c if c.isalnum() else "-" for c in section.lower()).strip("-").replace("--", "-")[:60] + ".png"


# benches/test_transports.py's label of both modes' floor rows (benches/transport_runner.py: sync, a
# one-socket transport; async, httpx.MockTransport, no network).
FLOOR = "floor (sync: one raw socket; async: no network)"
# benches/transport_runner.py's MinimalAsyncTransport: asyncio Protocol connections, no pool.
MINIMAL_ASYNC = "minimal asyncio transport (no pool)"


def _versus(mode: str, transport: str, ours: dict, f: dict) -> str:
    """The last column of a transport row: fast_litellm's requests/s divided by the row's; against
    the async floor, which does no network I/O, its CPU per request divided by the floor's."""
    if mode == "async" and transport == FLOOR:
        return f"{_ratio(ours['cpu_ms_per_request'], f['cpu_ms_per_request'])} the CPU/request"
    return _ratio(ours["rps"], f["rps"])


def transport_lines(transports: list, server_note: str) -> list[str]:
    rows = [t for t in transports if t[0] not in ("litellm", "http2")]
    if not rows:
        return []
    figures = {(m, c): f for m, c, t, f in rows if t == "fast_litellm"}
    ours = {case: f["rps"] for case, f in figures.items()}
    fewer = _fewer_requests([(f"{m} {c}", t, f) for m, c, t, f in rows],
                            "benches/test_transports.py gives httpx's stock transport a third of the requests at "
                            "concurrency 64 and above (its async pool is slow enough that fewer tell the same story), "
                            "each count rounded down to a whole number per concurrent request or thread.")
    lines = ["## HTTP transports through httpx", "",
             f"Server: {server_note}. A row: one transport at one concurrency (async: that many requests at once "
             "in one event loop; sync: that many threads), POST of a small JSON body, after a warm-up; "
             "requests/s over the timed requests, p50 and p99 of their latencies. Each case: every transport in "
             "processes of its own, alternating; figures are the medians of those processes. CPU is the whole "
             "client process (Python and Rust threads) per request. The last column is fast_litellm's "
             "requests/s divided by the row's (against the async floor: fast_litellm's CPU ms/request divided by the "
             "floor's). The floor rows are what no transport can beat on this machine: sync, httpx.Client with "
             "a minimal transport of one kept-alive socket per thread and no pool (httpx's client code plus one "
             "loopback round trip to nginx); async, httpx.AsyncClient answered by httpx.MockTransport with "
             "nginx's recorded response, no network I/O at all (httpx's own CPU per request), so only its CPU "
             "ms/request compares, not its requests/s or latencies. The minimal asyncio transport is what plain "
             "asyncio networking costs under httpx.AsyncClient: kept-alive connections made with "
             "loop.create_connection, the request written in one call, the response parsed as it arrives, no "
             f"pool, limits or timeouts. {REAPER_OFF}{fewer}", "",
             "| mode | case | transport | requests | requests/s | p50 ms | p99 ms | CPU ms/request | fast_litellm is |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, case, transport, f in rows:
        lines.append(f"| {mode} | {case} | {transport} | {f['requests']:.0f} | {f['rps']:.0f} | {f['p50_ms']:.2f} | "
                     f"{f['p99_ms']:.2f} | {f['cpu_ms_per_request']:.3f} | "
                     f"{_versus(mode, transport, figures[mode, case], f)} |")
    groups = list(dict.fromkeys(f"{m} {c}" for m, c, _, _ in rows))
    names = list(dict.fromkeys(t for _, _, t, _ in rows))
    series, labels = {}, {}
    for name in names:  # not the async floor's requests/s: no network, not comparable
        values = [next((f["rps"] for m, c, t, f in rows if t == name and f"{m} {c}" == g
                        and not (m == "async" and t == FLOOR)), float("nan")) for g in groups]
        series[name] = values
        labels[name] = [f"{v:.0f}" + ("" if name == "fast_litellm" else f"\n(÷{ours[tuple(g.split(' ', 1))] / v:.1f})")
                        if v == v else "" for v, g in zip(values, groups)]
    _bar_chart(DOCS / "bench-transports.png", "HTTP transports through httpx, requests/s, higher is better\n"
               "(÷N under a bar: fast_litellm is N times faster)", groups, series, "requests per second", labels)
    return lines + ["", "![HTTP transports](bench-transports.png)", ""]


def http2_lines(transports: list) -> list[str]:
    rows = [t for t in transports if t[0] == "http2"]
    if not rows:
        return []
    ours = {c: f for _, c, t, f in rows if t == "fast_litellm, HTTP/2"}
    fewer = _fewer_requests([(c, t, f) for _, c, t, f in rows],
                            "benches/test_http2.py gives every transport but fast_litellm's a third of the requests "
                            "(the Python HTTP/2 stacks are slow enough that fewer tell the same story), each count "
                            "rounded down to a whole number per concurrent request.")
    lines = ["## HTTP/2 over TLS", "",
             "nginx from Debian over TLS (ALPN offers h2 and http/1.1; `http2_max_concurrent_streams 128`), "
             "async through `httpx.AsyncClient`. A row: one transport at one concurrency (that many requests at "
             "once in one event loop), after a warm-up; requests/s over the timed requests, p50 and p99 of their "
             "latencies (an event stream: until its last event). Each transport in processes of its own, "
             "alternating; medians of those processes. Connections "
             "are the ones nginx accepted during the run (its stub_status), warm-up included. CPU is the whole "
             "client process per request. The last column is fast_litellm HTTP/2's requests/s divided by the "
             f"row's. {REAPER_OFF}{fewer}",
             "", "| case | transport | protocol | requests | requests/s | p50 ms | p99 ms | CPU ms/request | "
             "connections | fast_litellm HTTP/2 is |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, case, transport, f in rows:
        lines.append(f"| {case} | {transport} | {f['versions']} | {f['requests']:.0f} | {f['rps']:.0f} | {f['p50_ms']:.1f} | "
                     f"{f['p99_ms']:.1f} | {f['cpu_ms_per_request']:.3f} | {f['connections']:.0f} | "
                     f"{_ratio(ours[case]['rps'], f['rps'])} |")
    groups = list(dict.fromkeys(c for _, c, _, _ in rows))
    names = list(dict.fromkeys(t for _, _, t, _ in rows))
    series = {n: [next((f["rps"] for _, c, t, f in rows if t == n and c == g), float("nan")) for g in groups] for n in names}
    labels = {n: [f"{v:.0f}" for v in series[n]] for n in names}
    _bar_chart(DOCS / "bench-http2.png", "HTTP/2 over TLS, requests/s, higher is better", groups, series,
               "requests per second", labels)
    return lines + ["", "![HTTP/2 over TLS](bench-http2.png)", ""]


def litellm_lines(transports: list) -> list[str]:
    rows = [t for t in transports if t[0] == "litellm"]
    if not rows:
        return []
    lines = ["## LiteLLM end to end", "",
             "The bundled local OpenAI-compatible server (keep-alive). Plain LiteLLM (its async path uses "
             "aiohttp) against LiteLLM after `import fast_litellm`, each workload in processes of its own, "
             "alternating; medians of those processes. A row: one workload's calls (sequential: one after "
             "another; concurrent: that many at once in one event loop), requests/s over all of them, p50 and "
             "p99 of their latencies (a stream: until its last chunk). Connections are the ones the server "
             f"accepted. {reaper_of_default_pool()}", "",
             "| workload | client | requests | requests/s | p50 ms | p99 ms | connections opened |",
             "|---|---|---|---|---|---|---|"]
    for _, case, client, f in rows:
        lines.append(f"| {case} | {client} | {f['requests']:.0f} | {f['rps']:.0f} | {f['p50_ms']:.2f} | "
                     f"{f['p99_ms']:.2f} | {f['connections']:.0f} |")
    workloads = list(dict.fromkeys(c for _, c, _, _ in rows))
    clients = list(dict.fromkeys(cl for _, _, cl, _ in rows))
    plain = {c: f for _, c, cl, f in rows if cl == clients[0]}
    series = {cl: [next(f["rps"] for _, c, x, f in rows if x == cl and c == w) for w in workloads] for cl in clients}
    labels = {cl: [f"{v:.0f} ({_ratio(v, plain[w]['rps'])})" for v, w in zip(series[cl], workloads)] for cl in clients}
    _bar_chart(DOCS / "bench-litellm.png", "LiteLLM end to end, requests/s, higher is better\n(ratio to plain LiteLLM)",
               workloads, series, "requests per second", labels)
    lines += ["", "![LiteLLM end to end](bench-litellm.png)", ""]

    lines += ["## Connections opened (what each would cost on a real network)", "",
              "The runs of the table above. Every connection opened is a TCP and TLS handshake on a real "
              "network: multiply the connections saved by your own handshake time (often 50-300 ms to a cloud "
              f"API) to see the latency and CPU that pooling saves. {reaper_of_default_pool()}", "",
              "| workload | requests | plain LiteLLM | with fast_litellm | saved per 1,000 requests |", "|---|---|---|---|---|"]
    fast = {c: f for _, c, cl, f in rows if cl == clients[-1]}
    for w in workloads:
        p, f = plain[w], fast[w]
        saved = (p["connections"] - f["connections"]) / p["requests"] * 1000 if p["requests"] else 0
        lines.append(f"| {w} | {p['requests']:.0f} | {p['connections']:.0f} | {f['connections']:.0f} | {saved:.0f} |")
    series = {cl: [next(f["connections"] for _, c, x, f in rows if x == cl and c == w) for w in workloads] for cl in clients}
    labels = {cl: [f"{v:.0f}" for v in series[cl]] for cl in clients}
    _bar_chart(DOCS / "bench-connections.png", "Connections opened per workload (lower is better)", workloads, series,
               "connections opened", labels)
    return lines + ["", "![Connections opened](bench-connections.png)", ""]


PROXY_SECTION = "## LiteLLM Proxy under load and faults"


def proxy_lines(proxy: list) -> list[str]:
    """benches/test_litellm_proxy.py: (phase, proxy, figures) rows."""
    if not proxy:
        return []
    requests = sorted({int(f["requests"]) for _, _, f in proxy})
    lines = [PROXY_SECTION, "",
             "`litellm --config … --num_workers 2` with the config of docs/litellm-proxy.md (callbacks "
             "`fast_litellm.proxy.callback` and `prometheus`, master key), plain (`FAST_LITELLM_DISABLE=1`) and with "
             "fast_litellm, both started once in front of the same bundled backend on 127.0.0.1, which counts the "
             "connections it accepts, both with `AIOHTTP_KEEPALIVE_TIMEOUT=300` (aiohttp's idle timeout, which "
             "fast_litellm takes too; 15 s by default, shorter than the other proxy's turn). Each phase runs against one proxy at a time, in two halves per proxy "
             "alternating plain/fast (ABBA, the order flipped from one phase to the next); "
             f"{'/'.join(str(n) for n in requests)} requests per phase and proxy at concurrency 64 from a separate "
             "load process (httpx.AsyncClient, httpx's own transport, the master key), after a warm-up of 128. "
             "Faults: the backend answers 30% of model requests 429 (OpenAI-style body, connection kept) and "
             "stops 10% of the remaining streams in the middle of an event (FIN, no last chunk); every other "
             "request streams. Latency is client side, over every request, failed ones included. "
             f"{reaper_of_default_pool()}", "",
             "Both run at about the proxy's own speed: its Python (about 10 ms of CPU a request on this "
             "machine, two workers on two cores shared with the backend and the load client) is the bottleneck, "
             "not the HTTP client behind it, so requests/s are about equal by construction. The point of this "
             "table is what the pool changes behind the proxy: backend connections opened, errors seen by "
             "clients, and tail latency.", "",
             "| phase | proxy | requests | requests/s (each half) | p50 ms | p99 ms | errors seen by clients | "
             "backend connections opened | backend requests (429s, streams cut) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for phase, name, f in proxy:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(f["outcomes"].items()) if k != "ok") or "none"
        faults = f" ({f['backend_429']} 429s, {f['backend_cut']} cut)" if f["backend_429"] or f["backend_cut"] else ""
        halves = f" ({', '.join(f'{x:.0f}' for x in f['rounds_rps'])})" if f.get("rounds_rps") else ""
        lines.append(f"| {phase} | {name} | {f['requests']} | {f['rps']:.0f}{halves} | {f['p50_ms']:.0f} | {f['p99_ms']:.0f} | "
                     f"{errors} | {f['connections']} | {f['backend_requests']}{faults} |")
    return lines + [""]


REAL_NETWORK_SECTION = "## LiteLLM on a real network: TLS and round-trip time"


def real_network_lines(rows: list) -> list[str]:
    """benches/test_real_network.py: (rtt ms, workload, client, figures) rows."""
    if not rows:
        return []
    processes = max(f["processes"] for *_, f in rows)
    lines = [REAL_NETWORK_SECTION, "",
             "LiteLLM (`openai/` model) against the bundled local server over TLS 1.3, its throw-away CA given "
             "as `SSL_CERT_FILE` as a user would, through `demo/relay.py`, which adds the round-trip time (RTT) "
             "of a wide-area link: each direction delayed by RTT/2 in order, a new connection's first bytes by "
             "one RTT more (the TCP handshake). The server counts the connections and TLS handshakes (full and "
             "resumed) during each workload. Plain LiteLLM (`FAST_LITELLM_DISABLE=1`; its async path uses "
             f"aiohttp) against LiteLLM with fast_litellm: each client in {processes} processes of its own per "
             "RTT, alternating plain, fast, fast + prewarm; figures are the medians of those processes. Each "
             "process runs the workloads in the order of the table, so a workload reuses the connections an "
             "earlier one left open, as an application would. The first call is timed from the start of the "
             "call (imports excluded): its p50 and p99 are the median and the slowest of the processes. The "
             "prewarm variant calls `fast_litellm.prewarm(api_base, connections=N)` (untimed) before its first "
             "call and before the bursts, and runs only those two workloads. "
             f"{reaper_of_default_pool()}", "",
             f"Measured on a {os.cpu_count()}-core VM shared with other work, so noisy: the ratios within one "
             "run are what count, not the absolute figures from one run to the next. On loopback (RTT 0) "
             "LiteLLM's own Python work dominates; every round trip a client saves shows as RTT ms.", "",
             "| RTT | workload | client | calls | p50 ms | p99 ms | p50 vs plain | connections | "
             "TLS handshakes full / resumed |", "|---|---|---|---|---|---|---|---|---|"]
    timed = [r for r in rows if "p50_ms" in r[3]]
    plain = {(rtt, w): f for rtt, w, c, f in timed if c == timed[0][2]}  # the first client: the reference
    for rtt, workload, client, f in rows:
        counts = f"{f['connections']:.0f} | {f['tls_full']:.0f} / {f['tls_resumed']:.0f}"
        if "p50_ms" not in f:  # prewarm: connections only
            ready = ", ".join(str(r) for r in f["ready"])
            lines.append(f"| {rtt} ms | {workload} | {client} | ready {ready} | | | | {counts} |")
            continue
        reference = plain.get((rtt, workload))
        ratio = _ratio(f["p50_ms"], reference["p50_ms"]) if reference else "-"
        lines.append(f"| {rtt} ms | {workload} | {client} | {f['calls']:.0f} | {f['p50_ms']:.1f} | "
                     f"{f['p99_ms']:.1f} | {ratio} | {counts} |")
    bursts = [(rtt, client, f) for rtt, _, client, f in rows if "first_p90_ms" in f]
    if bursts:
        lines += ["", "The bursts, first against later (p90 per burst, medians of the processes): the first "
                  "burst pays for the connections a burst needs unless they were warmed; prewarm's target is a "
                  "first burst within one RTT of a later one.", "",
                  "| RTT | client | first burst p90 ms | later bursts p90 ms | first - later |", "|---|---|---|---|---|"]
        for rtt, client, f in bursts:
            gap = f["first_p90_ms"] - f["later_p90_ms"]
            within = "within one RTT" if gap <= max(rtt, 1) else f"{gap / rtt:.1f} RTT" if rtt else f"{gap:.1f} ms"
            lines.append(f"| {rtt} ms | {client} | {f['first_p90_ms']:.1f} | {f['later_p90_ms']:.1f} | "
                         f"{gap:+.1f} ms ({within}) |")
    _real_network_chart(DOCS / "bench-real-network.png", timed, plain)
    return lines + ["", "![LiteLLM on a real network](bench-real-network.png)", ""]


def _real_network_chart(path: Path, rows: list, plain: dict) -> None:
    """One panel per workload: p50 per RTT, one bar per client."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(w for _, w, _, _ in rows))
    rtts = list(dict.fromkeys(rtt for rtt, *_ in rows))
    clients = list(dict.fromkeys(c for _, _, c, _ in rows))
    columns = 3
    fig, axes = plt.subplots((len(workloads) + columns - 1) // columns, columns, squeeze=False,
                             figsize=(5 * columns, 3.6 * ((len(workloads) + columns - 1) // columns)))
    for ax, workload in zip(axes.flat, workloads):
        figures = {(rtt, c): f for rtt, w, c, f in rows if w == workload}
        shown = [c for c in clients if any((rtt, c) in figures for rtt in rtts)]
        series = {c: [figures[rtt, c]["p50_ms"] if (rtt, c) in figures else float("nan") for rtt in rtts] for c in shown}
        labels = {c: [("" if v != v else f"{v:.0f}" if v >= 10 else f"{v:.1f}")
                      + ("" if v != v or c == clients[0] else f"\n{_ratio(v, plain[rtt, workload]['p50_ms'])}")
                      for v, rtt in zip(series[c], rtts)] for c in shown}
        _bars(ax, [f"RTT {rtt} ms" for rtt in rtts], series, labels)
        ax.set_title("\n".join(textwrap.wrap(workload, 45)), fontsize=9)
        ax.set_ylabel("p50 ms", fontsize=8)
    for ax in list(axes.flat)[len(workloads):]:
        ax.set_visible(False)
    fig.suptitle("LiteLLM over TLS through an added round-trip time: p50 latency, lower is better "
                 "(ratio to plain LiteLLM)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _replace_section(heading: str, lines: list[str], anchors: tuple[str, ...]) -> Path:
    """Puts a section into the existing docs/benchmarks.md in place of its previous version (or
    after the last of the sections headed `anchors` when there is none), leaving every other byte
    as it was: what write() would have made of that section."""
    report = DOCS / "benchmarks.md"
    text = report.read_text()
    start = text.find(heading + "\n")
    if start < 0:  # not there yet: after the last of `anchors`, before whatever follows it
        anchor = max(text.find(h) for h in anchors)
        following = text.find("\n## ", anchor) if anchor >= 0 else -1
        start = end = following + 1 if following >= 0 else len(text)
    else:
        following = text.find("\n## ", start)
        end = following + 1 if following >= 0 else len(text)
    before, after = text[:start], text[end:]
    if not after:
        before = before.rstrip("\n") + "\n\n"
    section = "\n".join(lines) + ("\n" if after else "")
    report.write_text(before + section + after)
    return report


LITELLM_SECTIONS = ("## LiteLLM end to end", "## Connections opened")


def replace_real_network_section(rows: list) -> Path:
    return _replace_section(REAL_NETWORK_SECTION, real_network_lines(rows), LITELLM_SECTIONS)


def replace_proxy_section(proxy: list) -> Path:
    return _replace_section(PROXY_SECTION, proxy_lines(proxy), (*LITELLM_SECTIONS, REAL_NETWORK_SECTION))


PROXIED_SECTION = "## Requests through a forward proxy"


def proxied_lines(rows: list) -> list[str]:
    """benches/test_proxied.py: (mode, concurrency, transport, figures) rows."""
    if not rows:
        return []
    lines = [PROXIED_SECTION, "",
             "HTTPS requests (POST, a ~250-byte JSON answer) to nginx over TLS, through a CONNECT tunnel of the "
             "test suite's forward proxy (tests/python/servers.py: it relays bytes with Python threads, so every "
             "row runs well below its direct speed; what the rows compare is the same path taken by both "
             "transports). fast_litellm's transport pools the tunnels in Rust; httpx's own transport is given the "
             "same `proxy=`. Each row: the median of 2 processes per transport, alternating; every row ran as many "
             "requests as the others of its case; tunnels are counted by the proxy for one process. fast_litellm's "
             "pool runs with its reaper off (`reaper_interval=None`).", "",
             "| mode | case | transport | requests | requests/s | p50 ms | p99 ms | CPU ms/request | tunnels | "
             "fast_litellm is |", "|---|---|---|---|---|---|---|---|---|---|"]
    ours = {(m, c): f for m, c, t, f in rows if t.startswith("fast_litellm")}
    for mode, concurrency, transport, f in rows:
        unit = "thread" if mode == "sync" else "concurrent"
        ratio = _ratio(ours[(mode, concurrency)]["rps"], f["rps"])
        lines.append(f"| {mode} | {concurrency} {unit} | {transport} | {f['requests']:.0f} | {f['rps']:.0f} | "
                     f"{f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {f['cpu_ms_per_request']:.3f} | {f['tunnels']:.0f} | "
                     f"{ratio} |")
    return lines + [""]


def replace_proxied_section(rows: list) -> Path:
    return _replace_section(PROXIED_SECTION, proxied_lines(rows), ("## HTTP/2 over TLS",))


LONG_STREAMS_SECTION = "## Thousands of long streams"
LONG_STREAMS_LABELS = {
    "fast_litellm-h1": "fast_litellm, HTTP/1.1",
    "fast_litellm-h2": "fast_litellm, HTTP/2 (cleartext, 128 streams a connection)",
    "aiohttp": "raw aiohttp `ClientSession` (no httpx)",
    "litellm-aiohttp": "LiteLLM's aiohttp transport under httpx",
    "httpx": "httpx's own transport",
    "litellm-plain": "`litellm.acompletion(stream=True)`, plain",
    "litellm-fast": "`litellm.acompletion(stream=True)`, with fast_litellm",
}


def _errors(errors: dict) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(errors.items())) or "0"


def long_streams_lines(rows: list) -> list[str]:
    """benches/test_long_streams.py: (client, N, figures) rows."""
    if not rows:
        return []
    lines = [LONG_STREAMS_SECTION, "",
             "N concurrent chat-completion event streams (`client.stream(\"POST\")`, read line by line), each 40 "
             "events 100 ms apart, as an LLM gateway carries them. The server (benches/long_streams_server.rs, Rust, "
             "one thread, in a process of its own) puts its CLOCK_MONOTONIC in each event; an event's lateness is the "
             "client's clock when it reads the event minus that. Every client in a process of its own, one (client, "
             "N) a process, alternating, 2 processes each; medians of the two. Pools uncapped (N connections may "
             "really be open at once) except in the `litellm.acompletion` rows, which run with LiteLLM's and "
             "fast_litellm's defaults. CPU: the whole client process (Python and Rust's threads) over the streams, "
             "per event. RSS per open stream: (RSS with the most streams open - RSS before) / streams open. "
             "Lateness: every event; steady: the events sent once every stream had its first event (before that "
             "the client is still sending requests); first: a stream's first event (opening its connection, "
             "queueing). Cores: client CPU / wall time; the machine has 2 and the server "
             "shares them, so a row at 1.5 or more is bound by the cores, not the client's design. Connections: "
             "accepted by the server during the streams. Descriptors and RSS: before the streams / with the most "
             "open / after the client (and fast_litellm's pool) closed.", "",
             "| N | client | CPU µs/event | RSS KB/open stream | lateness p50 / p99 ms | steady p99 ms | first p99 ms "
             "| errors | connections | cores | fds before / peak / closed | RSS MB before / closed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for client, n, f in rows:
        lines.append(
            f"| {n} | {LONG_STREAMS_LABELS.get(client, client)} | {f['cpu_us_per_event']:.1f} | "
            f"{f['rss_kb_per_stream']:.1f} | {f['lateness_p50_ms']:.1f} / {f['lateness_p99_ms']:.1f} | "
            f"{f.get('steady_p99_ms', float('nan')):.1f} | {f.get('first_p99_ms', float('nan')):.1f} | "
            f"{_errors(f['errors'])} | {f['connections']:.0f} | {f['cores_used']:.2f} | "
            f"{f['start']['fds']} / {f['peak_fds']:.0f} / {f['closed']['fds']} | "
            f"{f['start']['rss_kb'] / 1024:.0f} / {f['closed']['rss_kb'] / 1024:.0f} |")
    lines += ["", "Targets, ratios of the rows above (same run):", "",
              "| N | CPU/event: HTTP/1.1 / aiohttp | HTTP/2 / aiohttp | HTTP/1.1 / LiteLLM's aiohttp transport | "
              "HTTP/2 / LiteLLM's aiohttp transport | HTTP/2 / HTTP/1.1 | RSS/stream: HTTP/1.1 / aiohttp | "
              "HTTP/2 / aiohttp | steady p99: HTTP/2 / HTTP/1.1 |", "|---|---|---|---|---|---|---|---|---|"]
    by = {(c, n): f for c, n, f in rows}

    def ratio(a: str, b: str, n: int, key: str) -> str:
        if (a, n) not in by or (b, n) not in by or not by[(b, n)].get(key):
            return "–"
        return f"{by[(a, n)][key] / by[(b, n)][key]:.2f}"

    for n in sorted({n for c, n, _ in rows if c == "fast_litellm-h1"}):
        lines.append(
            f"| {n} | {ratio('fast_litellm-h1', 'aiohttp', n, 'cpu_us_per_event')} | "
            f"{ratio('fast_litellm-h2', 'aiohttp', n, 'cpu_us_per_event')} | "
            f"{ratio('fast_litellm-h1', 'litellm-aiohttp', n, 'cpu_us_per_event')} | "
            f"{ratio('fast_litellm-h2', 'litellm-aiohttp', n, 'cpu_us_per_event')} | "
            f"{ratio('fast_litellm-h2', 'fast_litellm-h1', n, 'cpu_us_per_event')} | "
            f"{ratio('fast_litellm-h1', 'aiohttp', n, 'rss_kb_per_stream')} | "
            f"{ratio('fast_litellm-h2', 'aiohttp', n, 'rss_kb_per_stream')} | "
            f"{ratio('fast_litellm-h2', 'fast_litellm-h1', n, 'steady_p99_ms')} |")
    return lines + [""]


def replace_long_streams_section(rows: list) -> Path:
    return _replace_section(LONG_STREAMS_SECTION, long_streams_lines(rows), ("## HTTP/2 over TLS",))


def write(results: list, transports: list, server_note: str, proxy: list = (), real_network: list = (),
          proxied: list = (), long_streams: list = ()) -> Path:
    DOCS.mkdir(exist_ok=True)
    lines = ["# Benchmarks", "", f"Machine: {machine()}.", "",
             "Every figure below was measured in the same run (`make bench`); ratios compare rows of that "
             "run. This machine is noisy (the same process measured twice can differ by 25%): compare "
             "ratios within a table, not absolute figures across runs. p50 is the median; p99 (and p90) "
             "the nearest-rank percentile (benches/percentiles.py): the smallest latency with at least 99% "
             "(90%) of them at or below it. Each table's text says what a row measures, and whether "
             "fast_litellm's pool ran its reaper (background cleanup) meanwhile.", ""]
    lines += pool_lines(results)
    lines += transport_lines(transports, server_note)
    lines += http2_lines(transports)
    lines += proxied_lines(list(proxied))
    lines += long_streams_lines(list(long_streams))
    lines += litellm_lines(transports)
    lines += real_network_lines(list(real_network))
    lines += proxy_lines(list(proxy))
    report = DOCS / "benchmarks.md"
    report.write_text("\n".join(lines))
    return report
