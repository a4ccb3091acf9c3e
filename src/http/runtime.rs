//! The process's tokio runtime: one per process, created on first use, made anew in a forked
//! child (a fork keeps only the forking thread, so the parent's worker threads are gone).

use once_cell::sync::Lazy;
use parking_lot::RwLock;
use std::future::Future;
use tokio::runtime::{Builder, Handle, Runtime};

/// Worker threads: by default one, because on a small machine the Python thread needs the
/// other core. `FAST_LITELLM_IO_THREADS` overrides it.
fn worker_threads() -> usize {
    std::env::var("FAST_LITELLM_IO_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// Only touched by threads that call into the engine from outside the runtime (under Python's
/// GIL), so the forking thread never finds it locked.
static RUNTIME: Lazy<RwLock<Option<&'static Runtime>>> = Lazy::new(|| RwLock::new(None));

fn handle() -> Handle {
    if let Some(rt) = *RUNTIME.read() {
        return rt.handle().clone();
    }
    let mut slot = RUNTIME.write();
    let rt = *slot.get_or_insert_with(|| {
        let rt = Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .thread_name("fast-litellm-io")
            .enable_all()
            .build()
            .expect("the tokio runtime could not start");
        // Lives as long as the process: connections and their tasks are spawned on it.
        Box::leak(Box::new(rt))
    });
    rt.handle().clone()
}

/// Runs a future to completion on the calling thread (with IO driven by the runtime).
pub fn block_on<F: Future>(future: F) -> F::Output {
    handle().block_on(future)
}

/// Runs a future on the runtime's workers.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match Handle::try_current() {
        Ok(current) => current.spawn(future),
        Err(_) => handle().spawn(future),
    }
}

/// In a forked child: forget the parent's runtime (its threads do not exist here); the next
/// use starts a new one.
pub fn reset_after_fork() {
    *RUNTIME.write() = None;
}
