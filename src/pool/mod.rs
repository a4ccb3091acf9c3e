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
pub use endpoint::{Endpoint, EndpointError, Scheme, Via, MAX_ENDPOINT_LEN};
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
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;
use uuid::Uuid;
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

/// The name of one checkout of a connection, shown to Python as a hyphenated UUIDv4 string.
///
/// The high 64 bits name the slot, fixed for its life: its endpoint's number and a serial within
/// the endpoint, under the pool's random mask ([`SlotNaming`]), so a return finds the endpoint
/// without a shared map. The low bits change at every checkout (from a random start). So an id
/// handed out earlier (a late second `return_connection`) can never touch a later checkout of
/// the same connection: it no longer matches.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(Uuid);

/// The part of a [`ConnId`] that names the slot, whatever the checkout.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct SlotKey(u64);

/// The low 64 bits minus the two UUID variant bits: what a checkout changes.
const CHECKOUT_BITS: u64 = u64::MAX >> 2;

/// UUIDv4's version field: the bits of the high half that [`SlotNaming`] leaves as they are.
const VERSION_BITS: u64 = 0xF000;

/// How a pool names its slots: the high half of an id is `endpoint number << 32 | serial`
/// (the serial's 28 bits around the version field) XOR a mask drawn when the pool is made, so
/// ids look random and differ from pool to pool, yet name their endpoint. Unique while the
/// numbers are: an endpoint's serial would have to wrap (2^28 connections opened while one
/// lives), or the pool's endpoint numbers (2^32 endpoints made). Even then a return checks
/// the whole id, and falls back to the `ids` map.
#[derive(Clone, Copy)]
struct SlotNaming {
    mask: u64,
}

impl SlotNaming {
    fn random() -> SlotNaming {
        SlotNaming { mask: Uuid::new_v4().as_u64_pair().0 & !VERSION_BITS }
    }

    /// A new slot's first id: its name, and a random first checkout.
    fn new_id(self, endpoint_number: u32, serial: u32) -> ConnId {
        let serial = u64::from(serial & 0x0FFF_FFFF);
        let spread = ((serial << 4) & !0xFFFF) | (serial & 0xFFF);
        let high = ((u64::from(endpoint_number) << 32) | spread | 0x4000) ^ self.mask;
        let low = Uuid::new_v4().as_u64_pair().1;
        ConnId(Uuid::from_u64_pair(high, low))
    }

    /// The endpoint number an id names (meaningless for an id of another pool).
    fn endpoint_number(self, id: ConnId) -> u32 {
        ((id.0.as_u64_pair().0 ^ self.mask) >> 32) as u32
    }
}

