//! The process's tokio runtime: one per process, created on first use, made anew in a forked
//! child (a fork keeps only the forking thread, so the parent's worker threads are gone).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::OnceLock;
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

/// How deep a chain of forks (a child's child's ...) gets its own runtime; deeper ones share
/// the last one (never seen in practice).
const MAX_FORK_DEPTH: usize = 64;

/// One runtime per fork generation, each started on first use and living as long as the
/// process (connections and their tasks are spawned on it). No lock is shared across a fork:
/// a child uses the next slot, which nobody in the parent ever touched, so a lock held by
/// another parent thread at the moment of the fork cannot hang the child.
static RUNTIMES: [OnceLock<Box<Runtime>>; MAX_FORK_DEPTH] = [const { OnceLock::new() }; MAX_FORK_DEPTH];
/// Bumped in a forked child, which then starts its own runtime.
static FORK_GENERATION: AtomicUsize = AtomicUsize::new(0);

fn handle() -> &'static Handle {
    let generation = FORK_GENERATION.load(SeqCst).min(MAX_FORK_DEPTH - 1);
    RUNTIMES[generation]
        .get_or_init(|| {
            Box::new(
                Builder::new_multi_thread()
                    .worker_threads(worker_threads())
                    .thread_name("fast-litellm-io")
                    .enable_all()
                    .build()
                    .expect("the tokio runtime could not start"),
            )
        })
        .handle()
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

/// 0 in the process that loaded the module, one more in each forked child.
pub fn fork_generation() -> usize {
    FORK_GENERATION.load(SeqCst)
}

/// In a forked child: forget the parent's runtime (its threads do not exist here); the next
/// use starts a new one.
pub fn reset_after_fork() {
    FORK_GENERATION.fetch_add(1, SeqCst);
}

/// Makes the runtime the calling thread's context (timers, tasks, sockets) while the guard lives.
pub fn enter() -> tokio::runtime::EnterGuard<'static> {
    handle().enter()
}
