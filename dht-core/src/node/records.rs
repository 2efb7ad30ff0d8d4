//! The records this node holds: the index, expiry, replication by holders, republishing of our own, the
//! storage operations in flight and what each is for, and the rules a peer's record must pass.

use super::NodeStats;
use crate::config::{Config, RecordPolicy};
use crate::event::{Output, QueryId, StoreOp, StoreOpId};
use crate::id::Key;
use crate::message::{Contact, Record, RequestId, StoreRefusal};
use crate::time::Instant;
use core::time::Duration;
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What a storage operation in flight is for: where its result goes.
#[derive(Debug)]
pub(super) enum StorePurpose {
    /// A peer's store, acknowledged once durable.
    InboundStore { from: Contact, request: RequestId, key: Key, expires: Instant, size: u32 },
    /// A peer's find-value, answered with the value read.
    InboundFindValue { from: Contact, request: RequestId, key: Key },
    /// Our own put, indexed once durable.
    LocalPublish { key: Key, expires: Instant, size: u32 },
    /// A get's local read, before it goes to the network.
    LocalGet { query: QueryId },
    /// One of our records read back to put it again.
    Republish { key: Key },
    /// A held record read back to store it again at the k closest (replication by holders).
    Replicate { key: Key, expires: Instant },
}

impl StorePurpose {
    fn is_inbound(&self) -> bool {
        matches!(self, StorePurpose::InboundStore { .. } | StorePurpose::InboundFindValue { .. })
    }
}

/// What the index knows of a held record (the value itself lives in the store).
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordMeta {
    pub(super) expires: Instant,
    pub(super) size: u32,
    /// When this node stores it again at the k closest, unless someone stores it here first.
    pub(super) replicate_at: Option<Instant>,
}

impl RecordMeta {
    pub(super) fn new(expires: Instant, size: u32) -> Self {
        RecordMeta { expires, size, replicate_at: None }
    }
}

/// The record index and its timers.
#[derive(Debug)]
pub(super) struct Records {
    held: BTreeMap<Key, RecordMeta>,
    expiries: BTreeSet<(Instant, Key)>,
    /// Our own records and when each is next republished.
    published: BTreeMap<Key, Instant>,
    /// When each held record is next stored again at the k closest (entries are checked against
    /// `held`'s own time, so stale ones are skipped).
    replications: BTreeSet<(Instant, Key)>,
    ops: BTreeMap<StoreOpId, StorePurpose>,
    next_op: u64,
    /// Operations in flight for peers' requests.
    inbound_ops: usize,
    max_records: usize,
    max_inbound_ops: usize,
    max_record_size: usize,
    max_ttl: Duration,
    policy: RecordPolicy,
    replicate_interval: Duration,
    republish_interval: Duration,
}

impl Records {
    pub(super) fn new(config: &Config) -> Self {
        Records {
            held: BTreeMap::new(),
            expiries: BTreeSet::new(),
            published: BTreeMap::new(),
            replications: BTreeSet::new(),
            ops: BTreeMap::new(),
            next_op: 0,
            inbound_ops: 0,
            max_records: config.max_records,
            max_inbound_ops: config.max_pending_store_ops,
            max_record_size: config.max_record_size,
            max_ttl: config.max_record_ttl,
            policy: config.record_policy,
            replicate_interval: config.replicate_interval,
            republish_interval: config.republish_interval,
        }
    }

    // ---- inspection ------------------------------------------------------------------------------------

    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    pub(super) fn stored_bytes(&self) -> u64 {
        self.held.values().map(|m| u64::from(m.size)).sum()
    }

    pub(super) fn holds(&self, key: &Key) -> bool {
        self.held.contains_key(key)
    }

    pub(super) fn meta(&self, key: &Key) -> Option<RecordMeta> {
        self.held.get(key).copied()
    }

    /// Whether a record may live here: size and record policy (for our own puts and for values a get
    /// receives).
    pub(super) fn acceptable(&self, record: &Record) -> bool {
        record.value.len() <= self.max_record_size && self.policy.accepts(&record.key, &record.value)
    }

    /// Whether a value of `len` bytes is within the size limit.
    pub(super) fn fits(&self, len: usize) -> bool {
        len <= self.max_record_size
    }

    /// Whether a peer's find-value may read the store now (the record is held and the inbound budget
    /// has room).
    pub(super) fn can_serve(&self, key: &Key) -> bool {
        self.held.contains_key(key) && self.inbound_ops < self.max_inbound_ops
    }

    // ---- storage operations ----------------------------------------------------------------------------

    /// Queues a storage operation; its result goes to `purpose` (none: fire and forget).
    pub(super) fn push_op(&mut self, out: &mut VecDeque<Output>, op: StoreOp, purpose: Option<StorePurpose>) {
        let id = StoreOpId(self.next_op);
        self.next_op += 1;
        if let Some(p) = purpose {
            if p.is_inbound() {
                self.inbound_ops += 1;
            }
            self.ops.insert(id, p);
        }
        out.push_back(Output::Store { id, op });
    }

    /// The purpose of a finished operation, `None` for an unknown id.
    pub(super) fn take_op(&mut self, op: StoreOpId) -> Option<StorePurpose> {
        let purpose = self.ops.remove(&op)?;
        if purpose.is_inbound() {
            self.inbound_ops -= 1;
        }
        Some(purpose)
    }

