//! The connection pool: endpoints, slots, leases, limits, waiters, expiry and statistics.
//!
//! Pure Rust and generic over what a slot holds ([`Connection`]), so it knows nothing of Python
//! or HTTP. The fast path (checking out an idle connection and returning it) takes only the
//! lock of its own endpoint and a few atomics: no global lock, O(1) in the number of
//! connections.

mod clock;
mod endpoint;
mod settings;
mod stats;
mod waiter;

pub use clock::{Clock, ManualClock, Nanos, SystemClock};
pub use endpoint::{Endpoint, EndpointError, Scheme, MAX_ENDPOINT_LEN};
pub use settings::{seconds, Settings, SettingsError};
pub use stats::{CloseReason, Counters, EndpointCounts, Histogram, HistogramSnapshot, PoolStats, BUCKET_BOUNDS};
pub use waiter::Ticket;

use dashmap::DashMap;
use rustc_hash::{FxBuildHasher, FxHashMap};
use parking_lot::Mutex;
use settings::LiveSettings;
use stats::AtomicCounters;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};
use uuid::Uuid;
use waiter::Waiter;

/// How many distinct endpoint strings a pool remembers (see [`Pool::route_str`]).
const MAX_REMEMBERED_ORIGINS: usize = 1024;

/// What a slot holds. The pool asks one question of it: is it still usable?
pub trait Connection: Send + Sync + 'static {
    /// What the layer above keeps per endpoint beside the slots, living as long as the
    /// endpoint's entry (the HTTP engine: the HTTP/2 connections its streams share).
    type PerEndpoint: Default + Send + Sync + 'static;

    /// False once the peer closed it or it broke. Checked before an idle connection is reused
    /// and when one is returned.
    fn is_open(&self) -> bool;
}

/// A slot with no live connection behind it (the pool's bookkeeping alone).
impl Connection for () {
    type PerEndpoint = ();

    fn is_open(&self) -> bool {
        true
    }
}

/// The name of one checkout of a connection, shown to Python as a hyphenated UUIDv4 string.
///
/// The high 64 bits name the slot (random, fixed for its life); the low bits change at every
/// checkout. So an id handed out earlier (a late second `return_connection`) can never touch a
/// later checkout of the same connection: it no longer matches.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(Uuid);

/// The part of a [`ConnId`] that names the slot, whatever the checkout.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct SlotKey(u64);

/// The low 64 bits minus the two UUID variant bits: what a checkout changes.
const CHECKOUT_BITS: u64 = u64::MAX >> 2;

impl ConnId {
    fn new() -> ConnId {
        ConnId(Uuid::new_v4())
    }

    /// The id of the next checkout of the same slot (variant and version bits kept).
    fn next_checkout(self) -> ConnId {
        let (high, low) = self.0.as_u64_pair();
        let bumped = (low & !CHECKOUT_BITS) | (low.wrapping_add(1) & CHECKOUT_BITS);
        ConnId(Uuid::from_u64_pair(high, bumped))
    }

    fn slot_key(self) -> SlotKey {
        SlotKey(self.0.as_u64_pair().0)
    }

    /// Parses a hyphenated UUID string; `None` for anything else.
    pub fn parse(s: &str) -> Option<ConnId> {
        if s.len() != 36 {
            return None;
        }
        Uuid::try_parse(s).ok().map(ConnId)
    }

    /// The hyphenated lowercase form, without allocating.
    pub fn encode<'b>(&self, buf: &'b mut [u8; 36]) -> &'b str {
        self.0.hyphenated().encode_lower(buf)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({self})")
    }
}

/// One pooled connection: its name, its age, and the connection itself once opened.
struct Slot<C> {
    id: ConnId,
    created: Nanos,
    idle_since: Nanos,
    conn: Option<C>,
}

impl<C: Connection> Slot<C> {
    fn is_open(&self) -> bool {
        self.conn.as_ref().is_none_or(Connection::is_open)
    }

    /// Closes the connection itself (for a real one: its socket) now. Called before the slot
    /// stops counting toward the limits, so a server never sees more connections than they
    /// allow.
    fn shut(mut self) -> ShutSlot {
        self.conn = None;
        ShutSlot(self.id)
    }
}

/// A slot whose connection is already closed: only its id is left to forget.
#[must_use]
struct ShutSlot(ConnId);

