//! One thread's recently used endpoints of a pool: the hot path's way around the shared maps.

use super::{Connection, EndpointRef, EndpointSlots};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// One thread's recently used endpoints of a pool, by the string they were named with and by
/// number. A few: a thread talks to a handful of origins; beyond that, the shared maps serve.
pub(super) struct Near<C: Connection> {
    pub(super) entries: Vec<(Box<str>, EndpointRef<C>)>,
    /// Where the next entry goes once it is full (the oldest made).
    pub(super) next: usize,
}

pub(super) const NEAR_ENDPOINTS: usize = 16;

impl<C: Connection> Default for Near<C> {
    fn default() -> Self {
        Near { entries: Vec::new(), next: 0 }
    }
}

impl<C: Connection> Near<C> {
    /// The live endpoint named by `input` (a retired one is no longer worth keeping).
    pub(super) fn by_name(&self, input: &str) -> Option<&EndpointRef<C>> {
        let (_, found) = self.entries.iter().find(|(name, _)| **name == *input)?;
        (!found.0.retired.load(SeqCst)).then_some(found)
    }

    pub(super) fn by_number(&self, number: u32) -> Option<&Arc<EndpointSlots<C>>> {
        self.entries.iter().map(|(_, r)| &r.0).find(|e| e.number == number)
    }

    pub(super) fn remember(&mut self, input: &str, endpoint_ref: &EndpointRef<C>) {
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
