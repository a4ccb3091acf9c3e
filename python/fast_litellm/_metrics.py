"""The Prometheus export: fast_litellm's figures in prometheus_client (``fast_litellm[prometheus]``).

Read from the pools' and transports' counters when Prometheus scrapes, never on the request
path. Labels are the pool's name and the endpoint's origin (``scheme://host:port``), nothing
else: never a path, query, userinfo or header.

* One process: a collector in ``prometheus_client.REGISTRY`` reads the figures at scrape time,
  so LiteLLM Proxy's ``/metrics`` (its ``prometheus`` callback) shows them.
* ``PROMETHEUS_MULTIPROC_DIR`` set (a proxy with several workers): prometheus_client ignores
  collectors there; ``/metrics`` reads the files every worker writes. So each worker copies its
  figures into prometheus_client's multiprocess metrics from a background thread every
  ``FAST_LITELLM_METRICS_INTERVAL`` seconds (default 5): gauges summed over live workers,
  counters summed over all workers, ``fast_litellm_installed`` one series per worker (``pid``).

Nothing happens until prometheus_client is imported (by LiteLLM's prometheus callback, or by
you): importing fast_litellm does not import it. ``FAST_LITELLM_METRICS=0`` turns this off.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, Iterator, Optional

from fast_litellm import _core, _locks
from fast_litellm._after_import import AfterImport

logger = logging.getLogger("fast_litellm")

PREFIX = "fast_litellm_"

# name (without prefix), type, help, label names. Counters get "_total" from prometheus_client.
GAUGES = {
    "connections": ("Connections in the pool, by endpoint origin and state (active: leased to a request).",
                    ("pool", "endpoint", "state")),
    "connections_by_http_version": ("Connections in the pool by the HTTP version they speak.",
                                    ("pool", "endpoint", "http_version")),
    "http2_streams_in_use": ("HTTP/2 streams open on the pool's connections.", ("pool", "endpoint")),
    "requests_waiting": ("Requests waiting for a connection (the pool is at a limit).", ("pool",)),
    "pool_max_connections": ("The pool's limit on connections overall.", ("pool",)),
    "pool_max_connections_per_endpoint": ("The pool's limit on connections to one endpoint.", ("pool",)),
    "installed": ("1 when LiteLLM's HTTP traffic is routed through fast_litellm in this process.", ()),
}
COUNTERS = {
    "connections_created": ("Connections opened.", ("pool",)),
    "connections_reused": ("Checkouts of an idle connection (no new connection opened).", ("pool",)),
    "connections_closed": ("Connections closed, by reason.", ("pool", "reason")),
    "pool_waits": ("Requests that waited for a connection.", ("pool",)),
    "pool_wait_timeouts": ("Waits for a connection that timed out.", ("pool",)),
    "requests": ("Requests sent by fast_litellm's transports.", ("pool",)),
    "retries": ("Requests sent again on a fresh connection (not written, or replayable).", ("pool",)),
    "drains": ("Response bodies closed early: read to the end in the background (drained) so the "
               "connection is reused, or not (the connection is closed).", ("pool", "result")),
    "proxied_requests": ("Requests sent through an HTTP proxy (httpx's transport for it).", ("pool",)),
    "tls_handshakes": ("TLS handshakes of new connections, by kind: full, or resumed (a session the "
                       "server gave out on an earlier connection: one round trip and no certificate "
                       "check saved).", ("pool", "endpoint", "kind")),
    "handed_to_litellm": ("Transports made, and requests sent, by LiteLLM's own code because its "
                          "settings ask for what fast_litellm cannot do, by reason.", ("kind", "reason")),
}
HISTOGRAMS = {
    "connect_duration_seconds": ("Time to open a connection: name lookup, TCP, TLS and HTTP handshakes "
                                 "(connections opened successfully).", ("pool", "endpoint")),
    "pool_wait_duration_seconds": ("Time requests spent queued for a connection (those that queued: "
                                   "the pool was at a limit).", ("pool",)),
}
# Multiprocess aggregation of each gauge across workers.
GAUGE_MODES = {"pool_max_connections": "livemax", "pool_max_connections_per_endpoint": "livemax",
               "installed": "liveall"}


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"))


def _interval() -> float:
    try:
        return max(0.1, float(os.environ.get("FAST_LITELLM_METRICS_INTERVAL", "5")))
    except ValueError:
        return 5.0


def _pool_stats(name: str) -> Optional[dict]:
    try:
        if name == "default":
            return _core.get_connection_pool_stats()
        return _core.SimpleConnectionPool(name).get_stats()
    except Exception:  # a pool that cannot be opened (settings refused): left out
        return None


def samples() -> Iterator[tuple[str, tuple, float]]:
    """(name without prefix, label values, value) for every series, read now. A histogram's value
    is the pool's dict: cumulative ``buckets`` [(upper bound, count)], ``sum``, ``count``."""
    from fast_litellm.litellm.state import state, transports

    yield "installed", (), 1.0 if state.installed else 0.0
    # Every pool of the process: the hooks' and any made directly (SimpleConnectionPool, transports).
    pools = sorted(set(state.pool_names()) | set(_core.pool_names()))
    for pool in pools:
        stats = _pool_stats(pool)
        if stats is None:
            continue
        for origin, counts in stats.get("endpoints", {}).items():
            yield "connections", (pool, origin, "active"), counts.get("active", 0)
            yield "connections", (pool, origin, "idle"), counts.get("idle", 0)
            yield "connections_by_http_version", (pool, origin, "1.1"), counts.get("http1_connections", 0)
            yield "connections_by_http_version", (pool, origin, "2"), counts.get("http2_connections", 0)
            yield "http2_streams_in_use", (pool, origin), counts.get("streams_in_use", 0)
            yield "tls_handshakes", (pool, origin, "full"), counts.get("tls_handshakes_full", 0)
            yield "tls_handshakes", (pool, origin, "resumed"), counts.get("tls_handshakes_resumed", 0)
            if "connect_seconds" in counts:
                yield "connect_duration_seconds", (pool, origin), counts["connect_seconds"]
        yield "requests_waiting", (pool,), stats.get("waiting_requests", 0)
        settings = stats.get("settings", {})
        yield "pool_max_connections", (pool,), settings.get("max_connections", 0)
        yield "pool_max_connections_per_endpoint", (pool,), settings.get("max_connections_per_endpoint", 0)
        yield "connections_created", (pool,), stats.get("connections_created", 0)
        yield "connections_reused", (pool,), stats.get("connections_reused", 0)
        for reason, n in stats.get("connections_closed", {}).items():
            yield "connections_closed", (pool, reason), n
        yield "pool_waits", (pool,), stats.get("waits", 0)
        yield "pool_wait_timeouts", (pool,), stats.get("wait_timeouts", 0)
        if "wait_seconds" in stats:
            yield "pool_wait_duration_seconds", (pool,), stats["wait_seconds"]
    totals: dict = {}
    for transport, pool in transports():
        counts = totals.setdefault(pool, {})
        for key, value in transport.stats().items():
            counts[key] = counts.get(key, 0) + value
    for pool, counts in totals.items():
        yield "requests", (pool,), counts.get("requests", 0)
        yield "retries", (pool,), counts.get("retried_on_fresh_connection", 0)
        yield "drains", (pool, "drained"), counts.get("bodies_drained", 0)
        yield "drains", (pool, "not_drained"), counts.get("bodies_not_drained", 0)
        yield "proxied_requests", (pool,), counts.get("proxied_requests", 0)
    for kind, counts in (("transport", state.fallback_transports), ("request", state.fallback_requests)):
        for reason, n in list(counts.items()):
            yield "handed_to_litellm", (kind, reason), n


