//! The room a node gives others' records, and who uses it. Every record held for a peer is charged to
//! the peer whose store made this node hold it (its source) and, for a signed record, to its owner. Our own
//! publications are not charged and never make way.
//!
//! While there is room, anyone may use it. When a store would overflow it (records or bytes), a source
//! within its fair share (the room divided among the sources holding records here, the newcomer included)
//! makes way by evicting records of the source that holds the most bytes, the ones expiring first; a source
//! beyond its fair share is refused. So one peer can fill an idle node, but not keep others out of it. An
//! owner's signed records may take at most `max_owner_records` and `max_owner_bytes`, whoever sends them.
//! Eviction reads only this index (keys, sizes, expiries), never values.

use crate::config::Config;
use crate::id::{Key, NodeId};
use crate::message::StoreRefusal;
use crate::record::OwnerKey;
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};

/// A record's charge: who sent it, who owns it, its size and its expiry (to evict the soonest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Charge {
    pub(super) source: NodeId,
    pub(super) owner: Option<OwnerKey>,
    pub(super) size: u64,
    pub(super) expires: Instant,
}

#[derive(Debug, Default)]
struct Usage {
    bytes: u64,
    /// The records charged, soonest expiry first, with their size and owner.
    held: BTreeMap<(Instant, Key), (u64, Option<OwnerKey>)>,
}

/// Others' records held here, by source and owner, against the limits.
#[derive(Debug)]
pub(super) struct Room {
    max_records: usize,
    max_bytes: u64,
    max_owner_records: usize,
    max_owner_bytes: u64,
    records: usize,
    bytes: u64,
    sources: BTreeMap<NodeId, Usage>,
    /// The sources holding records here by bytes held (then id): who makes way is the last, found without
    /// a pass over every source (a full node evicts on every store).
    by_bytes: BTreeSet<(u64, NodeId)>,
    owners: BTreeMap<OwnerKey, (usize, u64)>,
}

impl Room {
    pub(super) fn new(config: &Config) -> Self {
        Room {
            max_records: config.max_records,
            max_bytes: config.max_stored_bytes,
            max_owner_records: config.max_owner_records,
            max_owner_bytes: config.max_owner_bytes,
            records: 0,
            bytes: 0,
            sources: BTreeMap::new(),
            by_bytes: BTreeSet::new(),
            owners: BTreeMap::new(),
        }
    }

    /// Whether a new record (a key not held yet) may be charged. On success it is charged, and the records
    /// evicted to make room for it are returned (already uncharged): the caller forgets them.
    pub(super) fn admit(&mut self, key: Key, new: Charge) -> Result<Vec<(Key, Charge)>, StoreRefusal> {
        if let Some(owner) = &new.owner {
            let (records, bytes) = self.owners.get(owner).copied().unwrap_or_default();
            if records + 1 > self.max_owner_records || bytes + new.size > self.max_owner_bytes {
                return Err(StoreRefusal::Quota);
            }
        }
        let (max_records, max_bytes) = (self.max_records, self.max_bytes);
        let over = |records: usize, bytes: u64| records > max_records || bytes > max_bytes;
        let mut evicted = Vec::new();
        if over(self.records + 1, self.bytes + new.size) {
            // Full: the sender makes room only within its fair share.
            let sources = self.sources.len() + usize::from(!self.sources.contains_key(&new.source));
            let (mine, my_bytes) = self.sources.get(&new.source).map_or((0, 0), |u| (u.held.len(), u.bytes));
            let fair_records = (self.max_records / sources).max(1);
            let fair_bytes = self.max_bytes / sources as u64;
            if mine + 1 > fair_records || my_bytes + new.size > fair_bytes {
                return Err(StoreRefusal::Quota);
            }
            while over(self.records + 1, self.bytes + new.size) {
                let Some(victim) = self.soonest_of_largest(&new.source) else { break };
                self.remove(victim.0, &victim.1);
                evicted.push(victim);
            }
            if over(self.records + 1, self.bytes + new.size) {
                // Nothing left to evict (the record is larger than the room): put back what was taken.
                for (key, charge) in evicted {
                    self.add(key, charge);
                }
                return Err(StoreRefusal::Full);
            }
        }
        self.add(key, new);
        Ok(evicted)
    }

    /// The record expiring first of the source (other than `except`) charged the most bytes.
    fn soonest_of_largest(&self, except: &NodeId) -> Option<(Key, Charge)> {
        let (_, source) = self.by_bytes.iter().rev().find(|(_, id)| id != except)?;
        let usage = self.sources.get(source)?;
        let (&(expires, key), &(size, owner)) = usage.held.iter().next()?;
        Some((key, Charge { source: *source, owner, size, expires }))
    }

