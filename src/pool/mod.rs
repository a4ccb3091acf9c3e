//! The connection pool's public face: `Pool` (checkout, return, the id API, stats, cleanup) and
//! what a slot holds (`Connection`). The bookkeeping under the endpoints' locks is in `state`,
//! slots in `slot`, ids in `id`, leases in `lease`, waiting checkouts in `waiter`, the thread's
//! endpoint cache in `near`, the background cleanup in `reaper`.
//!
//! Pure Rust and generic over what a slot holds ([`Connection`]), so it knows nothing of Python
//! or HTTP. The fast path (checking out an idle connection and returning it) takes only the
//! lock of its own endpoint and a few atomics: no global lock, O(1) in the number of
//! connections.

mod clock;
mod endpoint;
mod id;
mod lease;
mod near;
mod reaper;
mod settings;
mod slot;
mod state;
mod stats;
mod waiter;

pub use clock::{Clock, ManualClock, Nanos, SystemClock};
pub use endpoint::{Endpoint, EndpointError, Scheme, Via, MAX_ENDPOINT_LEN};
pub use settings::{seconds, Settings, SettingsError};
pub use stats::{CloseReason, Counters, EndpointCounts, Histogram, HistogramSnapshot, PoolStats, BUCKET_BOUNDS};
pub use id::ConnId;
pub use lease::Lease;
use lease::Home;
pub use slot::EndpointRef;
pub use waiter::Ticket;

use id::{SlotKey, SlotNaming};
use near::Near;
use reaper::Reaper;
use slot::{EndpointSlots, Reservation, ShutSlot, Slot, SlotState};
use state::{PoolState, SlotUse};
pub(crate) use state::Evict;

use dashmap::DashMap;
use parking_lot::Mutex;
use settings::LiveSettings;
use stats::AtomicCounters;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;
use waiter::Waiter;

/// How many distinct endpoint strings a pool remembers (see [`Pool::endpoint_ref_str`]).
const MAX_REMEMBERED_ORIGINS: usize = 1024;

/// What a slot holds. The pool asks one question of it: is it still usable?
pub trait Connection: Send + Sync + 'static {
    /// What the layer above keeps per endpoint beside the slots, living as long as the
    /// endpoint's entry (the HTTP engine: the HTTP/2 connections its streams share).
    type PerEndpoint: Default + Send + Sync + 'static;

    /// False once the peer closed it or it broke. Checked before an idle connection is reused.
    fn is_open(&self) -> bool;

    /// Whether a connection given back is worth keeping. [`Connection::is_open`] unless a look
    /// costs more than it saves here: it is looked at again before it is reused.
    fn is_open_when_returned(&self) -> bool {
        self.is_open()
    }
}

/// A slot with no live connection behind it (the pool's bookkeeping alone).
impl Connection for () {
    type PerEndpoint = ();

    fn is_open(&self) -> bool {
        true
    }
}

/// Why a non-blocking checkout found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtLimit {
    /// `max_connections_per_endpoint` connections of this endpoint are open.
    Endpoint,
    /// `max_connections` connections are open and none of them is idle.
    Pool,
}

/// Returned by [`Pool::wait`] when no connection freed up in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTimeout;

/// A connection pool. Cloning gives another handle to the same pool.
pub struct Pool<C: Connection> {
    shared: Arc<PoolState<C>>,
}

impl<C: Connection> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Pool { shared: self.shared.clone() }
    }
}

impl<C: Connection> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        f.debug_struct("Pool")
            .field("active", &s.active)
            .field("idle", &s.idle)
            .field("waiting", &s.waiting)
            .finish_non_exhaustive()
    }
}

impl<C: Connection> Pool<C> {
    /// A pool on the system clock; starts its reaper if `settings.reaper_interval` is set.
    pub fn new(settings: Settings) -> Result<Pool<C>, SettingsError> {
        Pool::with_clock(settings, Arc::new(SystemClock))
    }

    pub fn with_clock(settings: Settings, clock: Arc<dyn Clock>) -> Result<Pool<C>, SettingsError> {
        settings.validate()?;
        let pool = Pool {
            shared: Arc::new(PoolState {
                settings: LiveSettings::new(&settings),
                clock,
                entries: DashMap::default(),
                origins: DashMap::default(),
                ids: DashMap::default(),
                near: ThreadLocal::new(),
                naming: SlotNaming::random(),
                next_endpoint_number: AtomicU32::new(0),
                open: Arc::new(AtomicUsize::new(0)),
                waiters: Mutex::new(VecDeque::new()),
                waiting: AtomicUsize::new(0),
                counters: AtomicCounters::default(),
                retire: Mutex::new(()),
                retire_seq: AtomicU64::new(0),
                reaper: Mutex::new(None),
            }),
        };
        pool.set_reaper(settings.reaper_interval);
        Ok(pool)
    }