    /// Checks a peer's store against the limits and the record policy, counting a refusal.
    pub(super) fn check_store(&self, record: &Record, ttl: Duration, stats: &mut NodeStats) -> Option<StoreRefusal> {
        if record.value.len() > self.max_record_size {
            stats.refused_too_large += 1;
            Some(StoreRefusal::TooLarge)
        } else if ttl.is_zero() || ttl > self.max_ttl {
            stats.refused_bad_ttl += 1;
            Some(StoreRefusal::BadTtl)
        } else if !self.policy.accepts(&record.key, &record.value) {
            stats.refused_invalid += 1;
            Some(StoreRefusal::Invalid)
        } else if (!self.held.contains_key(&record.key) && self.held.len() >= self.max_records)
            || self.inbound_ops >= self.max_inbound_ops
        {
            stats.refused_full += 1;
            Some(StoreRefusal::Full)
        } else {
            None
        }
    }

    /// Our own put: stored locally (indexed once durable) and republished every `republish_interval`.
    /// Too large a value is neither.
    pub(super) fn publish(&mut self, now: Instant, out: &mut VecDeque<Output>, record: &Record, ttl: Duration) {
        if !self.fits(record.value.len()) {
            return;
        }
        let key = record.key;
        let expires = now + ttl;
        let size = record.value.len() as u32;
        let purpose = StorePurpose::LocalPublish { key, expires, size };
        self.push_op(out, StoreOp::Put { record: record.clone(), expires }, Some(purpose));
        self.published.insert(key, now + self.republish_interval);
    }

    /// Our own record could not be read back to republish it: it is no longer ours to keep alive.
    pub(super) fn unpublish(&mut self, key: &Key) {
        self.published.remove(key);
    }

    // ---- the index -------------------------------------------------------------------------------------

    /// Indexes a record now durable in the store (replacing what was known of it), with a fresh
    /// replication turn.
    pub(super) fn index(&mut self, now: Instant, rng: &mut ChaCha8Rng, key: Key, mut meta: RecordMeta) {
        meta.replicate_at = self.next_replication(now, rng, meta.expires);
        if let Some(old) = self.held.insert(key, meta) {
            self.expiries.remove(&(old.expires, key));
            if let Some(t) = old.replicate_at {
                self.replications.remove(&(t, key));
            }
        }
        self.expiries.insert((meta.expires, key));
        if let Some(t) = meta.replicate_at {
            self.replications.insert((t, key));
        }
    }

    /// A record already in the store after a restart: indexed, or removed when past `expires`.
    pub(super) fn restore(
        &mut self,
        now: Instant,
        rng: &mut ChaCha8Rng,
        out: &mut VecDeque<Output>,
        (key, expires, size): (Key, Instant, usize),
    ) {
        if expires <= now {
            self.push_op(out, StoreOp::Remove { key }, None);
            return;
        }
        self.index(now, rng, key, RecordMeta::new(expires, u32::try_from(size).unwrap_or(u32::MAX)));
    }

    /// After a replication round of `key`: when no store received meanwhile gave it a new turn, it gets
    /// the next interval's.
    pub(super) fn reschedule(&mut self, now: Instant, rng: &mut ChaCha8Rng, key: Key) {
        if let Some(meta) = self.held.get(&key).copied() {
            if meta.replicate_at.is_none() {
                self.index(now, rng, key, meta);
            }
        }
    }

    /// When a record stored (or stored again) now is next replicated by this node: one interval from now,
    /// minus up to a quarter of it at random so the holders of a record do not all fire together (the
    /// first one's stores push the others' times back). `None` when replication is off or the record
    /// expires first.
    fn next_replication(&self, now: Instant, rng: &mut ChaCha8Rng, expires: Instant) -> Option<Instant> {
        let interval = self.replicate_interval;
        if interval.is_zero() {
            return None;
        }
        let jitter_ms = u64::try_from(interval.as_millis() / 4).unwrap_or(u64::MAX).max(1);
        let at = now + interval - Duration::from_millis(rng.next_u64() % jitter_ms);
        (at < expires).then_some(at)
    }

    // ---- timers ----------------------------------------------------------------------------------------

    /// Expires records, starts replication and republishing reads that are due.
    pub(super) fn handle_timeout(&mut self, now: Instant, out: &mut VecDeque<Output>, stats: &mut NodeStats) {
        while let Some(&(expires, key)) = self.expiries.first() {
            if expires > now {
                break;
            }
            self.expiries.pop_first();
            if self.held.get(&key).is_some_and(|m| m.expires == expires) {
                self.held.remove(&key);
                stats.expired += 1;
                self.push_op(out, StoreOp::Remove { key }, None);
            }
        }
        while let Some(&(at, key)) = self.replications.first() {
            if at > now {
                break;
            }
            self.replications.pop_first();
            let Some(meta) = self.held.get_mut(&key) else { continue };
            if meta.replicate_at != Some(at) {
                continue;
            }
            meta.replicate_at = None;
            let expires = meta.expires;
            self.push_op(out, StoreOp::Get { key }, Some(StorePurpose::Replicate { key, expires }));
        }
        let due: Vec<Key> = self.published.iter().filter(|(_, at)| **at <= now).map(|(k, _)| *k).collect();
        for key in due {
            self.published.insert(key, now + self.republish_interval);
            self.push_op(out, StoreOp::Get { key }, Some(StorePurpose::Republish { key }));
        }
    }

    /// The earliest of the expiry, replication and republishing times.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        [
            self.expiries.first().map(|(t, _)| *t),
            self.published.values().min().copied(),
            self.replications.first().map(|(t, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
