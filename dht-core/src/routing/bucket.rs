//! One bucket: live entries with the time each was last seen, a replacement cache, and at most one
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

/// The first eight bytes of an id, big-endian: XOR of two prefixes orders distances (ties, which need
/// the full ids, are rare), and comparing prefixes finds an entry without touching the entries.
pub(crate) fn prefix(id: &NodeId) -> u64 {
    let b = id.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[derive(Debug, Default)]
pub(crate) struct Bucket {
    /// In arrival order; the least recently seen is the one with the smallest `last_seen`.
    entries: Vec<Entry>,
    /// `prefix(entries[i].id)`, kept alongside: scans of a cold bucket read 8 bytes per entry, not 64.
    prefixes: Vec<u64>,
    /// No entry was last seen before this (a lower bound of the smallest `last_seen`: entries are only
    /// ever seen later, or join with `last_seen` = now). Spares a full bucket the scan for its stalest
    /// entry while even that one is fresh.
    pub(crate) seen_floor: Instant,
    /// Newest last; promoted when an entry is removed.
    pub(crate) replacements: VecDeque<Contact>,
    /// The stale entry being pinged before a replacement may take its place.
    pub(crate) pending_ping: Option<NodeId>,
    /// Last time a lookup passed through this bucket's range; drives refreshes.
    pub(crate) last_touched: Instant,
}

impl Bucket {
    pub(crate) fn new(now: Instant) -> Self {
        Bucket { last_touched: now, seen_floor: now, ..Bucket::default() }
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(crate) fn prefixes(&self) -> &[u64] {
        &self.prefixes
    }

    pub(crate) fn entry_mut(&mut self, pos: usize) -> &mut Entry {
        &mut self.entries[pos]
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    pub(crate) fn position(&self, id: &NodeId) -> Option<usize> {
        let p = prefix(id);
        self.prefixes.iter().enumerate().filter(|(_, q)| **q == p).map(|(i, _)| i).find(|&i| &self.entries[i].id == id)
    }

    /// Appends a new most-recently-seen entry, growing the allocation in small exact steps up to `k`.
    pub(crate) fn push(&mut self, entry: Entry, k: usize) {
        if self.entries.len() == self.entries.capacity() {
            let target = (self.entries.capacity() * 2).max(4).min(k.max(1));
            let extra = target.saturating_sub(self.entries.len()).max(1);
            self.entries.reserve_exact(extra);
            self.prefixes.reserve_exact(extra);
        }
        if self.entries.is_empty() || entry.last_seen < self.seen_floor {
            self.seen_floor = entry.last_seen;
        }
        self.prefixes.push(prefix(&entry.id));
        self.entries.push(entry);
    }

    pub(crate) fn remove(&mut self, pos: usize) -> Entry {
        self.prefixes.remove(pos);
        self.entries.remove(pos)
    }

    /// The least recently seen entry; refreshes `seen_floor` to its `last_seen`.
    pub(crate) fn stalest(&mut self) -> Option<&Entry> {
        let e = self.entries.iter().min_by_key(|e| e.last_seen)?;
        self.seen_floor = e.last_seen;
        Some(e)
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
