//! The background thread that runs `cleanup` every `reaper_interval`.

use super::{Connection, PoolState};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

/// The background thread that runs `cleanup`. It holds the pool weakly and ends with it.
pub(super) struct Reaper {
    pub(super) interval: Option<Duration>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: thread::Thread,
}

impl Reaper {
    pub(super) fn start<C: Connection>(pool: Weak<PoolState<C>>, interval: Duration) -> Option<Reaper> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = stop.clone();
        let handle = thread::Builder::new()
            .name("fast-litellm-reaper".into())
            .spawn(move || loop {
                thread::park_timeout(interval);
                if stop_seen.load(SeqCst) {
                    return;
                }
                match pool.upgrade() {
                    Some(pool) => {
                        pool.cleanup();
                    }
                    None => return,
                }
            })
            .ok()?;
        Some(Reaper { interval: Some(interval), stop, thread: handle.thread().clone() })
    }

    pub(super) fn stop(self) {
        self.stop.store(true, SeqCst);
        self.thread.unpark();
    }
}
