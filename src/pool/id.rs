//! Connection ids: the name of one checkout of a slot, and how a pool names its slots.

use std::fmt;
use uuid::Uuid;

/// The name of one checkout of a connection, shown to Python as a hyphenated UUIDv4 string.
///
/// The high 64 bits name the slot, fixed for its life: its endpoint's number and a serial within
/// the endpoint, under the pool's random mask ([`SlotNaming`]), so a return finds the endpoint
/// without a shared map. The low bits change at every checkout (from a random start). So an id
/// handed out earlier (a late second `return_connection`) can never touch a later checkout of
/// the same connection: it no longer matches.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(super) Uuid);

/// The part of a [`ConnId`] that names the slot, whatever the checkout.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct SlotKey(pub(super) u64);

/// The low 64 bits minus the two UUID variant bits: what a checkout changes.
pub(super) const CHECKOUT_BITS: u64 = u64::MAX >> 2;

/// UUIDv4's version field: the bits of the high half that [`SlotNaming`] leaves as they are.
pub(super) const VERSION_BITS: u64 = 0xF000;

/// How a pool names its slots: the high half of an id is `endpoint number << 32 | serial`
/// (the serial's 28 bits around the version field) XOR a mask drawn when the pool is made, so
/// ids look random and differ from pool to pool, yet name their endpoint. Unique while the
/// numbers are: an endpoint's serial would have to wrap (2^28 connections opened while one
/// lives), or the pool's endpoint numbers (2^32 endpoints made). Even then a return checks
/// the whole id, and falls back to the `ids` map.
#[derive(Clone, Copy)]
pub(super) struct SlotNaming {
    pub(super) mask: u64,
}

impl SlotNaming {
    pub(super) fn random() -> SlotNaming {
        SlotNaming { mask: Uuid::new_v4().as_u64_pair().0 & !VERSION_BITS }
    }

    /// A new slot's first id: its name, and a random first checkout.
    pub(super) fn new_id(self, endpoint_number: u32, serial: u32) -> ConnId {
        let serial = u64::from(serial & 0x0FFF_FFFF);
        let spread = ((serial << 4) & !0xFFFF) | (serial & 0xFFF);
        let high = ((u64::from(endpoint_number) << 32) | spread | 0x4000) ^ self.mask;
        let low = Uuid::new_v4().as_u64_pair().1;
        ConnId(Uuid::from_u64_pair(high, low))
    }

    /// The endpoint number an id names (meaningless for an id of another pool).
    pub(super) fn endpoint_number(self, id: ConnId) -> u32 {
        ((id.0.as_u64_pair().0 ^ self.mask) >> 32) as u32
    }
}

impl ConnId {
    #[cfg(test)]
    pub(super) fn new() -> ConnId {
        ConnId(Uuid::new_v4())
    }

    /// The id of the next checkout of the same slot (variant and version bits kept).
    pub(super) fn next_checkout(self) -> ConnId {
        let (high, low) = self.0.as_u64_pair();
        let bumped = (low & !CHECKOUT_BITS) | (low.wrapping_add(1) & CHECKOUT_BITS);
        ConnId(Uuid::from_u64_pair(high, bumped))
    }

    pub(super) fn slot_key(self) -> SlotKey {
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
