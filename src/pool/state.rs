//! The pool's shared state and its bookkeeping under the endpoints' locks: checkout, check-in,
//! limits, eviction, expiry and cleanup.

use super::{AtLimit, AtomicCounters, Clock, CloseReason, ConnId, Connection, Endpoint, EndpointCounts, EndpointRef, EndpointSlots, Home, Lease, LiveSettings, Nanos, Near, PoolStats, Reaper, Reservation, ShutSlot, Slot, SlotKey, SlotNaming, SlotState, Waiter};
use dashmap::DashMap;
use rustc_hash::{FxBuildHasher, FxHashMap};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use thread_local::ThreadLocal;

/// The pool's state, shared by its handles, leases, tickets and reaper.
///
/// Lock order, the whole of it: a thread holding one of these locks takes only locks after it.
/// 1. `waiters` (the queue);
/// 2. a waiter's `state` (waiter.rs);
/// 3. `retire`;
/// 4. an `origins` shard, then an `ids` shard, then an `entries` shard (DashMap shards: one at
///    a time, never held across a call that could take another);
/// 5. one endpoint's `state` ([`EndpointSlots`]; never two endpoints' at once);
/// 6. the layer above's per-endpoint locks (the HTTP engine's `EndpointHttp`, read by stats under
///    an `entries` shard), which take no pool lock.
///
/// What the chain looks like in practice: serving the queue holds 1 and 2 while a checkout takes
/// 5 (released), then an `ids` shard to index a new slot. Work that visits every endpoint
/// (closing another endpoint's idle connection to make room) is never done under 1: the queue
/// is served again after it. A connection is shut (its socket closed, then its place under
/// `max_connections` given back: [`Reservation`]) before its slot stops counting toward its
/// endpoint (for an idle one: under the endpoint's lock); its id is forgotten in `ids` after
/// that lock is released.
pub(super) struct PoolState<C: Connection> {
    pub(super) settings: LiveSettings,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) entries: DashMap<Endpoint, Arc<EndpointSlots<C>>, FxBuildHasher>,
    /// Endpoint strings seen before, so the hot path skips parsing. Only strings that are bare
    /// origins (nothing that parsing would drop, so nothing secret) are remembered.
    pub(super) origins: DashMap<Box<str>, EndpointRef<C>, FxBuildHasher>,
    /// Every live connection's endpoint, by slot: written when a connection opens or closes.
    /// The hot path reads it only for endpoints its thread has not looked up ([`Near`]).
    pub(super) ids: DashMap<SlotKey, Arc<EndpointSlots<C>>, FxBuildHasher>,
    /// Each thread's recently used endpoints: a checkout or return by a thread that used the
    /// endpoint before touches neither `origins` nor `ids` (their shard locks were a quarter of
    /// the id API's cost).
    pub(super) near: ThreadLocal<RefCell<Near<C>>>,
    pub(super) naming: SlotNaming,
    pub(super) next_endpoint_number: AtomicU32,
    /// Connections counted against `max_connections` (active, opening and idle): one
    /// [`Reservation`] each.
    pub(super) open: Arc<AtomicUsize>,
    /// First come, first served. Touched only while `waiting > 0` or by a checkout that queues.
    pub(super) waiters: Mutex<VecDeque<Arc<Waiter<C>>>>,
    pub(super) waiting: AtomicUsize,
    pub(super) counters: AtomicCounters,
    /// Held while cleanup retires endpoints, moving their reuse counts into `counters`...
    pub(super) retire: Mutex<()>,
    /// ...and odd meanwhile (a sequence lock): a stats reader that sees it odd or changed reads
    /// again, so it never counts a reuse twice or not at all (counters never go down).
    pub(super) retire_seq: AtomicU64,
    pub(super) reaper: Mutex<Option<Reaper>>,
}

/// What a returned connection needs once the endpoint's lock is released.
pub(super) enum CheckedIn {
    Parked,
    Closed(ShutSlot, CloseReason),
}

/// What one look under an endpoint's lock found.
pub(super) enum Checkout<T> {
    /// A slot, made into what the caller wanted; and its id, if the slot is new (indexed once
    /// the lock is released).
    Got(T, Option<ConnId>),
    AtLimit(AtLimit),
    /// Cleanup retired the endpoint's entry meanwhile: look it up again.
    Retired,
}

/// Whether a slot is idle in the pool or in use, as far as its expiry goes: only an idle one
/// expires by idle time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotUse {
    Idle,
    Active,
}

/// Whether a checkout at `max_connections` may close another endpoint's idle connection to make
/// room. Not while the waiters lock is held: that visits every endpoint's lock.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evict {
    Allowed,
    NotHere,
}