    pub fn settings(&self) -> Settings {
        self.shared.settings.load()
    }

    /// Changes settings in place. Lower limits close nothing at once: connections above them
    /// are not handed out again, and are closed when they come back or are next looked at.
    /// Higher limits serve waiters at once.
    pub fn configure(&self, settings: Settings) -> Result<(), SettingsError> {
        settings.validate()?;
        self.shared.settings.store(&settings);
        self.set_reaper(settings.reaper_interval);
        self.shared.serve_waiters_if_any();
        Ok(())
    }

    /// The reference to an endpoint's slots, for the checkouts below.
    pub fn endpoint_ref(&self, endpoint: &Endpoint) -> EndpointRef<C> {
        EndpointRef(self.shared.entry(endpoint))
    }

    /// The reference to an endpoint's slots, from a URL string. Bare origins (strings with nothing that
    /// parsing drops, so nothing secret) are remembered, and the next lookup skips parsing.
    pub fn endpoint_ref_str(&self, input: &str) -> Result<EndpointRef<C>, EndpointError> {
        self.with_endpoint_ref_str(input, EndpointRef::clone)
    }

    /// [`Pool::endpoint_ref_str`] without the reference counting of an owned reference (the id API's hot
    /// path).
    pub fn with_endpoint_ref_str<R>(&self, input: &str, f: impl FnOnce(&EndpointRef<C>) -> R) -> Result<R, EndpointError> {
        let near = self.shared.near.get_or_default();
        if let Some(endpoint_ref) = near.borrow().by_name(input) {
            return Ok(f(endpoint_ref));
        }
        let endpoint_ref = match self.shared.origins.get(input) {
            Some(remembered) => remembered.clone(),
            None => {
                let endpoint_ref = EndpointRef(self.shared.entry(&Endpoint::parse(input)?));
                if !Endpoint::is_bare_origin(input) {
                    return Ok(f(&endpoint_ref));
                }
                if self.shared.origins.len() < MAX_REMEMBERED_ORIGINS {
                    self.shared.origins.insert(input.into(), endpoint_ref.clone());
                }
                endpoint_ref
            }
        };
        // Remembered before `f` runs, not while (it may look up again).
        if let Ok(mut near) = near.try_borrow_mut() {
            near.remember(input, &endpoint_ref);
        }
        Ok(f(&endpoint_ref))
    }

    /// Takes a connection without waiting: the most recently used healthy idle one of the
    /// endpoint, else a new slot if the limits allow (its connection is opened by the caller).
    pub fn try_get(&self, endpoint_ref: &EndpointRef<C>) -> Result<Lease<C>, AtLimit> {
        self.shared.try_get(&endpoint_ref.0, Evict::Allowed)
    }

    /// Takes a connection, or queues for one (first come, first served). The [`Ticket`] is
    /// waited on with [`Ticket::wait_until`] or awaited as a future; dropping it leaves the queue.
    pub fn get_or_queue(&self, endpoint_ref: &EndpointRef<C>) -> Result<Lease<C>, Ticket<C>> {
        // With others already queued, a newcomer goes behind them instead of taking first.
        if self.shared.waiting.load(SeqCst) == 0 {
            if let Ok(lease) = self.shared.try_get(&endpoint_ref.0, Evict::Allowed) {
                return Ok(lease);
            }
        }
        Waiter::enqueue(&self.shared, endpoint_ref.0.clone())
    }

    /// Takes a connection, blocking the thread until one frees up or `timeout` passes.
    pub fn wait(&self, endpoint_ref: &EndpointRef<C>, timeout: Option<Duration>) -> Result<Lease<C>, WaitTimeout> {
        match self.get_or_queue(endpoint_ref) {
            Ok(lease) => Ok(lease),
            Err(mut ticket) => ticket.wait_until(timeout.map(|t| Instant::now() + t)).ok_or_else(|| {
                self.record_wait_timeout();
                WaitTimeout
            }),
        }
    }

    /// Like [`Pool::try_get`], for callers that hold ids instead of leases: the connection is
    /// parked under its id until [`Pool::return_by_id`] or [`Pool::remove_by_id`].
    pub fn try_get_id(&self, endpoint_ref: &EndpointRef<C>) -> Result<ConnId, AtLimit> {
        self.shared.take(&endpoint_ref.0, Evict::Allowed, |st, _, slot, _| {
            let id = slot.id;
            st.parked.insert(id.slot_key(), slot);
            id
        })
    }