impl ConnId {
    #[cfg(test)]
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

/// One pooled connection: its name, its age, the connection itself once opened, and its place
/// under `max_connections`. Fields drop in order: the connection closes before the place is
/// given back, so a server never sees more connections than the limits allow.
struct Slot<C> {
    id: ConnId,
    created: Nanos,
    idle_since: Nanos,
    /// Boxed: slots move between the idle stack, the ids and leases on every checkout and
    /// return, and a connection is a few hundred bytes (copying them was 18% of the id API's time).
    conn: Option<Box<C>>,
    _counted: Reservation,
}

/// A connection counted against `max_connections`: taken (if there is room) when a slot is
/// made, given back when the slot is dropped. A token rather than hand-matched decrements at
/// every place a slot closes: a forgotten one cannot compile away.
#[must_use]
struct Reservation(Arc<AtomicUsize>);

impl Reservation {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Reservation> {
        open.fetch_update(SeqCst, SeqCst, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Reservation(open.clone()))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl<C: Connection> Slot<C> {
    fn is_open(&self) -> bool {
        self.conn.as_deref().is_none_or(Connection::is_open)
    }

    fn is_open_when_returned(&self) -> bool {
        self.conn.as_deref().is_none_or(Connection::is_open_when_returned)
    }

    /// Closes the connection itself (for a real one: its socket), then gives its place under
    /// `max_connections` back; only the id is left to forget.
    fn shut(self) -> ShutSlot {
        ShutSlot(self.id)
    }
}

/// A slot whose connection is already closed: only its id is left to forget.
#[must_use]
struct ShutSlot(ConnId);

/// The connections of one endpoint.
struct EndpointSlots<C: Connection> {
    endpoint: Endpoint,
    /// Unique in its pool: the ids of its slots carry it ([`SlotNaming`]).
    number: u32,
    per_endpoint: C::PerEndpoint,
    state: Mutex<SlotState<C>>,
    /// Set (under `state`'s lock) when cleanup removes this empty entry from the map; whoever
    /// still holds it looks the endpoint up again. An atomic so that forgetting remembered
    /// origins never waits behind a checkout.
    retired: AtomicBool,
}

struct SlotState<C> {
    /// Most recently used at the back: checkout pops the back, expiry trims the front.
    idle: VecDeque<Slot<C>>,
    /// Checked-out connections: leased, being opened, or parked below.
    active: usize,
    /// Checked out through the id API: the slot waits here, under this lock, for its id.
    parked: FxHashMap<SlotKey, Slot<C>>,
    /// Checkouts that reused an idle connection. Counted here, under the lock already held,
    /// rather than in a shared atomic; added to the pool's counters when the entry is retired.
    reused: u64,
    /// The serial of the next slot made here (part of its id).
    next_serial: u32,
}

impl<C: Connection> SlotState<C> {
    /// The slot parked under exactly this id (not an earlier checkout of the same slot).
    fn unpark(&mut self, id: ConnId) -> Option<Slot<C>> {
        match self.parked.entry(id.slot_key()) {
            std::collections::hash_map::Entry::Occupied(e) if e.get().id == id => Some(e.remove()),
            _ => None,
        }
    }
}

/// One thread's recently used endpoints of a pool, by the string they were named with and by
/// number. A few: a thread talks to a handful of origins; beyond that, the shared maps serve.
struct Near<C: Connection> {
    entries: Vec<(Box<str>, EndpointRef<C>)>,
    /// Where the next entry goes once it is full (the oldest made).
    next: usize,
}

const NEAR_ENDPOINTS: usize = 16;

impl<C: Connection> Default for Near<C> {
    fn default() -> Self {
        Near { entries: Vec::new(), next: 0 }
    }
}

impl<C: Connection> Near<C> {
    /// The live endpoint named by `input` (a retired one is no longer worth keeping).
    fn by_name(&self, input: &str) -> Option<&EndpointRef<C>> {
        let (_, found) = self.entries.iter().find(|(name, _)| **name == *input)?;
        (!found.0.retired.load(SeqCst)).then_some(found)
    }

    fn by_number(&self, number: u32) -> Option<&Arc<EndpointSlots<C>>> {
        self.entries.iter().map(|(_, r)| &r.0).find(|e| e.number == number)
    }

    fn remember(&mut self, input: &str, endpoint_ref: &EndpointRef<C>) {
        let entry = (input.into(), endpoint_ref.clone());
        if let Some(i) = self.entries.iter().position(|(name, _)| **name == *input) {
            self.entries[i] = entry; // a retired one
        } else if self.entries.len() < NEAR_ENDPOINTS {
            self.entries.push(entry);
        } else {
            self.entries[self.next] = entry;
            self.next = (self.next + 1) % NEAR_ENDPOINTS;
        }
    }
}

/// An endpoint's place in a pool: looked up once, used for many checkouts.
pub struct EndpointRef<C: Connection>(Arc<EndpointSlots<C>>);

impl<C: Connection> EndpointRef<C> {
    pub fn endpoint(&self) -> &Endpoint {
        &self.0.endpoint
    }

