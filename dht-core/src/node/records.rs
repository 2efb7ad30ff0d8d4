//! The records this node holds: the index, expiry, replication by holders, republishing of our own, the
//! storage operations in flight and what each is for, and the rules a peer's record must pass.

use super::room::{Charge, Room};
use super::NodeStats;
use crate::config::{Config, RecordPolicy};
use crate::event::{Output, QueryId, StoreOp, StoreOpId};
use crate::id::{Key, NodeId};
use crate::message::{Contact, RequestId, StoreRefusal};
use crate::record::{Record, RecordKind};
use crate::time::Instant;
use core::time::Duration;
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What a storage operation in flight is for: where its result goes.
#[derive(Debug)]
pub(super) enum StorePurpose {
    /// A peer's store, acknowledged once durable.
    InboundStore { from: Contact, request: RequestId, key: Key, meta: RecordMeta },
    /// A peer's find-value, answered with the value read.
    InboundFindValue { from: Contact, request: RequestId, key: Key },
    /// Our own put, indexed once durable; the put's query (if it reports) finishes only after.
    LocalPublish { key: Key, meta: RecordMeta, query: Option<QueryId> },
    /// A get's local read, before it goes to the network.
    LocalGet { query: QueryId },
    /// One of our records read back to put it again.
    Republish { key: Key },
    /// A held record read back to store it again at the k closest (replication by holders).
    Replicate { key: Key, expires: Instant },
    /// A restored record read back to learn its kind and version.
    LearnVersion { key: Key },
}

impl StorePurpose {
    fn is_inbound(&self) -> bool {
        matches!(self, StorePurpose::InboundStore { .. } | StorePurpose::InboundFindValue { .. })
    }

    /// The key this operation writes, if it writes one.
    fn writes(&self) -> Option<Key> {
        match self {
            StorePurpose::InboundStore { key, .. } | StorePurpose::LocalPublish { key, .. } => Some(*key),
            _ => None,
        }
    }
}

/// The source others' records restored after a restart are charged to (who sent them is not kept).
const RESTORED: NodeId = NodeId::from_bytes([0; 32]);

/// The version of a signed record held: its `seq` and a digest of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Version {
    pub(super) seq: u64,
    tag: [u8; 16],
}

/// What the index knows of a held record (the value itself lives in the store).
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordMeta {
    pub(super) expires: Instant,
    pub(super) size: u32,
    /// When this node stores it again at the k closest, unless someone stores it here first.
    pub(super) replicate_at: Option<Instant>,
    pub(super) version: Held,
    /// Whom it is charged to in the room for others' records; `None` for our own.
    pub(super) charge: Option<Charge>,
}

/// What is known of a held record's kind and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// Immutable or unchecked.
    Unsigned,
    /// Signed, at this version.
    Signed(Version),
    /// Restored from the store after a restart, not read since: a peer's store of its key waits until a
    /// read has told what it is.
    Unknown,
}

impl RecordMeta {
    /// A record restored from the store: its kind is learnt when it is next read.
    pub(super) fn restored(expires: Instant, size: u32) -> Self {
        RecordMeta { expires, size, replicate_at: None, version: Held::Unknown, charge: None }
    }

