//! One k-bucket: live entries with the time each was last seen, a replacement cache, and at most one
//! outstanding liveness check of its stalest entry.

use crate::id::NodeId;
use crate::message::{Address, Contact};
use crate::time::Instant;
use std::collections::VecDeque;

/// A routing-table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The peer.
    pub id: NodeId,
    /// Its addresses (boxed: entries are the bulk of a node's memory).
    pub addrs: Box<[Address]>,
    /// When it last answered or sent us something.
    pub last_seen: Instant,
    /// Requests to it that failed since it was last seen.
    pub failures: u8,
}

impl Entry {
    /// The entry as a contact to hand to others.
    pub fn contact(&self) -> Contact {
        Contact { id: self.id, addrs: self.addrs.to_vec() }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Bucket {
    /// In arrival order; the least recently seen is the one with the smallest `last_seen`.
    pub(crate) entries: Vec<Entry>,
    /// Newest last; promoted when an entry is removed.
    pub(crate) replacements: VecDeque<Contact>,
    /// The stale entry being pinged before a replacement may take its place.
    pub(crate) pending_ping: Option<NodeId>,
    /// Last time a lookup passed through this bucket's range; drives refreshes.
    pub(crate) last_touched: Instant,
}

impl Bucket {
    pub(crate) fn position(&self, id: &NodeId) -> Option<usize> {
        self.entries.iter().position(|e| &e.id == id)
    }

    /// Appends a new most-recently-seen entry, growing the allocation in small exact steps up to `k`.
    pub(crate) fn push(&mut self, entry: Entry, k: usize) {
        if self.entries.len() == self.entries.capacity() {
            let target = (self.entries.capacity() * 2).max(4).min(k.max(1));
            self.entries.reserve_exact(target.saturating_sub(self.entries.len()).max(1));
        }
        self.entries.push(entry);
    }

    pub(crate) fn add_replacement(&mut self, contact: Contact, cap: usize) {
        if cap == 0 {
            return;
        }
        self.replacements.retain(|c| c.id != contact.id);
        if self.replacements.len() >= cap {
            self.replacements.pop_front();
        }
        self.replacements.push_back(contact);
    }
}
