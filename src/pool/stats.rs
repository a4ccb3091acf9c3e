//! Counters and histograms kept with relaxed atomics, and the plain snapshots handed to readers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Why a connection was closed; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Idle for longer than `idle_timeout`.
    IdleTimeout,
    /// Older than `max_lifetime` (checked when idle, and when returned).
    MaxLifetime,
    /// The peer closed it or it broke (found by the health check).
    Unhealthy,
    /// Removed by its user (`remove_connection`, or a block that raised).
    Removed,
    /// Closed to make room for a connection to another endpoint under `max_connections`.
    Evicted,
    /// Not reusable after use: an I/O or protocol error, `Connection: close`, an undrained body.
    NotReusable,
    /// Opening it failed.
    ConnectFailed,
}

impl CloseReason {
    pub const ALL: [CloseReason; 7] = [
        CloseReason::IdleTimeout,
        CloseReason::MaxLifetime,
        CloseReason::Unhealthy,
        CloseReason::Removed,
        CloseReason::Evicted,
        CloseReason::NotReusable,
        CloseReason::ConnectFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::Unhealthy => "unhealthy",
            CloseReason::Removed => "removed",
            CloseReason::Evicted => "evicted",
            CloseReason::NotReusable => "not_reusable",
            CloseReason::ConnectFailed => "connect_failed",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct AtomicCounters {
    created: AtomicU64,
    reused: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    waited: AtomicU64,
    wait_timeouts: AtomicU64,
    ignored_returns: AtomicU64,
    /// How long queued checkouts stayed in the queue (served or not).
    pub wait_time: Histogram,
}

impl AtomicCounters {
    pub fn created(&self) {
        self.created.fetch_add(1, Relaxed);
    }
    /// Reuses counted by endpoints that were since retired.
    pub fn reused(&self, n: u64) {
        self.reused.fetch_add(n, Relaxed);
    }
    pub fn closed(&self, reason: CloseReason, n: u64) {
        self.closed[reason as usize].fetch_add(n, Relaxed);
    }
    pub fn waited(&self) {
        self.waited.fetch_add(1, Relaxed);
    }
    pub fn wait_timeout(&self) {
        self.wait_timeouts.fetch_add(1, Relaxed);
    }
    pub fn ignored_return(&self) {
        self.ignored_returns.fetch_add(1, Relaxed);
    }

    /// `reused_live`: the reuses counted by the endpoints still in the pool.
    pub fn snapshot(&self, reused_live: u64) -> Counters {
        Counters {
            created: self.created.load(Relaxed),
            reused: self.reused.load(Relaxed) + reused_live,
            closed: CloseReason::ALL.map(|r| (r, self.closed[r as usize].load(Relaxed))),
            waited: self.waited.load(Relaxed),
            wait_timeouts: self.wait_timeouts.load(Relaxed),
            ignored_returns: self.ignored_returns.load(Relaxed),
            wait_time: self.wait_time.snapshot(),
        }
    }
}

/// Monotonic counters since the pool was created.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Counters {
    pub created: u64,
    pub reused: u64,
    pub closed: [(CloseReason, u64); CloseReason::ALL.len()],
    /// Checkouts that had to queue for a free connection.
    pub waited: u64,
    /// Queued checkouts that gave up at their timeout.
    pub wait_timeouts: u64,
    /// `return_connection` calls for ids that were not checked out.
    pub ignored_returns: u64,
    /// Time spent queued by the checkouts that queued (its count is `waited`, give or take
    /// those still queued).
    pub wait_time: HistogramSnapshot,
}

impl Counters {
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().map(|(_, n)| n).sum()
    }

    pub fn closed_by(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize].1
    }
}

/// Connections of one endpoint at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointCounts {
    pub active: usize,
    pub idle: usize,
}

impl EndpointCounts {
    pub fn total(&self) -> usize {
        self.active + self.idle
    }
}

/// A snapshot of the pool. Each endpoint's counts are read under its lock, and the totals are
/// their sums, so `total == active + idle` holds in every snapshot.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolStats {
    pub active: usize,
    pub idle: usize,
    pub waiting: usize,
    pub endpoints: Vec<(String, EndpointCounts)>,
    pub counters: Counters,
}

impl PoolStats {
    pub fn total(&self) -> usize {
        self.active + self.idle
    }
}

/// Upper bounds of the histogram buckets, in seconds (Prometheus's default buckets, with 1 ms
/// added: a pool wait or a connect on a LAN is often below 5 ms).
pub const BUCKET_BOUNDS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Durations counted in fixed buckets, with relaxed atomics: observing costs a few atomic adds,
/// reading costs nothing to the writers. Kept only on slow paths (a queued checkout, a new
/// connection), never per request.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket; the last one is above every bound.
    buckets: [AtomicU64; BUCKET_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let i = BUCKET_BOUNDS.iter().position(|&bound| seconds <= bound).unwrap_or(BUCKET_BOUNDS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// A histogram read at one moment: observations per bucket of [`BUCKET_BOUNDS`] (not
/// cumulative; the last is above every bound) and their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub counts: [u64; BUCKET_BOUNDS.len() + 1],
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}