    /// Charges `key`.
    pub(super) fn add(&mut self, key: Key, c: Charge) {
        let usage = self.sources.entry(c.source).or_default();
        if usage.held.insert((c.expires, key), (c.size, c.owner)).is_some() {
            return;
        }
        self.by_bytes.remove(&(usage.bytes, c.source));
        usage.bytes += c.size;
        self.by_bytes.insert((usage.bytes, c.source));
        self.records += 1;
        self.bytes += c.size;
        if let Some(owner) = c.owner {
            let o = self.owners.entry(owner).or_default();
            o.0 += 1;
            o.1 += c.size;
        }
    }

    /// Uncharges `key` (when it expires, is replaced, evicted or failed to be written).
    pub(super) fn remove(&mut self, key: Key, c: &Charge) {
        let Some(usage) = self.sources.get_mut(&c.source) else { return };
        let Some((size, owner)) = usage.held.remove(&(c.expires, key)) else { return };
        self.by_bytes.remove(&(usage.bytes, c.source));
        usage.bytes -= size;
        if usage.held.is_empty() {
            self.sources.remove(&c.source);
        } else {
            self.by_bytes.insert((usage.bytes, c.source));
        }
        self.records -= 1;
        self.bytes -= size;
        if let Some(owner) = owner {
            if let Some(o) = self.owners.get_mut(&owner) {
                o.0 -= 1;
                o.1 -= size;
                if o.0 == 0 {
                    self.owners.remove(&owner);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::field_reassign_with_default)]
    use super::*;

    fn room(records: usize, bytes: u64) -> Room {
        let mut c = Config::default();
        c.max_records = records;
        c.max_stored_bytes = bytes;
        c.max_owner_records = 3;
        c.max_owner_bytes = 1000;
        Room::new(&c)
    }

    fn charge(source: u8, size: u64, expires_ms: u64) -> Charge {
        let source = NodeId::from_public_key(&[source; 32]);
        Charge { source, owner: None, size, expires: Instant::from_millis(expires_ms) }
    }

    fn key(n: u32) -> Key {
        Key::from_name(&n.to_be_bytes())
    }

    #[test]
    fn one_source_fills_an_idle_node_but_cannot_keep_a_second_out() {
        let mut r = room(10, 1_000_000);
        for n in 0..10 {
            assert_eq!(r.admit(key(n), charge(1, 10, u64::from(100 - n))), Ok(vec![]));
        }
        // Full. Source 1 holds all of it: beyond its fair share (half), it is refused.
        assert_eq!(r.admit(key(10), charge(1, 10, 500)), Err(StoreRefusal::Quota));
        // Source 2 is within its share: source 1's record expiring first makes way.
        let evicted = r.admit(key(11), charge(2, 10, 500)).unwrap();
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].0, key(9), "the soonest to expire");
        assert_eq!(r.records, 10);
        // Source 2 may go on up to half.
        for n in 12..16 {
            assert_eq!(r.admit(key(n), charge(2, 10, 500)).map(|e| e.len()), Ok(1));
        }
        assert_eq!(r.admit(key(16), charge(2, 10, 500)), Err(StoreRefusal::Quota));
    }

    #[test]
    fn bytes_count_as_well_as_records() {
        let mut r = room(1000, 100);
        assert_eq!(r.admit(key(0), charge(1, 60, 10)), Ok(vec![]));
        assert_eq!(r.admit(key(1), charge(1, 30, 20)), Ok(vec![]));
        // 40 bytes from a newcomer: its share is 50; the big record of source 1 goes.
        let evicted = r.admit(key(2), charge(2, 40, 30)).unwrap();
        assert_eq!(evicted.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![key(0)]);
        assert_eq!(r.admit(key(3), charge(3, 101, 30)), Err(StoreRefusal::Quota));
    }

    #[test]
    fn an_owner_is_capped_whoever_sends() {
        let mut r = room(1000, 1_000_000);
        let owner = Some(OwnerKey([7; 32]));
        for n in 0..3 {
            let c = Charge { owner, ..charge(n as u8 + 1, 10, 10) };
            assert_eq!(r.admit(key(n), c), Ok(vec![]));
        }
        assert_eq!(r.admit(key(3), Charge { owner, ..charge(9, 10, 10) }), Err(StoreRefusal::Quota));
        r.remove(key(0), &Charge { owner, ..charge(1, 10, 10) });
        assert_eq!(r.admit(key(3), Charge { owner, ..charge(9, 10, 10) }), Ok(vec![]));
    }
}
