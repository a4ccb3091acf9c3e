//! The engine's clock: monotonic nanoseconds (coarse, cheap) for timeouts measured against
//! socket activity, and durations in the same unit.

use crate::pool::{Clock, SystemClock};
use std::time::Duration;

/// Monotonic nanoseconds (coarse, cheap), for timeouts measured against socket activity.
pub(crate) fn now() -> u64 {
    SystemClock.now()
}

/// A duration in nanoseconds, capped far below overflow (deadlines add it to [`now`]).
pub fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX / 2)) as u64
}