    /// Parks a lease under its id (see [`Pool::try_get_id`]).
    pub fn check_out_by_id(&self, mut lease: Lease<C>) -> ConnId {
        let slot = lease.slot.take().expect("a lease holds its slot until it ends");
        let id = slot.id;
        lease.entry.state.lock().parked.insert(id.slot_key(), slot);
        id
    }

    /// Lends the slot checked out under `id` to a request, as a lease: the id's holder still
    /// holds it (it stays active), and the lease ending puts it back under the same id. `None`
    /// if the id is not checked out, or is lent already (one request at a time).
    pub fn lend_parked(&self, id: ConnId) -> Option<Lease<C>> {
        let entry = self.shared.ids.get(&id.slot_key())?.clone();
        let slot = entry.state.lock().unpark(id)?;
        let reused = slot.conn.is_some();
        Some(Lease { slot: Some(slot), entry, pool: self.shared.clone(), reused, home: Home::Parked })
    }

    /// True if the id is checked out (or idle since) and its connection has been opened.
    pub fn is_connected(&self, id: ConnId) -> bool {
        self.shared
            .with_entry_of(id, |entry| {
                let st = entry.state.lock();
                let parked = st.parked.get(&id.slot_key()).filter(|s| s.id == id);
                Some(parked.or_else(|| st.idle.iter().find(|s| s.id == id))?.conn.is_some())
            })
            .unwrap_or(false)
    }

    /// Returns a connection checked out by id. False (and nothing changes) if the id is not
    /// checked out: never checked out, already returned, removed, or an earlier checkout's.
    pub fn return_by_id(&self, id: ConnId) -> bool {
        let returned = self.shared.with_entry_of(id, |entry| {
            let mut st = entry.state.lock();
            let slot = st.unpark(id)?;
            Some(self.shared.check_in_locked(&mut st, slot))
        });
        match returned {
            Some(checked_in) => {
                self.shared.finish_check_in(checked_in);
                true
            }
            None => {
                self.shared.counters.ignored_return();
                false
            }
        }
    }

    /// Closes a connection, checked out under this id or idle since. False if there is no such
    /// connection (or it is leased, or checked out again since: its holder decides).
    pub fn remove_by_id(&self, id: ConnId) -> bool {
        let removed = self.shared.with_entry_of(id, |entry| {
            let mut st = entry.state.lock();
            if let Some(slot) = st.unpark(id) {
                let shut = slot.shut();
                st.active -= 1;
                return Some(shut);
            }
            let i = st.idle.iter().position(|s| s.id == id)?;
            st.idle.remove(i).map(Slot::shut)
        });
        match removed {
            Some(shut) => {
                self.shared.forget(shut, CloseReason::Removed);
                self.shared.serve_waiters_if_any();
                true
            }
            None => false,
        }
    }

    /// True if the id names a connection checked out under it or idle since, that is open and
    /// unexpired.
    pub fn is_healthy(&self, id: ConnId) -> bool {
        let now = self.shared.clock.now();
        self.shared
            .with_entry_of(id, |entry| {
                let st = entry.state.lock();
                if let Some(slot) = st.parked.get(&id.slot_key()).filter(|s| s.id == id) {
                    return Some(slot.is_open() && self.shared.expiry(slot, now, SlotUse::Active).is_none());
                }
                let slot = st.idle.iter().find(|s| s.id == id)?;
                Some(slot.is_open() && self.shared.expiry(slot, now, SlotUse::Idle).is_none())
            })
            .unwrap_or(false)
    }

    /// Closes idle connections that are expired or broken; returns how many. Active ones are
    /// never touched. Also forgets endpoints that have no connections left.
    pub fn cleanup(&self) -> usize {
        self.shared.cleanup()
    }

    pub fn stats(&self) -> PoolStats {
        self.shared.stats()
    }

    /// `look` applied to what the layer above keeps for each endpoint, by origin.
    pub fn per_endpoint<R>(&self, look: impl Fn(&C::PerEndpoint) -> R) -> Vec<(String, R)> {
        self.shared.entries.iter().map(|entry| (entry.key().to_string(), look(&entry.value().per_endpoint))).collect()
    }

    /// Counts a queued checkout that gave up (for callers that time out a [`Ticket`] future).
    pub fn record_wait_timeout(&self) {
        self.shared.counters.wait_timeout();
    }

    /// Starts, restarts or (with `None`) stops the background reaper.
    fn set_reaper(&self, interval: Option<Duration>) {
        let mut reaper = self.shared.reaper.lock();
        if reaper.as_ref().map(|r| r.interval) == Some(interval) {
            return;
        }
        if let Some(old) = reaper.take() {
            old.stop();
        }
        if let Some(interval) = interval {
            *reaper = Reaper::start(Arc::downgrade(&self.shared), interval);
        }
    }
}

#[cfg(test)]
mod tests;