class Collector:
    """prometheus_client collector (one process): every series read at scrape time."""

    def describe(self) -> list:
        return self._families()

    def collect(self) -> list:
        families = {f.name: f for f in self._families()}
        for name, labels, value in samples():
            if name in HISTOGRAMS:
                buckets = [(_bound(le), n) for le, n in value["buckets"]]
                families[PREFIX + name].add_metric(list(labels), buckets, value["sum"])
            else:
                families[PREFIX + name].add_metric(list(labels), value)
        return list(families.values())

    @staticmethod
    def _families() -> list:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        families = [GaugeMetricFamily(PREFIX + n, h, labels=list(l)) for n, (h, l) in GAUGES.items()]
        families += [CounterMetricFamily(PREFIX + n, h, labels=list(l)) for n, (h, l) in COUNTERS.items()]
        families += [HistogramMetricFamily(PREFIX + n, h, labels=list(l)) for n, (h, l) in HISTOGRAMS.items()]
        return families


def _bound(le: float) -> str:
    """A bucket's upper bound as Prometheus writes it."""
    from prometheus_client.utils import floatToGoString

    return floatToGoString(le)


class MultiprocessWriter:
    """Copies this process's figures into prometheus_client's multiprocess files."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.gauges = {n: Gauge(PREFIX + n, h, list(l), registry=None,
                                multiprocess_mode=GAUGE_MODES.get(n, "livesum"))  # type: ignore[arg-type]
                       for n, (h, l) in GAUGES.items()}
        self.counters = {n: Counter(PREFIX + n, h, list(l), registry=None) for n, (h, l) in COUNTERS.items()}
        bounds = [le for le, _ in _core.get_connection_pool_stats()["wait_seconds"]["buckets"]]
        self.histograms = {n: Histogram(PREFIX + n, h, list(l), registry=None, buckets=bounds)
                           for n, (h, l) in HISTOGRAMS.items()}
        # (name, labels) -> last value written (counters: total; histograms: per-bucket counts, sum)
        self.written: dict[tuple, Any] = {}
        self.lock = _locks.lock()

    def _metric(self, name: str, labels: tuple) -> Any:
        metric = self.gauges.get(name) or self.counters.get(name) or self.histograms[name]
        return metric.labels(*labels) if labels else metric

    def _add_to_histogram(self, name: str, labels: tuple, value: dict) -> None:
        """A histogram cannot be set, only observed: the buckets and sum grow by what the pool
        counted since the last write (prometheus_client keeps per-bucket counts, as the pool)."""
        cumulative = [n for _, n in value["buckets"]]
        counts = [b - a for a, b in zip([0] + cumulative[:-1], cumulative)]
        before = self.written.get((name, labels))
        if before is None or any(n < m for n, m in zip(counts, before[0])):
            before = ([0] * len(counts), 0.0)  # new series, or a fresh process's (after a fork)
        child = self._metric(name, labels)
        for bucket, (now, then) in zip(child._buckets, zip(counts, before[0])):
            if now > then:
                bucket.inc(now - then)
        if value["sum"] > before[1]:
            child._sum.inc(value["sum"] - before[1])
        self.written[(name, labels)] = (counts, value["sum"])

    def write(self) -> None:
        with self.lock:
            seen = set()
            for name, labels, value in samples():
                key = (name, labels)
                seen.add(key)
                if name in self.histograms:
                    self._add_to_histogram(name, labels, value)
                    continue
                if name in self.gauges:
                    if self.written.get(key) != value:
                        self._metric(name, labels).set(value)
                        self.written[key] = value
                    continue
                before = self.written.get(key)
                if before is None:
                    self._metric(name, labels)  # the series exists from now on, even at 0
                    before = 0
                if value < before:  # a fresh process's counters (after a fork): count from zero
                    before = 0
                if value > before:
                    self._metric(name, labels).inc(value - before)
                self.written[key] = value
            for key in [k for k in self.written if k not in seen and k[0] in self.gauges]:
                self._metric(*key).set(0)  # a gauge series that is gone (an endpoint with no connection)
                del self.written[key]

    def forget_counts(self) -> None:
        """In a forked child: its counters start from zero."""
        self.written = {key: value for key, value in self.written.items() if key[0] in self.gauges}


class _Exporter:
    """What is running: the collector, or the multiprocess writer and its thread."""

    def __init__(self) -> None:
        self.lock = _locks.lock()
        self.wanted = False
        self.mode: Optional[str] = None  # "collector" | "multiprocess"
        self.collector: Optional[Collector] = None
        self.writer: Optional[MultiprocessWriter] = None
        self.thread: Optional[threading.Thread] = None
        self.stop = threading.Event()
        self.finder: Optional[AfterImport] = None
        self.error: Optional[str] = None

    def start(self) -> None:
        """Called once prometheus_client is imported."""
        if not self.wanted:
            return
        try:
            # Imported before taking the lock (another thread may be importing it and wait
            # for that lock in the post-import hook).
            from prometheus_client import REGISTRY
            import prometheus_client.core  # noqa: F401
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return
        with self.lock:
            if not self.wanted or self.mode is not None:
                return
            try:
                if _multiprocess():
                    if self.writer is None:
                        self.writer = MultiprocessWriter()
                    self.mode = "multiprocess"
                    self._start_thread()
                else:
                    self.collector = Collector()
                    REGISTRY.register(self.collector)
                    self.mode = "collector"
            except Exception as exc:  # never fail the import of whoever imported prometheus_client
                self.error = f"{type(exc).__name__}: {exc}"
                logger.warning("fast_litellm: Prometheus metrics are off: %s", self.error)

    def _start_thread(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(self.stop, self.writer),
                                       name="fast_litellm metrics", daemon=True)
        self.thread.start()

    def _run(self, stop: threading.Event, writer: MultiprocessWriter) -> None:
        interval = _interval()
        while True:
            try:
                writer.write()
            except Exception as exc:  # keep going: the next round may work
                logger.debug("fast_litellm: metrics not written: %s", exc)
            if stop.wait(interval):
                return

    def halt(self) -> None:
        registry = getattr(sys.modules.get("prometheus_client"), "REGISTRY", None)
        with self.lock:
            self.wanted = False
            if self.finder is not None:
                self.finder.remove()
                self.finder = None
            if self.mode == "collector" and self.collector is not None and registry is not None:
                try:
                    registry.unregister(self.collector)
                except KeyError:
                    pass
                self.collector = None
            elif self.mode == "multiprocess" and self.writer is not None:
                self.stop.set()
                try:
                    self.writer.write()  # the last figures: installed 0
                except Exception:
                    pass
            self.mode = None

    def after_fork_in_child(self) -> None:
        if self.mode == "multiprocess" and self.writer is not None:
            self.writer.forget_counts()
            self._start_thread()  # threads do not survive a fork


_exporter = _Exporter()


def _prometheus_client_loaded(finder: AfterImport, name: str, module: Any) -> None:
    finder.remove()
    _exporter.start()


def install() -> None:
    """Exports the figures once prometheus_client is imported (now, if it already is)."""
    if not _flag("FAST_LITELLM_METRICS", True):
        return
    with _exporter.lock:
        if _exporter.wanted:
            return
        _exporter.wanted = True
        loaded = "prometheus_client" in sys.modules
        if not loaded:
            _exporter.finder = AfterImport(["prometheus_client"], _prometheus_client_loaded)
            sys.meta_path.insert(0, _exporter.finder)
    if loaded:
        _exporter.start()


def uninstall() -> None:
    _exporter.halt()


def state() -> dict:
    """For status(): how the figures reach Prometheus in this process."""
    if _exporter.mode == "multiprocess":
        how = f"multiprocess files, every {_interval():g} s"
    elif _exporter.mode == "collector":
        how = "collector in prometheus_client.REGISTRY"
    elif _exporter.wanted:
        how = "waiting for prometheus_client to be imported"
    else:
        how = "off"
    return {"prometheus": how, "error": _exporter.error}



def after_fork_in_child() -> None:
    """The metrics' after-fork step (fast_litellm/__init__.py runs every part's, in order)."""
    _exporter.after_fork_in_child()
