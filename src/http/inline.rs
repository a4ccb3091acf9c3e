//! A sync caller drives its own request on its own thread: the futures are polled there, an
//! HTTP/1.1 connection's socket is read and written there, and when nothing can move the thread
//! waits in `poll(2)` on the sockets it needs and on its own wake-up descriptor. Handing each
//! request to the runtime's thread and back cost two more thread switches a request (3 instead
//! of 1), about a third of the engine's CPU time for a small request on loopback.
//!
//! The runtime still runs what is shared: timers, name lookups, HTTP/2 connections (many callers'
//! streams), and connects; those wake the sync caller through its waker like any task's.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags, Timespec};

/// Who polls the futures on this thread, which decides where a socket's readiness comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A runtime worker (or any thread not under [`block_on`] / [`poll_now`]): tokio's reactor.
    Runtime,
    /// [`block_on`]: a socket that would block says so in [`want`], and this thread waits on it.
    Driving,
    /// [`poll_now`]: take what is there without waiting; a socket stays where it is.
    Peeking,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Runtime) };
    /// The sockets the last poll found not ready, and what for.
    static WANTED: RefCell<Vec<(Arc<TcpStream>, PollFlags)>> = const { RefCell::new(Vec::new()) };
    static SIGNAL: RefCell<Option<Arc<Signal>>> = const { RefCell::new(None) };
    /// The current look at the sockets: a new one after the thread waited.
    static PASS: Cell<u64> = const { Cell::new(0) };
}

/// Numbers the looks of every thread, so that a socket's mark from one thread's look means
/// nothing in another's.
static LOOKS: AtomicU64 = AtomicU64::new(1);

/// Which look at the sockets this is. Within one, a socket found empty is not asked again:
/// what arrives meanwhile is seen by the wait (`poll(2)`) that ends the look, so asking again
/// would only cost system calls.
pub fn pass() -> u64 {
    PASS.with(Cell::get)
}

fn next_pass() {
    PASS.with(|p| p.set(LOOKS.fetch_add(1, Relaxed)));
}

pub fn mode() -> Mode {
    MODE.with(Cell::get)
}

/// Called by a socket that would block under [`Mode::Driving`]: the thread waits for it.
pub fn want(socket: &Arc<TcpStream>, writable: bool) {
    let flags = if writable { PollFlags::OUT } else { PollFlags::IN };
    WANTED.with(|w| w.borrow_mut().push((socket.clone(), flags)));
}

/// Forgets the sockets wanted (so that a socket's only owner is its connection again).
fn forget_wanted() {
    WANTED.with(|w| w.borrow_mut().clear());
}

/// Sets the thread's mode for as long as it lives.
struct ModeGuard(Mode);

impl ModeGuard {
    fn set(mode: Mode) -> ModeGuard {
        ModeGuard(MODE.with(|m| m.replace(mode)))
    }
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        MODE.with(|m| m.set(self.0));
    }
}

const POLLING: u8 = 0;
const WAITING: u8 = 1;
const WOKEN: u8 = 2;

/// One thread's waker: a wake while the thread polls only sets a flag; a wake while it waits
/// writes to its eventfd, which its `poll(2)` watches.
struct Signal {
    state: AtomicU8,
    eventfd: OwnedFd,
    /// The process it was made in: a forked child shares the descriptor with its parent, so it
    /// makes its own.
    fork_generation: usize,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.swap(WOKEN, AcqRel) == WAITING {
            let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
        }
    }
}

fn signal() -> std::io::Result<Arc<Signal>> {
    let generation = super::runtime::fork_generation();
    SIGNAL.with(|s| {
        let mut s = s.borrow_mut();
        if let Some(signal) = s.as_ref().filter(|signal| signal.fork_generation == generation) {
            return Ok(signal.clone());
        }
        let eventfd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
        let signal = Arc::new(Signal { state: AtomicU8::new(POLLING), eventfd, fork_generation: generation });
        *s = Some(signal.clone());
        Ok(signal)
    })
}

/// Runs `future` on the calling thread for at most `slice` (then `None`: the caller checks for
/// signals and calls again). Within the runtime's context, so timers and tasks work as usual.
pub fn block_on<F: Future>(mut future: Pin<&mut F>, slice: Duration) -> Option<F::Output> {
    let signal = match signal() {
        Ok(signal) => signal,
        // No descriptor to wait on (the process is out of them): the runtime's way still works.
        Err(_) => return super::runtime::block_on(async { tokio::time::timeout(slice, future).await.ok() }),
    };
    let _context = super::runtime::enter();
    let _mode = ModeGuard::set(Mode::Driving);
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let until = Instant::now() + slice;
    next_pass();
    loop {
        forget_wanted();
        signal.state.store(POLLING, Release);
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            forget_wanted();
            return Some(out);
        }
        // Woken while polling: poll again at once, but never past the slice (a future that wakes
        // itself at every poll would otherwise keep the caller from checking for Ctrl-C).
        let woken = signal.state.compare_exchange(POLLING, WAITING, AcqRel, Acquire).is_err();
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            forget_wanted();
            return None;
        }
        if woken {
            continue;
        }
        wait(&signal, left);
        next_pass();
    }
}

/// Waits until a wanted socket is ready, the thread is woken, or `left` has passed.
fn wait(signal: &Signal, left: Duration) {
    WANTED.with(|wanted| {
        let wanted = wanted.borrow();
        let mut fds = Vec::with_capacity(wanted.len() + 1);
        fds.push(PollFd::new(&signal.eventfd, PollFlags::IN));
        for (socket, flags) in wanted.iter() {
            fds.push(PollFd::new(&**socket, *flags));
        }
        let timeout = Timespec { tv_sec: left.as_secs() as i64, tv_nsec: i64::from(left.subsec_nanos()) };
        let _ = poll(&mut fds, Some(&timeout));
        if fds[0].revents().contains(PollFlags::IN) {
            let mut count = [0u8; 8];
            let _ = rustix::io::read(&signal.eventfd, &mut count);
        }
    });
}

/// Polls `poll` without waiting, in [`Mode::Peeking`]: again for as long as it wakes itself
/// (a future that yields to let others run), a few times at most.
pub fn poll_now<T>(mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
    // A fresh look, unless within a pass of `block_on` (which waits for what is not there).
    if mode() != Mode::Driving {
        next_pass();
    }
    let _mode = ModeGuard::set(Mode::Peeking);
    let flag = Arc::new(Flag::default());
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    for _ in 0..8 {
        flag.0.store(0, Release);
        if let Poll::Ready(out) = poll(&mut cx) {
            return Poll::Ready(out);
        }
        if flag.0.load(Acquire) == 0 {
            break;
        }
    }
    Poll::Pending
}

#[derive(Default)]
struct Flag(AtomicU8);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(1, Release);
    }
}