    /// What the layer above keeps for this endpoint.
    pub fn per_endpoint(&self) -> &C::PerEndpoint {
        &self.0.per_endpoint
    }
}

impl<C: Connection> Clone for EndpointRef<C> {
    fn clone(&self) -> Self {
        EndpointRef(self.0.clone())
    }
}

impl<C: Connection> fmt::Debug for EndpointRef<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointRef({})", self.0.endpoint)
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

/// The pool's state, shared by its handles, leases, tickets and reaper.
///
/// Lock order, the whole of it: a thread holding one of these locks takes only locks after it.
/// 1. `waiters` (the queue);
/// 2. a waiter's `state` (waiter.rs);
/// 3. `retire`;
/// 4. an `origins` shard, then an `ids` shard, then an `entries` shard (DashMap shards: one at
///    a time, never held across a call that could take another);
/// 5. one endpoint's `state` ([`EndpointSlots`]; never two endpoints' at once);
/// 6. the layer above's per-endpoint locks (the HTTP engine's `Streams`, read by stats under
///    an `entries` shard), which take no pool lock.
///
/// What the chain looks like in practice: serving the queue holds 1 and 2 while a checkout takes
/// 5 (released), then an `ids` shard to index a new slot. Work that visits every endpoint
/// (closing another endpoint's idle connection to make room) is never done under 1: the queue
/// is served again after it. A connection is shut (its socket closed, then its place under
/// `max_connections` given back: [`Reservation`]) before its slot stops counting toward its
/// endpoint (for an idle one: under the endpoint's lock); its id is forgotten in `ids` after
/// that lock is released.
struct PoolState<C: Connection> {
    settings: LiveSettings,
    clock: Arc<dyn Clock>,
    entries: DashMap<Endpoint, Arc<EndpointSlots<C>>, FxBuildHasher>,
    /// Endpoint strings seen before, so the hot path skips parsing. Only strings that are bare
    /// origins (nothing that parsing would drop, so nothing secret) are remembered.
    origins: DashMap<Box<str>, EndpointRef<C>, FxBuildHasher>,
    /// Every live connection's endpoint, by slot: written when a connection opens or closes.
    /// The hot path reads it only for endpoints its thread has not looked up ([`Near`]).
    ids: DashMap<SlotKey, Arc<EndpointSlots<C>>, FxBuildHasher>,
    /// Each thread's recently used endpoints: a checkout or return by a thread that used the
    /// endpoint before touches neither `origins` nor `ids` (their shard locks were a quarter of
    /// the id API's cost).
    near: ThreadLocal<RefCell<Near<C>>>,
    naming: SlotNaming,
    next_endpoint_number: AtomicU32,
    /// Connections counted against `max_connections` (active, opening and idle): one
    /// [`Reservation`] each.
    open: Arc<AtomicUsize>,
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

/// What a returned connection needs once the endpoint's lock is released.
enum CheckedIn {
    Parked,
    Closed(ShutSlot, CloseReason),
}

/// What one look under an endpoint's lock found.
enum Checkout<T> {
    /// A slot, made into what the caller wanted; and its id, if the slot is new (indexed once
    /// the lock is released).
    Got(T, Option<ConnId>),
    AtLimit(AtLimit),
    /// Cleanup retired the endpoint's entry meanwhile: look it up again.
    Retired,
}

/// Whether a checkout at `max_connections` may close another endpoint's idle connection to make
/// room. Not while the waiters lock is held: that visits every endpoint's lock.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evict {
    Allowed,
    NotHere,
}

impl<C: Connection> PoolState<C> {
    fn entry(&self, endpoint: &Endpoint) -> Arc<EndpointSlots<C>> {
        if let Some(entry) = self.entries.get(endpoint) {
            return entry.clone();
        }
        self.entries
            .entry(endpoint.clone())
            .or_insert_with(|| {
                Arc::new(EndpointSlots {
                    endpoint: endpoint.clone(),
                    number: self.next_endpoint_number.fetch_add(1, SeqCst),
                    per_endpoint: C::PerEndpoint::default(),
                    state: Mutex::new(SlotState {
                        idle: VecDeque::new(),
                        active: 0,
                        parked: FxHashMap::default(),
                        reused: 0,
                        next_serial: 0,
                    }),
                    retired: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Runs `f` on the endpoint of a live connection; `None` for an unknown id. The endpoint the
    /// id names, if this thread used it lately, is tried first; `ids` is the authority.
    fn with_entry_of<R>(&self, id: ConnId, f: impl Fn(&EndpointSlots<C>) -> Option<R>) -> Option<R> {
        if let Some(near) = self.near.get() {
            let near = near.borrow();
            if let Some(found) = near.by_number(self.naming.endpoint_number(id)).and_then(|entry| f(entry)) {
                return Some(found);
            }
        }
        let entry = self.ids.get(&id.slot_key())?;
        f(&entry)
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

    pub(crate) fn try_get(self: &Arc<Self>, entry: &Arc<EndpointSlots<C>>, evict: Evict) -> Result<Lease<C>, AtLimit> {
        let (entry, slot, reused) = self.take(entry, evict, |_, entry, slot, reused| (entry.clone(), slot, reused))?;
        Ok(Lease { slot: Some(slot), entry, pool: self.clone(), reused, home: Home::Pool })
    }

    /// A slot of this endpoint, counted as active: an idle one, or a new one within the limits,
    /// handed to `keep` under the endpoint's lock (to lease it out, or park it under its id),
    /// with whether it is a reused connection.
    fn take<T, F>(&self, entry: &Arc<EndpointSlots<C>>, evict: Evict, keep: F) -> Result<T, AtLimit>
    where
        F: FnOnce(&mut SlotState<C>, &Arc<EndpointSlots<C>>, Slot<C>, bool) -> T,
    {
        let mut keep = Some(keep);
        if let Some(taken) = self.reuse_idle(entry, &mut keep) {
            return Ok(taken);
        }
        let mut fresh_entry: Option<Arc<EndpointSlots<C>>> = None;
        let mut evicted_once = false;
        loop {
            let entry = fresh_entry.as_ref().unwrap_or(entry);
            let (found, closed) = self.take_once(entry, &mut keep);
            for (shut, reason) in closed {
                self.forget(shut, reason);
            }
            match found {
                Checkout::Got(taken, new_id) => {
                    // Indexed after the endpoint's lock is released (see the lock order).
                    if let Some(id) = new_id {
                        self.ids.insert(id.slot_key(), entry.clone());
                    }
                    return Ok(taken);
                }
                Checkout::Retired => fresh_entry = Some(self.entry(&entry.endpoint)),
                Checkout::AtLimit(AtLimit::Pool) if evict == Evict::Allowed && !evicted_once && self.evict_idle_elsewhere(entry) => {
                    evicted_once = true;
                }
                Checkout::AtLimit(at) => return Err(at),
            }
        }
    }

    /// The usual checkout in one short look: the most recently used idle connection, when it is
    /// open and unexpired and no lowered limit is in the way, handed to `keep` under the lock.
    /// `None` (and `keep` untouched) leaves every other case to [`PoolState::take_once`]. Its own
    /// path because it is most checkouts: the general one cost a sixth of the id API's time.
    fn reuse_idle<T, F>(&self, entry: &Arc<EndpointSlots<C>>, keep: &mut Option<F>) -> Option<T>
    where
        F: FnOnce(&mut SlotState<C>, &Arc<EndpointSlots<C>>, Slot<C>, bool) -> T,
    {
        let now = self.clock.now();
        let mut st = entry.state.lock();
        let usable = |slot: &Slot<C>| self.idle_close_reason(slot, now).is_none();
        if entry.retired.load(SeqCst) || !self.within_limits(&st) || !st.idle.back().is_some_and(usable) {
            return None;
        }
        let mut slot = st.idle.pop_back()?;
        slot.id = slot.id.next_checkout();
        st.reused += 1;
        st.active += 1;
        let keep = keep.take().expect("a checkout ends at its first slot");
        Some(keep(&mut st, entry, slot, true))
    }

    /// Whether an endpoint's connections fit under both limits (which may have been lowered).
    fn within_limits(&self, st: &SlotState<C>) -> bool {
        st.active + st.idle.len() <= self.settings.max_connections_per_endpoint()
            && self.open.load(SeqCst) <= self.settings.max_connections()
    }

    /// Why an idle slot must close rather than be reused, if it must.
    fn idle_close_reason(&self, slot: &Slot<C>, now: Nanos) -> Option<CloseReason> {
        if slot.is_open() { self.expiry(slot, now, true) } else { Some(CloseReason::Unhealthy) }
    }

    /// One try under the endpoint's lock; `keep` is called (and taken) only if a slot is found.
    /// Also returns the idle slots closed on the way (dead, expired, or above a lowered limit),
    /// whose ids are forgotten once the lock is released.
    fn take_once<T, F>(&self, entry: &Arc<EndpointSlots<C>>, keep: &mut Option<F>) -> (Checkout<T>, Vec<(ShutSlot, CloseReason)>)
    where
        F: FnOnce(&mut SlotState<C>, &Arc<EndpointSlots<C>>, Slot<C>, bool) -> T,
    {
        let now = self.clock.now();
        let mut closed = Vec::new();
        let mut st = entry.state.lock();
        if entry.retired.load(SeqCst) {
            return (Checkout::Retired, closed);
        }
        let max_here = self.settings.max_connections_per_endpoint();
        // Above a lowered limit, idle connections are closed (oldest first), not handed out.
        while !self.within_limits(&st) {
            let Some(slot) = st.idle.pop_front() else { break };
            closed.push((slot.shut(), CloseReason::Evicted));
        }
        if st.active >= max_here {
            return (Checkout::AtLimit(AtLimit::Endpoint), closed);
        }
        let mut reusable = None;
        while let Some(slot) = st.idle.pop_back() {
            match self.idle_close_reason(&slot, now) {
                Some(reason) => closed.push((slot.shut(), reason)),
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
            None if st.active + st.idle.len() >= max_here => return (Checkout::AtLimit(AtLimit::Endpoint), closed),
            None => match Reservation::take(&self.open, self.settings.max_connections()) {
                None => return (Checkout::AtLimit(AtLimit::Pool), closed),
                Some(counted) => {
                    self.counters.created();
                    let id = self.naming.new_id(entry.number, st.next_serial);
                    st.next_serial = st.next_serial.wrapping_add(1);
                    (Slot { id, created: now, idle_since: now, conn: None, _counted: counted }, false)
                }
            },
        };
        st.active += 1;
        let new_id = (!reused).then_some(slot.id);
        let keep = keep.take().expect("a checkout ends at its first slot");
        (Checkout::Got(keep(&mut st, entry, slot, reused), new_id), closed)
    }

    /// The last step of closing: the slot is already shut and out of every count.
    fn forget(&self, shut: ShutSlot, reason: CloseReason) {
        self.counters.closed(reason, 1);
        self.ids.remove(&shut.0.slot_key());
    }

    /// At `max_connections` with idle connections elsewhere: close the least recently used idle
    /// connection of another endpoint to make room. Takes no lock while holding another.
    fn evict_idle_elsewhere(&self, except: &Arc<EndpointSlots<C>>) -> bool {
        let entries = self.all_entries();
        let mut oldest: Option<(&Arc<EndpointSlots<C>>, Nanos)> = None;
        for entry in entries.iter().filter(|h| !Arc::ptr_eq(h, except)) {
            if let Some(front) = entry.state.lock().idle.front() {
                if oldest.is_none_or(|(_, t)| front.idle_since < t) {
                    oldest = Some((entry, front.idle_since));
                }
            }
        }
        let Some((entry, _)) = oldest else { return false };
        let victim = entry.state.lock().idle.pop_front().map(Slot::shut);
        match victim {
            Some(shut) => {
                self.forget(shut, CloseReason::Evicted);
                true
            }
            None => false,
        }
    }

    fn all_entries(&self) -> Vec<Arc<EndpointSlots<C>>> {
        self.entries.iter().map(|e| e.value().clone()).collect()
    }

    /// A lease comes back: parked as idle, or closed if it is broken, too old, or above a
    /// lowered limit. Then queued checkouts get their turn.
    fn check_in(self: &Arc<Self>, entry: &EndpointSlots<C>, slot: Slot<C>) {
        let checked_in = self.check_in_locked(&mut entry.state.lock(), slot);
        self.finish_check_in(checked_in);
    }

    fn check_in_locked(&self, st: &mut SlotState<C>, mut slot: Slot<C>) -> CheckedIn {
        let now = self.clock.now();
        let reason = if slot.is_open_when_returned() { self.expiry(&slot, now, false) } else { Some(CloseReason::Unhealthy) };
        match reason.or((!self.within_limits(st)).then_some(CloseReason::Evicted)) {
            Some(reason) => {
                let shut = slot.shut();
                st.active -= 1;
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

    fn close_active(&self, entry: &EndpointSlots<C>, slot: Slot<C>, reason: CloseReason) {
        let shut = slot.shut();
        entry.state.lock().active -= 1;
        self.forget(shut, reason);
    }

    fn serve_waiters_if_any(self: &Arc<Self>) {
        if self.waiting.load(SeqCst) > 0 {
            Waiter::serve(self);
        }
    }

    fn cleanup(self: &Arc<Self>) -> usize {
        let now = self.clock.now();
        let entries = self.all_entries();
        let mut closed = 0;
        for entry in &entries {
            let mut expired = Vec::new();
            {
                let mut st = entry.state.lock();
                let mut kept = VecDeque::with_capacity(st.idle.len());
                for slot in st.idle.drain(..) {
                    match self.idle_close_reason(&slot, now) {
                        Some(reason) => expired.push((slot.shut(), reason)),
                        None => kept.push_back(slot),
                    }
                }
                st.idle = kept;
            }
            closed += expired.len();
            for (shut, reason) in expired {
                self.forget(shut, reason);
            }
        }
        {
            let _retiring = self.retire.lock();
            self.retire_seq.fetch_add(1, SeqCst);
            for entry in &entries {
                self.entries.remove_if(&entry.endpoint, |_, h| {
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
        self.origins.retain(|_, endpoint_ref| !endpoint_ref.0.retired.load(SeqCst));
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
        for entry in self.entries.iter() {
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
    entry: Arc<EndpointSlots<C>>,
    pool: Arc<PoolState<C>>,
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
        &self.entry.endpoint
    }

    /// True if this connection carried earlier requests (it came from the idle stack).
    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// The live connection, if it has been opened.
    pub fn conn(&self) -> Option<&C> {
        self.slot().conn.as_deref()
    }

    pub fn conn_mut(&mut self) -> Option<&mut C> {
        self.slot_mut().conn.as_deref_mut()
    }

    /// Puts an opened connection into this slot (replacing any earlier one). Its lifetime
    /// (`max_lifetime`) counts from now.
    pub fn set_conn(&mut self, conn: C) {
        let now = self.pool.clock.now();
        let slot = self.slot_mut();
        slot.conn = Some(Box::new(conn));
        slot.created = now;
    }

    /// Takes the connection out of this slot (dropping it closes it); the slot stays leased.
    pub fn take_conn(&mut self) -> Option<C> {
        self.slot_mut().conn.take().map(|conn| *conn)
    }

    /// What the layer above keeps for this lease's endpoint.
    pub fn per_endpoint(&self) -> &C::PerEndpoint {
        &self.entry.per_endpoint
    }

    /// Closes the connection instead of returning it, counting `reason`. A slot lent from its
    /// id goes back under the id without its connection (opened again on next use): its holder
    /// still holds the slot.
    pub fn discard(mut this: Lease<C>, reason: CloseReason) {
        let Some(mut slot) = this.slot.take() else { return };
        if this.home == Home::Parked {
            slot.conn = None;
            this.entry.state.lock().parked.insert(slot.id.slot_key(), slot);
            return;
        }
        this.pool.close_active(&this.entry, slot, reason);
        this.pool.serve_waiters_if_any();
    }
}

impl<C: Connection> Drop for Lease<C> {
    fn drop(&mut self) {
        let Some(mut slot) = self.slot.take() else { return };
        match self.home {
            Home::Pool => self.pool.check_in(&self.entry, slot),
            Home::Parked => {
                if !slot.is_open() {
                    slot.conn = None;
                }
                self.entry.state.lock().parked.insert(slot.id.slot_key(), slot);
            }
        }
    }
}

impl<C: Connection> fmt::Debug for Lease<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.slot.as_ref().map(|s| s.id))
            .field("endpoint", &self.entry.endpoint)
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
    fn start<C: Connection>(pool: Weak<PoolState<C>>, interval: Duration) -> Option<Reaper> {
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

impl<C: Connection> Drop for PoolState<C> {
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper.get_mut().take() {
            reaper.stop();
        }
    }
}

#[cfg(test)]
mod tests;
