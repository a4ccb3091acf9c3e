//! Slots: one pooled connection each, its place under `max_connections` (`Reservation`), an
//! endpoint's slots under its lock, and the handle to them (`EndpointRef`).

use super::{ConnId, Connection, Endpoint, Nanos, SlotKey};
use rustc_hash::FxHashMap;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

/// One pooled connection: its name, its age, the connection itself once opened, and its place
/// under `max_connections`. Fields drop in order: the connection closes before the place is
/// given back, so a server never sees more connections than the limits allow.
pub(super) struct Slot<C> {
    pub(super) id: ConnId,
    pub(super) created: Nanos,
    pub(super) idle_since: Nanos,
    /// Boxed: slots move between the idle stack, the ids and leases on every checkout and
    /// return, and a connection is a few hundred bytes (copying them was 18% of the id API's time).
    pub(super) conn: Option<Box<C>>,
    pub(super) _counted: Reservation,
}

/// A connection counted against `max_connections`: taken (if there is room) when a slot is
/// made, given back when the slot is dropped. A token rather than hand-matched decrements at
/// every place a slot closes: a forgotten one cannot compile away.
#[must_use]
pub(super) struct Reservation(pub(super) Arc<AtomicUsize>);

impl Reservation {
    pub(super) fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Reservation> {
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
    pub(super) fn is_open(&self) -> bool {
        self.conn.as_deref().is_none_or(Connection::is_open)
    }

    pub(super) fn is_open_when_returned(&self) -> bool {
        self.conn.as_deref().is_none_or(Connection::is_open_when_returned)
    }

    /// Closes the connection itself (for a real one: its socket), then gives its place under
    /// `max_connections` back; only the id is left to forget.
    pub(super) fn shut(self) -> ShutSlot {
        ShutSlot(self.id)
    }
}

/// A slot whose connection is already closed: only its id is left to forget.
#[must_use]
pub(super) struct ShutSlot(pub(super) ConnId);

/// The connections of one endpoint.
pub(super) struct EndpointSlots<C: Connection> {
    pub(super) endpoint: Endpoint,
    /// Unique in its pool: the ids of its slots carry it ([`SlotNaming`]).
    pub(super) number: u32,
    pub(super) per_endpoint: C::PerEndpoint,
    pub(super) state: Mutex<SlotState<C>>,
    /// Set (under `state`'s lock) when cleanup removes this empty entry from the map; whoever
    /// still holds it looks the endpoint up again. An atomic so that forgetting remembered
    /// origins never waits behind a checkout.
    pub(super) retired: AtomicBool,
}

pub(super) struct SlotState<C> {
    /// Most recently used at the back: checkout pops the back, expiry trims the front.
    pub(super) idle: VecDeque<Slot<C>>,
    /// Checked-out connections: leased, being opened, or parked below.
    pub(super) active: usize,
    /// Checked out through the id API: the slot waits here, under this lock, for its id.
    pub(super) parked: FxHashMap<SlotKey, Slot<C>>,
    /// Checkouts that reused an idle connection. Counted here, under the lock already held,
    /// rather than in a shared atomic; added to the pool's counters when the entry is retired.
    pub(super) reused: u64,
    /// The serial of the next slot made here (part of its id).
    pub(super) next_serial: u32,
}

impl<C: Connection> SlotState<C> {
    /// The slot parked under exactly this id (not an earlier checkout of the same slot).
    pub(super) fn unpark(&mut self, id: ConnId) -> Option<Slot<C>> {
        match self.parked.entry(id.slot_key()) {
            std::collections::hash_map::Entry::Occupied(e) if e.get().id == id => Some(e.remove()),
            _ => None,
        }
    }

    /// An idle slot handed out again: a new checkout of it (a new id), counted as reused and
    /// active. The one place both ways of reusing a connection count it.
    pub(super) fn reuse(&mut self, mut slot: Slot<C>) -> Slot<C> {
        slot.id = slot.id.next_checkout();
        self.reused += 1;
        self.active += 1;
        slot
    }
}

/// An endpoint's place in a pool: looked up once, used for many checkouts.
pub struct EndpointRef<C: Connection>(pub(super) Arc<EndpointSlots<C>>);

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
