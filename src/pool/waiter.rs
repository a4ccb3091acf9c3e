//! Queued checkouts, served first come, first served, by blocking threads or by futures.

use super::{AtLimit, Connection, EndpointSlots, Evict, Lease, PoolState};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

enum WaitState<C: Connection> {
    Waiting(Option<Waker>),
    Served(Lease<C>),
    /// Handed over, or abandoned.
    Done,
}

pub(crate) struct Waiter<C: Connection> {
    entry: Arc<EndpointSlots<C>>,
    /// Taken under the queue's lock, before any endpoint's (see `PoolState`'s lock order).
    state: Mutex<WaitState<C>>,
    ready: Condvar,
}

impl<C: Connection> Waiter<C> {
    /// Joins the queue, then gives the queue a turn in order, so a newcomer never overtakes an
    /// earlier waiter, and a connection freed just before joining is not missed.
    pub(crate) fn enqueue(pool: &Arc<PoolState<C>>, entry: Arc<EndpointSlots<C>>) -> Result<Lease<C>, Ticket<C>> {
        let since = Instant::now();
        let waiter = Arc::new(Waiter { entry, state: Mutex::new(WaitState::Waiting(None)), ready: Condvar::new() });
        let blocked_by_pool_limit = {
            let mut queue = pool.waiters.lock();
            pool.waiting.fetch_add(1, SeqCst);
            queue.push_back(waiter.clone());
            serve_locked(pool, &mut queue)
        };
        if blocked_by_pool_limit.is_some() {
            Waiter::serve(pool);
        }
        let mut ticket = Ticket { waiter, pool: Arc::downgrade(pool), queued_since: None };
        match ticket.take_served() {
            Some(lease) => Ok(lease),
            None => {
                ticket.queued_since = Some(since);
                pool.counters.waited();
                Err(ticket)
            }
        }
    }

    /// Gives the queue a turn. A waiter held up by `max_connections` while other endpoints have
    /// idle connections gets room made for it: one of those is closed, outside the waiters lock
    /// (that visits every endpoint's lock), and the queue gets another turn.
    pub(crate) fn serve(pool: &Arc<PoolState<C>>) {
        loop {
            let blocked = serve_locked(pool, &mut pool.waiters.lock());
            match blocked {
                Some(entry) if pool.evict_idle_elsewhere(&entry) => continue,
                _ => return,
            }
        }
    }
}

/// Hands free connections to waiters in queue order. Endpoints found full are not asked twice.
/// Returns the endpoint of the first waiter held up by `max_connections`, if one was.
fn serve_locked<C: Connection>(pool: &Arc<PoolState<C>>, queue: &mut VecDeque<Arc<Waiter<C>>>) -> Option<Arc<EndpointSlots<C>>> {
    let mut blocked_by_pool_limit = None;
    let mut full_entries: Vec<*const EndpointSlots<C>> = Vec::new();
    let mut i = 0;
    while i < queue.len() {
        let waiter = queue[i].clone();
        if full_entries.contains(&Arc::as_ptr(&waiter.entry)) {
            i += 1;
            continue;
        }
        let mut state = waiter.state.lock();
        if !matches!(*state, WaitState::Waiting(_)) {
            queue.remove(i);
            pool.waiting.fetch_sub(1, SeqCst);
            continue;
        }
        match pool.try_get(&waiter.entry, Evict::NotHere) {
            Ok(lease) => {
                if let WaitState::Waiting(Some(waker)) = std::mem::replace(&mut *state, WaitState::Served(lease)) {
                    waker.wake();
                }
                waiter.ready.notify_one();
                queue.remove(i);
                pool.waiting.fetch_sub(1, SeqCst);
            }
            Err(AtLimit::Endpoint) => {
                full_entries.push(Arc::as_ptr(&waiter.entry));
                i += 1;
            }
            Err(AtLimit::Pool) => {
                blocked_by_pool_limit.get_or_insert_with(|| waiter.entry.clone());
                i += 1;
            }
        }
    }
    blocked_by_pool_limit
}

/// A place in the queue for a connection. Wait on it with [`Ticket::wait_until`], or await it.
/// Dropping it leaves the queue; a connection handed to it meanwhile goes back to the pool.
pub struct Ticket<C: Connection> {
    waiter: Arc<Waiter<C>>,
    pool: Weak<PoolState<C>>,
    /// When the checkout joined the queue, for the pool's wait-time histogram (None: served
    /// at once, never counted as a wait).
    queued_since: Option<Instant>,
}

impl<C: Connection> Ticket<C> {
    fn take_served(&mut self) -> Option<Lease<C>> {
        let mut state = self.waiter.state.lock();
        take_if_served(&mut state)
    }

    /// Blocks until served or `deadline` (`None`: no deadline). On `None` the ticket keeps its
    /// place and may be waited on again.
    pub fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Lease<C>> {
        let mut state = self.waiter.state.lock();
        loop {
            if let Some(lease) = take_if_served(&mut state) {
                return Some(lease);
            }
            match deadline {
                Some(deadline) => {
                    if self.waiter.ready.wait_until(&mut state, deadline).timed_out() {
                        return take_if_served(&mut state);
                    }
                }
                None => self.waiter.ready.wait(&mut state),
            }
        }
    }
}

fn take_if_served<C: Connection>(state: &mut WaitState<C>) -> Option<Lease<C>> {
    if !matches!(state, WaitState::Served(_)) {
        return None;
    }
    match std::mem::replace(state, WaitState::Done) {
        WaitState::Served(lease) => Some(lease),
        _ => None,
    }
}

impl<C: Connection> Future for Ticket<C> {
    type Output = Lease<C>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Lease<C>> {
        let mut state = self.waiter.state.lock();
        if let Some(lease) = take_if_served(&mut state) {
            return Poll::Ready(lease);
        }
        if let WaitState::Waiting(waker) = &mut *state {
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }
}

impl<C: Connection> Drop for Ticket<C> {
    fn drop(&mut self) {
        let previous = std::mem::replace(&mut *self.waiter.state.lock(), WaitState::Done);
        if let (Some(since), Some(pool)) = (self.queued_since, self.pool.upgrade()) {
            pool.counters.wait_time.observe(since.elapsed());
        }
        match previous {
            WaitState::Waiting(_) => {
                if let Some(pool) = self.pool.upgrade() {
                    let mut queue = pool.waiters.lock();
                    if let Some(i) = queue.iter().position(|w| Arc::ptr_eq(w, &self.waiter)) {
                        queue.remove(i);
                        pool.waiting.fetch_sub(1, SeqCst);
                    }
                }
            }
            // Served after the holder stopped waiting: the connection goes back (or onward).
            WaitState::Served(lease) => drop(lease),
            WaitState::Done => {}
        }
    }
}