/// The connections of one endpoint.
struct Host<C: Connection> {
    endpoint: Endpoint,
    per_endpoint: C::PerEndpoint,
    state: Mutex<HostState<C>>,
    /// Set (under `state`'s lock) when cleanup removes this empty host from the map; whoever
    /// still holds it looks the endpoint up again. An atomic so that forgetting remembered
    /// origins never waits behind a checkout.
    retired: AtomicBool,
}

struct HostState<C> {
    /// Most recently used at the back: checkout pops the back, expiry trims the front.
    idle: VecDeque<Slot<C>>,
    /// Checked-out connections: leased, being opened, or parked below.
    active: usize,
    /// Checked out through the id API: the slot waits here, under this lock, for its id.
    parked: FxHashMap<SlotKey, Slot<C>>,
    /// Checkouts that reused an idle connection. Counted here, under the lock already held,
    /// rather than in a shared atomic; added to the pool's counters when the host is retired.
    reused: u64,
}

impl<C: Connection> HostState<C> {
    /// The slot parked under exactly this id (not an earlier checkout of the same slot).
    fn unpark(&mut self, id: ConnId) -> Option<Slot<C>> {
        match self.parked.entry(id.slot_key()) {
            std::collections::hash_map::Entry::Occupied(e) if e.get().id == id => Some(e.remove()),
            _ => None,
        }
    }
}

/// An endpoint's place in a pool: looked up once, used for many checkouts.
pub struct Route<C: Connection>(Arc<Host<C>>);

impl<C: Connection> Route<C> {
    pub fn endpoint(&self) -> &Endpoint {
        &self.0.endpoint
    }

    /// What the layer above keeps for this endpoint.
    pub fn per_endpoint(&self) -> &C::PerEndpoint {
        &self.0.per_endpoint
    }
}

impl<C: Connection> Clone for Route<C> {
    fn clone(&self) -> Self {
        Route(self.0.clone())
    }
}

impl<C: Connection> fmt::Debug for Route<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Route({})", self.0.endpoint)
    }
}

/// Why a non-blocking checkout found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `max_connections_per_endpoint` connections of this endpoint are open.
    Endpoint,
    /// `max_connections` connections are open and none of them is idle.
    Pool,
}

/// Returned by [`Pool::wait`] when no connection freed up in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTimeout;

/// The pool's state, shared by its handles, leases, tickets and reaper.
///
/// Lock order: a thread holding one of these takes only those after it:
/// `waiters` → a waiter's `state` → `retire` → an `origins` shard → an `ids` shard → a `hosts`
/// shard → one endpoint's `state` (never two endpoints' at once). A connection is shut (its
/// socket closed) before its slot stops counting (for an idle one: under its endpoint's lock);
/// its id is forgotten in `ids` after that lock is released.
struct Shared<C: Connection> {
    settings: LiveSettings,
    clock: Arc<dyn Clock>,
    hosts: DashMap<Endpoint, Arc<Host<C>>, FxBuildHasher>,
    /// Endpoint strings seen before, so the hot path skips parsing. Only strings that are bare
    /// origins (nothing that parsing would drop, so nothing secret) are remembered.
    origins: DashMap<Box<str>, Route<C>, FxBuildHasher>,
    /// Every live connection's endpoint, by slot: written when a connection opens or closes,
    /// only read on the hot path.
    ids: DashMap<SlotKey, Arc<Host<C>>, FxBuildHasher>,
    /// Connections counted against `max_connections` (active, opening and idle).
    open: AtomicUsize,
    /// First come, first served. Touched only while `waiting > 0` or by a checkout that queues.
    waiters: Mutex<VecDeque<Arc<Waiter<C>>>>,
    waiting: AtomicUsize,
    counters: AtomicCounters,
    /// Held while cleanup retires endpoints, moving their reuse counts into `counters`...
    retire: Mutex<()>,
    /// ...and odd meanwhile (a sequence lock): a stats reader that sees it odd or changed reads
    /// again, so it never counts a reuse twice or not at all (counters never go down).
    retire_seq: AtomicU64,
    reaper: Mutex<Option<Reaper>>,
}

