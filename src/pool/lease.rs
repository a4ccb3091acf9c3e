//! A checked-out connection, and where it goes when the lease ends.

use super::{CloseReason, ConnId, Connection, Endpoint, EndpointSlots, PoolState, Slot};
use std::fmt;
use std::sync::Arc;

/// A checked-out connection. Dropping it returns the connection to the pool; use
/// [`Lease::discard`] when its state is unknown.
pub struct Lease<C: Connection> {
    pub(super) slot: Option<Slot<C>>,
    pub(super) entry: Arc<EndpointSlots<C>>,
    pub(super) pool: Arc<PoolState<C>>,
    pub(super) reused: bool,
    pub(super) home: Home,
}

/// Where a lease's slot goes when the lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Home {
    /// Back to the pool: idle, or closed if it broke.
    Pool,
    /// Back under the id it was lent from ([`Pool::lend_parked`]): its holder still holds it.
    Parked,
}

impl<C: Connection> Lease<C> {
    pub(super) fn slot(&self) -> &Slot<C> {
        self.slot.as_ref().expect("a lease holds its slot until it ends")
    }

    pub(super) fn slot_mut(&mut self) -> &mut Slot<C> {
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