    pub(super) fn of(record: &Record, expires: Instant) -> Self {
        let version = match record.seq() {
            Some(seq) => Held::Signed(Version { seq, tag: record.value_tag() }),
            None => Held::Unsigned,
        };
        RecordMeta { expires, size: record.value.len() as u32, replicate_at: None, version, charge: None }
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
    /// The room for others' records and who uses it.
    room: Room,
    /// Keys with a write in flight: another write of the same key waits ([`StoreRefusal::Busy`]), so writes
    /// of one key never overtake each other in the store.
    writing: BTreeSet<Key>,
    next_op: u64,
    /// Operations in flight for peers' requests.
    inbound_ops: usize,
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
            room: Room::new(config),
            writing: BTreeSet::new(),
            next_op: 0,
            inbound_ops: 0,
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

    pub(super) fn is_own(&self, key: &Key) -> bool {
        self.published.contains_key(key)
    }

    pub(super) fn holds(&self, key: &Key) -> bool {
        self.held.contains_key(key)
    }

    pub(super) fn meta(&self, key: &Key) -> Option<RecordMeta> {
        self.held.get(key).copied()
    }

    /// Whether a record may live here: size and record policy (for values a get receives).
    pub(super) fn acceptable(&self, record: &Record) -> bool {
        self.valid(record).is_ok()
    }

    /// Whether a record may be put: size and record policy.
    pub(super) fn valid(&self, record: &Record) -> Result<(), StoreRefusal> {
        if record.value.len() > self.max_record_size {
            return Err(StoreRefusal::TooLarge);
        }
        self.policy.check(record).map(|_| ())
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
    pub(super) fn push_op(
        &mut self,
        out: &mut VecDeque<Output>,
        op: StoreOp,
        purpose: Option<StorePurpose>,
    ) -> StoreOpId {
        let id = StoreOpId(self.next_op);
        self.next_op += 1;
        if let Some(p) = purpose {
            if p.is_inbound() {
                self.inbound_ops += 1;
            }
            if let Some(key) = p.writes() {
                self.writing.insert(key);
            }
            self.ops.insert(id, p);
        }
        out.push_back(Output::Store { id, op });
        id
    }

    /// The purpose of a finished operation, `None` for an unknown id.
    pub(super) fn take_op(&mut self, op: StoreOpId) -> Option<StorePurpose> {
        let purpose = self.ops.remove(&op)?;
        if purpose.is_inbound() {
            self.inbound_ops -= 1;
        }
        if let Some(key) = purpose.writes() {
            self.writing.remove(&key);
        }
        Some(purpose)
    }

    /// Checks a peer's store: size, TTL, the record policy and signature, the version held, room. On
    /// success, what the index will hold once it is written.
    /// A record new here is charged to `from` (and its owner) in the room for others' records, which
    /// may evict others' records to make way (see [`Room`]); they are forgotten with a `Remove`.
    pub(super) fn check_store(
        &mut self,
        now: Instant,
        out: &mut VecDeque<Output>,
        (from, record): (&NodeId, &Record),
        (ttl, cas): (Duration, Option<u64>),
        stats: &mut NodeStats,
    ) -> Result<RecordMeta, StoreRefusal> {
        let refusal = if record.value.len() > self.max_record_size {
            StoreRefusal::TooLarge
        } else if ttl.is_zero() || ttl > self.max_ttl {
            StoreRefusal::BadTtl
        } else if self.writing.contains(&record.key) || self.inbound_ops >= self.max_inbound_ops {
            StoreRefusal::Busy
        } else {
            match self.admit(now, record, (ttl, cas), false).and_then(|meta| self.charge(from, record, meta)) {
                Ok((meta, evicted)) => {
                    stats.evicted += evicted.len() as u64;
                    for key in evicted {
                        if let Some(old) = self.held.get(&key).copied() {
                            self.forget(key, &old);
                            self.push_op(out, StoreOp::Remove { key }, None);
                        }
                    }
                    return Ok(meta);
                }
                Err(refusal) => refusal,
            }
        };
        stats.count_refusal(refusal);
        Err(refusal)
    }

    /// Charges a peer's record: a new key to `from` and its owner, within the room (evicting others'
    /// records if `from` is within its fair share: their keys are returned); a replaced one stays charged
    /// to whom it was (our own stays ours), at its new size and expiry, once written (see [`Records::index`]).
    fn charge(
        &mut self,
        from: &NodeId,
        record: &Record,
        mut meta: RecordMeta,
    ) -> Result<(RecordMeta, Vec<Key>), StoreRefusal> {
        let resize = |c: Charge| Charge { size: u64::from(meta.size), expires: meta.expires, ..c };
        if let Some(held) = self.held.get(&record.key) {
            meta.charge = held.charge.map(resize);
            return Ok((meta, Vec::new()));
        }
        let charge = Charge { source: *from, owner: record.owner(), size: u64::from(meta.size), expires: meta.expires };
        let evicted = self.room.admit(record.key, charge)?;
        meta.charge = Some(charge);
        Ok((meta, evicted.into_iter().map(|(key, _)| key).collect()))
    }

    /// A peer's store of a key new here failed to be written: its charge goes.
    pub(super) fn write_failed(&mut self, key: Key, meta: &RecordMeta) {
        if !self.held.contains_key(&key) {
            if let Some(c) = &meta.charge {
                self.room.remove(key, c);
            }
        }
    }

    /// The rules of record kinds and versions: the record is valid under the policy; a signed record
    /// replaces what is held only with a higher `seq` (with the same `seq` it must carry the same value,
    /// and a compare-and-swap must name the `seq` held); an unsigned record never replaces a signed one.
    /// Nothing but a newer signed version, or an unchecked record in a closed swarm, moves the time a held
    /// record has left earlier: otherwise the later expiry wins. A held record of unknown kind (restored,
    /// not read since) is `Busy` until a read tells (see [`Records::needs_reading`]).
    fn admit(
        &self,
        now: Instant,
        record: &Record,
        (ttl, cas): (Duration, Option<u64>),
        local: bool,
    ) -> Result<RecordMeta, StoreRefusal> {
        let kind = self.policy.check(record)?;
        let meta = RecordMeta::of(record, now + ttl);
        let Some(held) = self.held.get(&record.key) else { return Ok(meta) };
        let keep_later = |mut meta: RecordMeta| {
            meta.expires = meta.expires.max(held.expires);
            meta
        };
        match (held.version, meta.version) {
            // Our own put trusts us: we hold the owner's key or the content.
            (Held::Unknown, _) if local => Ok(meta),
            (Held::Unknown, _) => Err(StoreRefusal::Busy),
            (Held::Signed(current), Held::Signed(new)) => {
                if cas.is_some_and(|c| c != current.seq) {
                    Err(StoreRefusal::CasFailed { current: current.seq })
                } else if new.seq < current.seq {
                    Err(StoreRefusal::Stale { current: current.seq })
                } else if new.seq > current.seq {
                    Ok(meta)
                } else if new.tag != current.tag {
                    Err(StoreRefusal::Conflict)
                } else {
                    Ok(keep_later(meta))
                }
            }
            (Held::Signed(_), _) => Err(StoreRefusal::Invalid),
            // A signed record takes its key from an unsigned one whose value happens to hash to it.
            (Held::Unsigned, Held::Signed(_)) => Ok(meta),
            (Held::Unsigned, _) if kind == RecordKind::Unchecked => Ok(meta),
            (Held::Unsigned, _) => Ok(keep_later(meta)),
        }
    }

    /// Whether a peer's store of `key` waits for the held record's kind to be read (see [`Held::Unknown`]).
    pub(super) fn needs_reading(&self, key: &Key) -> bool {
        self.held.get(key).is_some_and(|m| m.version == Held::Unknown)
            && !self.ops.values().any(|p| matches!(p, StorePurpose::LearnVersion { key: k } if k == key))
    }

    /// A held record was read back: its kind and version are known from now on. A record that does not
    /// verify any more (a store written by an older version) is forgotten.
    pub(super) fn learn(&mut self, out: &mut VecDeque<Output>, key: Key, record: Option<&Record>) {
        let Some(meta) = self.held.get_mut(&key) else { return };
        match record.filter(|r| r.key == key && self.policy.accepts(r)) {
            Some(r) => meta.version = RecordMeta::of(r, meta.expires).version,
            None => {
                let old = *meta;
                self.forget(key, &old);
                self.push_op(out, StoreOp::Remove { key }, None);
            }
        }
    }

    fn forget(&mut self, key: Key, old: &RecordMeta) {
        if let Some(c) = &old.charge {
            self.room.remove(key, c);
        }
        self.held.remove(&key);
        self.expiries.remove(&(old.expires, key));
        if let Some(t) = old.replicate_at {
            self.replications.remove(&(t, key));
        }
    }

    /// Our own put: checked like a peer's store (minus room: our own records are not charged and never
    /// make way for others'), stored locally (indexed once durable) and republished every `republish_interval`.
    pub(super) fn publish(
        &mut self,
        now: Instant,
        out: &mut VecDeque<Output>,
        record: &Record,
        (ttl, cas): (Duration, Option<u64>),
    ) -> Result<StoreOpId, StoreRefusal> {
        if !self.fits(record.value.len()) {
            return Err(StoreRefusal::TooLarge);
        }
        if self.writing.contains(&record.key) {
            return Err(StoreRefusal::Busy);
        }
        let meta = self.admit(now, record, (ttl, cas), true)?;
        let key = record.key;
        let purpose = StorePurpose::LocalPublish { key, meta, query: None };
        let id = self.push_op(out, StoreOp::Put { record: record.clone(), expires: meta.expires }, Some(purpose));
        self.published.insert(key, now + self.republish_interval);
        Ok(id)
    }

    /// The put `query` waits for our own write `op` (see [`Records::publish`]).
    pub(super) fn attach(&mut self, op: StoreOpId, query: QueryId) {
        if let Some(StorePurpose::LocalPublish { query: q, .. }) = self.ops.get_mut(&op) {
            *q = Some(query);
        }
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
            if let Some(c) = &old.charge {
                self.room.remove(key, c);
            }
        }
        if let Some(c) = meta.charge {
            self.room.add(key, c);
        }
        self.expiries.insert((meta.expires, key));
        if let Some(t) = meta.replicate_at {
            self.replications.insert((t, key));
        }
    }

    /// A record already in the store after a restart: indexed, or removed when past `expires`. Our own
    /// (`own`) is republished from now on and not charged; others' are charged to [`RESTORED`], the first
    /// to make way when the room is full.
    pub(super) fn restore(
        &mut self,
        now: Instant,
        rng: &mut ChaCha8Rng,
        out: &mut VecDeque<Output>,
        (key, expires, size, own): (Key, Instant, usize, bool),
    ) {
        if expires <= now {
            self.push_op(out, StoreOp::Remove { key }, None);
            return;
        }
        let mut meta = RecordMeta::restored(expires, u32::try_from(size).unwrap_or(u32::MAX));
        if own {
            self.published.insert(key, now + self.republish_interval);
        } else {
            meta.charge = Some(Charge { source: RESTORED, owner: None, size: u64::from(meta.size), expires });
        }
        self.index(now, rng, key, meta);
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
            if let Some(old) = self.held.get(&key).copied().filter(|m| m.expires == expires) {
                self.forget(key, &old);
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