/// A connection pool. Cloning gives another handle to the same pool.
pub struct Pool<C: Connection> {
    shared: Arc<Shared<C>>,
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
            shared: Arc::new(Shared {
                settings: LiveSettings::new(&settings),
                clock,
                hosts: DashMap::default(),
                origins: DashMap::default(),
                ids: DashMap::default(),
                open: AtomicUsize::new(0),
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

    /// The route to an endpoint, for the checkouts below.
    pub fn route(&self, endpoint: &Endpoint) -> Route<C> {
        Route(self.shared.host(endpoint))
    }

    /// The route to an endpoint given as a URL string. Bare origins (strings with nothing that
    /// parsing drops, so nothing secret) are remembered, and the next lookup skips parsing.
    pub fn route_str(&self, input: &str) -> Result<Route<C>, EndpointError> {
        self.with_route_str(input, Route::clone)
    }

    /// [`Pool::route_str`] without the reference counting of an owned route (the id API's hot
    /// path).
    pub fn with_route_str<R>(&self, input: &str, f: impl FnOnce(&Route<C>) -> R) -> Result<R, EndpointError> {
        if let Some(route) = self.shared.origins.get(input) {
            return Ok(f(&route));
        }
        let route = Route(self.shared.host(&Endpoint::parse(input)?));
        if Endpoint::is_bare_origin(input) && self.shared.origins.len() < MAX_REMEMBERED_ORIGINS {
            self.shared.origins.insert(input.into(), route.clone());
        }
        Ok(f(&route))
    }

    /// Takes a connection without waiting: the most recently used healthy idle one of the
    /// endpoint, else a new slot if the limits allow (its connection is opened by the caller).
    pub fn try_get(&self, route: &Route<C>) -> Result<Lease<C>, Full> {
        self.shared.try_get(&route.0)
    }

    /// Takes a connection, or queues for one (first come, first served). The [`Ticket`] is
    /// waited on with [`Ticket::wait_until`] or awaited as a future; dropping it leaves the queue.
    pub fn get_or_queue(&self, route: &Route<C>) -> Result<Lease<C>, Ticket<C>> {
        // With others already queued, a newcomer goes behind them instead of taking first.
        if self.shared.waiting.load(SeqCst) == 0 {
            if let Ok(lease) = self.shared.try_get(&route.0) {
                return Ok(lease);
            }
        }
        Waiter::enqueue(&self.shared, route.0.clone())
    }

    /// Takes a connection, blocking the thread until one frees up or `timeout` passes.
    pub fn wait(&self, route: &Route<C>, timeout: Option<Duration>) -> Result<Lease<C>, WaitTimeout> {
        match self.get_or_queue(route) {
            Ok(lease) => Ok(lease),
            Err(mut ticket) => ticket.wait_until(timeout.map(|t| Instant::now() + t)).ok_or_else(|| {
                self.record_wait_timeout();
                WaitTimeout
            }),
        }
    }

    /// Like [`Pool::try_get`], for callers that hold ids instead of leases: the connection is
    /// parked under its id until [`Pool::return_by_id`] or [`Pool::remove_by_id`].
    pub fn try_get_id(&self, route: &Route<C>) -> Result<ConnId, Full> {
        match self.shared.take(&route.0, Take::Park)? {
            Taken::Parked(id) => Ok(id),
            Taken::Leased(..) => unreachable!("take parks when asked to"),
        }
    }

    /// Parks a lease under its id (see [`Pool::try_get_id`]).
    pub fn check_out_by_id(&self, mut lease: Lease<C>) -> ConnId {
        let slot = lease.slot.take().expect("a lease holds its slot until it ends");
        let id = slot.id;
        lease.host.state.lock().parked.insert(id.slot_key(), slot);
        id
    }

    /// Lends the slot checked out under `id` to a request, as a lease: the id's holder still
    /// holds it (it stays active), and the lease ending puts it back under the same id. `None`
    /// if the id is not checked out, or is lent already (one request at a time).
    pub fn lend_parked(&self, id: ConnId) -> Option<Lease<C>> {
        let host = self.shared.ids.get(&id.slot_key())?.clone();
        let slot = host.state.lock().unpark(id)?;
        let reused = slot.conn.is_some();
        Some(Lease { slot: Some(slot), host, pool: self.shared.clone(), reused, home: Home::Parked })
    }

    /// True if the id is checked out (or idle since) and its connection has been opened.
    pub fn is_connected(&self, id: ConnId) -> bool {
        self.shared
            .with_host_of(id, |host| {
                let st = host.state.lock();
                let parked = st.parked.get(&id.slot_key()).filter(|s| s.id == id);
                Some(parked.or_else(|| st.idle.iter().find(|s| s.id == id))?.conn.is_some())
            })
            .unwrap_or(false)
    }

    /// Returns a connection checked out by id. False (and nothing changes) if the id is not
    /// checked out: never checked out, already returned, removed, or an earlier checkout's.
    pub fn return_by_id(&self, id: ConnId) -> bool {
        let returned = self.shared.with_host_of(id, |host| {
            let mut st = host.state.lock();
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
        let removed = self.shared.with_host_of(id, |host| {
            let mut st = host.state.lock();
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
                self.shared.open.fetch_sub(1, SeqCst);
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
            .with_host_of(id, |host| {
                let st = host.state.lock();
                if let Some(slot) = st.parked.get(&id.slot_key()).filter(|s| s.id == id) {
                    return Some(slot.is_open() && self.shared.expiry(slot, now, false).is_none());
                }
                let slot = st.idle.iter().find(|s| s.id == id)?;
                Some(slot.is_open() && self.shared.expiry(slot, now, true).is_none())
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
        self.shared.hosts.iter().map(|entry| (entry.key().to_string(), look(&entry.value().per_endpoint))).collect()
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

/// What a returned connection needs once the endpoint's lock is released.
enum CheckedIn {
    Parked,
    Closed(ShutSlot, CloseReason),
}

/// A slot taken by a checkout.
enum Taken<C: Connection> {
    /// For a lease: the slot, and whether it is a reused connection.
    Leased(Arc<Host<C>>, Slot<C>, bool),
    /// Checked out by id: the slot stays parked under its endpoint's lock.
    Parked(ConnId),
}

enum Attempt<C: Connection> {
    Got(Taken<C>, Option<ConnId>),
    Full(Full),
    Retired,
}

/// What a checkout wants.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Take {
    /// A lease: an idle connection, else a new slot.
    Lease,
    /// The same, parked in the endpoint under its id.
    Park,
}

impl<C: Connection> Shared<C> {
    fn host(&self, endpoint: &Endpoint) -> Arc<Host<C>> {
        if let Some(host) = self.hosts.get(endpoint) {
            return host.clone();
        }
        self.hosts
            .entry(endpoint.clone())
            .or_insert_with(|| {
                Arc::new(Host {
                    endpoint: endpoint.clone(),
                    per_endpoint: C::PerEndpoint::default(),
                    state: Mutex::new(HostState {
                        idle: VecDeque::new(),
                        active: 0,
                        parked: FxHashMap::default(),
                        reused: 0,
                    }),
                    retired: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Runs `f` on the endpoint of a live connection; `None` for an unknown id.
    fn with_host_of<R>(&self, id: ConnId, f: impl FnOnce(&Host<C>) -> Option<R>) -> Option<R> {
        let host = self.ids.get(&id.slot_key())?;
        f(&host)
    }

    /// Why a slot must close now, if it must. `idle` slots also expire by idle time.
    fn expiry(&self, slot: &Slot<C>, now: Nanos, idle: bool) -> Option<CloseReason> {
        if now.saturating_sub(slot.created) >= self.settings.max_lifetime_nanos() {
            return Some(CloseReason::MaxLifetime);
        }
        if idle && now.saturating_sub(slot.idle_since) >= self.settings.idle_timeout_nanos() {
            return Some(CloseReason::IdleTimeout);
        }
        None
    }

    fn try_get(self: &Arc<Self>, host: &Arc<Host<C>>) -> Result<Lease<C>, Full> {
        match self.take(host, Take::Lease)? {
            Taken::Leased(host, slot, reused) => Ok(Lease { slot: Some(slot), host, pool: self.clone(), reused, home: Home::Pool }),
            Taken::Parked(_) => unreachable!("take parks only when asked to"),
        }
    }

    /// A slot of this endpoint, counted as active: an idle one, or a new one within the limits.
    fn take(&self, host: &Arc<Host<C>>, how: Take) -> Result<Taken<C>, Full> {
        let mut fresh_host: Option<Arc<Host<C>>> = None;
        let mut evicted_once = false;
        loop {
            let host = fresh_host.as_ref().unwrap_or(host);
            let (attempt, closed) = self.take_once(host, how);
            for (shut, reason) in closed {
                self.forget(shut, reason);
            }
            match attempt {
                Attempt::Got(taken, new_id) => {
                    // Indexed after the endpoint's lock is released (see the lock order).
                    if let Some(id) = new_id {
                        self.ids.insert(id.slot_key(), host.clone());
                    }
                    return Ok(taken);
                }
                Attempt::Retired => fresh_host = Some(self.host(&host.endpoint)),
                Attempt::Full(Full::Pool) if !evicted_once && self.evict_idle_elsewhere(host) => {
                    evicted_once = true;
                }
                Attempt::Full(full) => return Err(full),
            }
        }
    }

    /// One try under the endpoint's lock. Also returns the idle slots closed on the way (dead,
    /// expired, or above a lowered limit), whose ids are forgotten once the lock is released.
    fn take_once(&self, host: &Arc<Host<C>>, how: Take) -> (Attempt<C>, Vec<(ShutSlot, CloseReason)>) {
        let now = self.clock.now();
        let mut closed = Vec::new();
        let mut st = host.state.lock();
        if host.retired.load(SeqCst) {
            return (Attempt::Retired, closed);
        }
        let max_here = self.settings.max_connections_per_endpoint();
        // Above a lowered limit, idle connections are closed (oldest first), not handed out.
        while st.active + st.idle.len() > max_here || self.open.load(SeqCst) > self.settings.max_connections() {
            let Some(slot) = st.idle.pop_front() else { break };
            closed.push((slot.shut(), CloseReason::Evicted));
            self.open.fetch_sub(1, SeqCst);
        }
        if st.active >= max_here {
            return (Attempt::Full(Full::Endpoint), closed);
        }
        let mut reusable = None;
        while let Some(slot) = st.idle.pop_back() {
            let reason = if slot.is_open() { self.expiry(&slot, now, true) } else { Some(CloseReason::Unhealthy) };
            match reason {
                Some(reason) => {
                    closed.push((slot.shut(), reason));
                    self.open.fetch_sub(1, SeqCst);
                }
                None => {
                    reusable = Some(slot);
                    break;
                }
            }
        }
        let (slot, reused) = match reusable {
            Some(mut slot) => {
                st.reused += 1;
                slot.id = slot.id.next_checkout();
                (slot, true)
            }
            None if st.active + st.idle.len() >= max_here => return (Attempt::Full(Full::Endpoint), closed),
            None if !self.reserve_one() => return (Attempt::Full(Full::Pool), closed),
            None => {
                self.counters.created();
                (Slot { id: ConnId::new(), created: now, idle_since: now, conn: None }, false)
            }
        };
        st.active += 1;
        let new_id = (!reused).then_some(slot.id);
        let taken = if how == Take::Park {
            let id = slot.id;
            st.parked.insert(id.slot_key(), slot);
            Taken::Parked(id)
        } else {
            Taken::Leased(host.clone(), slot, reused)
        };
        (Attempt::Got(taken, new_id), closed)
    }

    /// Counts one more connection against `max_connections`, if there is room.
    fn reserve_one(&self) -> bool {
        let max = self.settings.max_connections();
        self.open.fetch_update(SeqCst, SeqCst, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// The last step of closing: the slot is already shut and out of every count.
    fn forget(&self, shut: ShutSlot, reason: CloseReason) {
        self.counters.closed(reason, 1);
        self.ids.remove(&shut.0.slot_key());
    }

    /// At `max_connections` with idle connections elsewhere: close the least recently used idle
    /// connection of another endpoint to make room. Takes no lock while holding another.
    fn evict_idle_elsewhere(&self, except: &Arc<Host<C>>) -> bool {
        let hosts = self.all_hosts();
        let mut oldest: Option<(&Arc<Host<C>>, Nanos)> = None;
        for host in hosts.iter().filter(|h| !Arc::ptr_eq(h, except)) {
            if let Some(front) = host.state.lock().idle.front() {
                if oldest.is_none_or(|(_, t)| front.idle_since < t) {
                    oldest = Some((host, front.idle_since));
                }
            }
        }
        let Some((host, _)) = oldest else { return false };
        let victim = host.state.lock().idle.pop_front().map(Slot::shut);
        match victim {
            Some(shut) => {
                self.open.fetch_sub(1, SeqCst);
                self.forget(shut, CloseReason::Evicted);
                true
            }
            None => false,
        }
    }

    fn all_hosts(&self) -> Vec<Arc<Host<C>>> {
        self.hosts.iter().map(|e| e.value().clone()).collect()
    }

    /// A lease comes back: parked as idle, or closed if it is broken, too old, or above a
    /// lowered limit. Then queued checkouts get their turn.
    fn check_in(self: &Arc<Self>, host: &Host<C>, slot: Slot<C>) {
        let checked_in = self.check_in_locked(&mut host.state.lock(), slot);
        self.finish_check_in(checked_in);
    }

    fn check_in_locked(&self, st: &mut HostState<C>, mut slot: Slot<C>) -> CheckedIn {
        let now = self.clock.now();
        let reason = if slot.is_open() { self.expiry(&slot, now, false) } else { Some(CloseReason::Unhealthy) };
        let above_limit = st.active + st.idle.len() > self.settings.max_connections_per_endpoint()
            || self.open.load(SeqCst) > self.settings.max_connections();
        match reason.or(above_limit.then_some(CloseReason::Evicted)) {
            Some(reason) => {
                let shut = slot.shut();
                st.active -= 1;
                self.open.fetch_sub(1, SeqCst);
                CheckedIn::Closed(shut, reason)
            }
            None => {
                st.active -= 1;
                slot.idle_since = now;
                st.idle.push_back(slot);
                CheckedIn::Parked
            }
        }
    }

    /// The part of a check-in done after the endpoint's lock is released.
    fn finish_check_in(self: &Arc<Self>, checked_in: CheckedIn) {
        if let CheckedIn::Closed(shut, reason) = checked_in {
            self.forget(shut, reason);
        }
        self.serve_waiters_if_any();
    }

    fn close_active(&self, host: &Host<C>, slot: Slot<C>, reason: CloseReason) {
        let shut = slot.shut();
        host.state.lock().active -= 1;
        self.open.fetch_sub(1, SeqCst);
        self.forget(shut, reason);
    }

    fn serve_waiters_if_any(self: &Arc<Self>) {
        if self.waiting.load(SeqCst) > 0 {
            Waiter::serve(self);
        }
    }

    fn cleanup(self: &Arc<Self>) -> usize {
        let now = self.clock.now();
        let hosts = self.all_hosts();
        let mut closed = 0;
        for host in &hosts {
            let mut expired = Vec::new();
            {
                let mut st = host.state.lock();
                let mut kept = VecDeque::with_capacity(st.idle.len());
                for slot in st.idle.drain(..) {
                    let reason = if slot.is_open() { self.expiry(&slot, now, true) } else { Some(CloseReason::Unhealthy) };
                    match reason {
                        Some(reason) => expired.push((slot.shut(), reason)),
                        None => kept.push_back(slot),
                    }
                }
                st.idle = kept;
                if !expired.is_empty() {
                    self.open.fetch_sub(expired.len(), SeqCst);
                }
            }
            closed += expired.len();
            for (shut, reason) in expired {
                self.forget(shut, reason);
            }
        }
        {
            let _retiring = self.retire.lock();
            self.retire_seq.fetch_add(1, SeqCst);
            for host in &hosts {
                self.hosts.remove_if(&host.endpoint, |_, h| {
                    let mut st = h.state.lock();
                    let empty = st.active == 0 && st.idle.is_empty();
                    if empty {
                        h.retired.store(true, SeqCst);
                        self.counters.reused(std::mem::take(&mut st.reused));
                    }
                    empty
                });
            }
            self.retire_seq.fetch_add(1, SeqCst);
        }
        self.origins.retain(|_, route| !route.0.retired.load(SeqCst));
        if closed > 0 {
            self.serve_waiters_if_any();
        }
        closed
    }

    fn stats(&self) -> PoolStats {
        loop {
            let seq = self.retire_seq.load(SeqCst);
            if seq % 2 == 1 {
                thread::yield_now();
                continue;
            }
            let stats = self.stats_once();
            // The counters were read with relaxed loads: ordered before the second look.
            std::sync::atomic::fence(SeqCst);
            if self.retire_seq.load(SeqCst) == seq {
                return stats;
            }
        }
    }

    fn stats_once(&self) -> PoolStats {
        let mut endpoints = Vec::new();
        let (mut active, mut idle, mut reused) = (0, 0, 0);
        for entry in self.hosts.iter() {
            let counts = {
                let st = entry.value().state.lock();
                reused += st.reused;
                EndpointCounts { active: st.active, idle: st.idle.len() }
            };
            if counts.total() > 0 {
                active += counts.active;
                idle += counts.idle;
                endpoints.push((entry.key().to_string(), counts));
            }
        }
        endpoints.sort_by(|a, b| a.0.cmp(&b.0));
        PoolStats {
            active,
            idle,
            waiting: self.waiting.load(SeqCst),
            endpoints,
            counters: self.counters.snapshot(reused),
        }
    }
}

/// A checked-out connection. Dropping it returns the connection to the pool; use
/// [`Lease::discard`] when its state is unknown.
pub struct Lease<C: Connection> {
    slot: Option<Slot<C>>,
    host: Arc<Host<C>>,
    pool: Arc<Shared<C>>,
    reused: bool,
    home: Home,
}

/// Where a lease's slot goes when the lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Home {
    /// Back to the pool: idle, or closed if it broke.
    Pool,
    /// Back under the id it was lent from ([`Pool::lend_parked`]): its holder still holds it.
    Parked,
}

impl<C: Connection> Lease<C> {
    fn slot(&self) -> &Slot<C> {
        self.slot.as_ref().expect("a lease holds its slot until it ends")
    }

    fn slot_mut(&mut self) -> &mut Slot<C> {
        self.slot.as_mut().expect("a lease holds its slot until it ends")
    }

    pub fn id(&self) -> ConnId {
        self.slot().id
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.host.endpoint
    }

    /// True if this connection carried earlier requests (it came from the idle stack).
    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// The live connection, if it has been opened.
    pub fn conn(&self) -> Option<&C> {
        self.slot().conn.as_ref()
    }

    pub fn conn_mut(&mut self) -> Option<&mut C> {
        self.slot_mut().conn.as_mut()
    }

    /// Puts an opened connection into this slot (replacing any earlier one). Its lifetime
    /// (`max_lifetime`) counts from now.
    pub fn set_conn(&mut self, conn: C) {
        let now = self.pool.clock.now();
        let slot = self.slot_mut();
        slot.conn = Some(conn);
        slot.created = now;
    }

    /// Takes the connection out of this slot (dropping it closes it); the slot stays leased.
    pub fn take_conn(&mut self) -> Option<C> {
        self.slot_mut().conn.take()
    }

    /// What the layer above keeps for this lease's endpoint.
    pub fn per_endpoint(&self) -> &C::PerEndpoint {
        &self.host.per_endpoint
    }

    /// Closes the connection instead of returning it, counting `reason`. A slot lent from its
    /// id goes back under the id without its connection (opened again on next use): its holder
    /// still holds the slot.
    pub fn discard(mut this: Lease<C>, reason: CloseReason) {
        let Some(mut slot) = this.slot.take() else { return };
        if this.home == Home::Parked {
            slot.conn = None;
            this.host.state.lock().parked.insert(slot.id.slot_key(), slot);
            return;
        }
        this.pool.close_active(&this.host, slot, reason);
        this.pool.serve_waiters_if_any();
    }
}

impl<C: Connection> Drop for Lease<C> {
    fn drop(&mut self) {
        let Some(mut slot) = self.slot.take() else { return };
        match self.home {
            Home::Pool => self.pool.check_in(&self.host, slot),
            Home::Parked => {
                if !slot.is_open() {
                    slot.conn = None;
                }
                self.host.state.lock().parked.insert(slot.id.slot_key(), slot);
            }
        }
    }
}

impl<C: Connection> fmt::Debug for Lease<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.slot.as_ref().map(|s| s.id))
            .field("endpoint", &self.host.endpoint)
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

/// The background thread that runs `cleanup`. It holds the pool weakly and ends with it.
struct Reaper {
    interval: Option<Duration>,
    stop: Arc<AtomicBool>,
    thread: thread::Thread,
}

impl Reaper {
    fn start<C: Connection>(pool: Weak<Shared<C>>, interval: Duration) -> Option<Reaper> {
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

    fn stop(self) {
        self.stop.store(true, SeqCst);
        self.thread.unpark();
    }
}

impl<C: Connection> Drop for Shared<C> {
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper.get_mut().take() {
            reaper.stop();
        }
    }
}

#[cfg(test)]
mod tests;