impl<C: Connection> PoolState<C> {
    pub(super) fn entry(&self, endpoint: &Endpoint) -> Arc<EndpointSlots<C>> {
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
    pub(super) fn with_entry_of<R>(&self, id: ConnId, f: impl Fn(&EndpointSlots<C>) -> Option<R>) -> Option<R> {
        if let Some(near) = self.near.get() {
            let near = near.borrow();
            if let Some(found) = near.by_number(self.naming.endpoint_number(id)).and_then(|entry| f(entry)) {
                return Some(found);
            }
        }
        let entry = self.ids.get(&id.slot_key())?;
        f(&entry)
    }

    /// Why a slot must close now, if it must. An idle slot also expires by idle time.
    pub(super) fn expiry(&self, slot: &Slot<C>, now: Nanos, state: SlotUse) -> Option<CloseReason> {
        if now.saturating_sub(slot.created) >= self.settings.max_lifetime_nanos() {
            return Some(CloseReason::MaxLifetime);
        }
        if state == SlotUse::Idle && now.saturating_sub(slot.idle_since) >= self.settings.idle_timeout_nanos() {
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
    pub(super) fn take<T, F>(&self, entry: &Arc<EndpointSlots<C>>, evict: Evict, keep: F) -> Result<T, AtLimit>
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
    pub(super) fn reuse_idle<T, F>(&self, entry: &Arc<EndpointSlots<C>>, keep: &mut Option<F>) -> Option<T>
    where
        F: FnOnce(&mut SlotState<C>, &Arc<EndpointSlots<C>>, Slot<C>, bool) -> T,
    {
        let now = self.clock.now();
        let mut st = entry.state.lock();
        let usable = |slot: &Slot<C>| self.idle_close_reason(slot, now).is_none();
        if entry.retired.load(SeqCst) || !self.within_limits(&st) || !st.idle.back().is_some_and(usable) {
            return None;
        }
        let slot = st.idle.pop_back()?;
        let slot = st.reuse(slot);
        let keep = keep.take().expect("a checkout ends at its first slot");
        Some(keep(&mut st, entry, slot, true))
    }

    /// Whether an endpoint's connections fit under both limits (which may have been lowered).
    pub(super) fn within_limits(&self, st: &SlotState<C>) -> bool {
        st.active + st.idle.len() <= self.settings.max_connections_per_endpoint()
            && self.open.load(SeqCst) <= self.settings.max_connections()
    }

    /// Why an idle slot must close rather than be reused, if it must.
    pub(super) fn idle_close_reason(&self, slot: &Slot<C>, now: Nanos) -> Option<CloseReason> {
        if slot.is_open() { self.expiry(slot, now, SlotUse::Idle) } else { Some(CloseReason::Unhealthy) }
    }

    /// One try under the endpoint's lock; `keep` is called (and taken) only if a slot is found.
    /// Also returns the idle slots closed on the way (dead, expired, or above a lowered limit),
    /// whose ids are forgotten once the lock is released.
    pub(super) fn take_once<T, F>(&self, entry: &Arc<EndpointSlots<C>>, keep: &mut Option<F>) -> (Checkout<T>, Vec<(ShutSlot, CloseReason)>)
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
            Some(slot) => (st.reuse(slot), true),
            None if st.active + st.idle.len() >= max_here => return (Checkout::AtLimit(AtLimit::Endpoint), closed),
            None => match Reservation::take(&self.open, self.settings.max_connections()) {
                None => return (Checkout::AtLimit(AtLimit::Pool), closed),
                Some(counted) => {
                    self.counters.created();
                    let id = self.naming.new_id(entry.number, st.next_serial);
                    st.next_serial = st.next_serial.wrapping_add(1);
                    st.active += 1;
                    (Slot { id, created: now, idle_since: now, conn: None, _counted: counted }, false)
                }
            },
        };
        let new_id = (!reused).then_some(slot.id);
        let keep = keep.take().expect("a checkout ends at its first slot");
        (Checkout::Got(keep(&mut st, entry, slot, reused), new_id), closed)
    }

    /// The last step of closing: the slot is already shut and out of every count.
    pub(super) fn forget(&self, shut: ShutSlot, reason: CloseReason) {
        self.counters.closed(reason, 1);
        self.ids.remove(&shut.0.slot_key());
    }

    /// At `max_connections` with idle connections elsewhere: close the least recently used idle
    /// connection of another endpoint to make room. Takes no lock while holding another.
    pub(super) fn evict_idle_elsewhere(&self, except: &Arc<EndpointSlots<C>>) -> bool {
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

    pub(super) fn all_entries(&self) -> Vec<Arc<EndpointSlots<C>>> {
        self.entries.iter().map(|e| e.value().clone()).collect()
    }

    /// A lease comes back: parked as idle, or closed if it is broken, too old, or above a
    /// lowered limit. Then queued checkouts get their turn.
    pub(super) fn check_in(self: &Arc<Self>, entry: &EndpointSlots<C>, slot: Slot<C>) {
        let checked_in = self.check_in_locked(&mut entry.state.lock(), slot);
        self.finish_check_in(checked_in);
    }

    pub(super) fn check_in_locked(&self, st: &mut SlotState<C>, mut slot: Slot<C>) -> CheckedIn {
        let now = self.clock.now();
        let reason = if slot.is_open_when_returned() { self.expiry(&slot, now, SlotUse::Active) } else { Some(CloseReason::Unhealthy) };
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
    pub(super) fn finish_check_in(self: &Arc<Self>, checked_in: CheckedIn) {
        if let CheckedIn::Closed(shut, reason) = checked_in {
            self.forget(shut, reason);
        }
        self.serve_waiters_if_any();
    }

    pub(super) fn close_active(&self, entry: &EndpointSlots<C>, slot: Slot<C>, reason: CloseReason) {
        let shut = slot.shut();
        entry.state.lock().active -= 1;
        self.forget(shut, reason);
    }

    pub(super) fn serve_waiters_if_any(self: &Arc<Self>) {
        if self.waiting.load(SeqCst) > 0 {
            Waiter::serve(self);
        }
    }

    pub(super) fn cleanup(self: &Arc<Self>) -> usize {
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

    pub(super) fn stats(&self) -> PoolStats {
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

    pub(super) fn stats_once(&self) -> PoolStats {
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

impl<C: Connection> Drop for PoolState<C> {
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper.get_mut().take() {
            reaper.stop();
        }
    }
}
