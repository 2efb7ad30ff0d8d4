use super::bucket::{prefix, Bucket, Entry};
use crate::id::NodeId;
use crate::message::Contact;
use crate::time::Instant;

/// Largest bucket growth ([`RoutingTable::with_bucket_growth`]): deep buckets of at most 256·k entries.
pub const MAX_BUCKET_GROWTH: u32 = 8;

/// What [`RoutingTable::insert`] did with a contact.
#[must_use = "a full bucket asks the caller to ping its stalest entry"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertResult {
    /// The contact is new and took a free slot.
    Inserted,
    /// The contact was known; it is now the most recently seen of its bucket.
    Updated,
    /// The bucket is full. The newcomer waits in the replacement cache; ping `stale` (the least recently
    /// seen entry) and call [`RoutingTable::remove`] if it does not answer, which promotes the newcomer.
    PingStale {
        /// The entry to check.
        stale: Contact,
    },
    /// The bucket is full and its stalest entry is already being checked; the newcomer waits in the
    /// replacement cache.
    Queued,
    /// Our own id: never stored.
    SelfId,
}

/// Kademlia routing table with least-recently-seen eviction guarded by a liveness check.
///
/// Buckets are created lazily: a table only pays for the buckets its peers fall in. Bucket `i` (0 holds the
/// half of the id space farthest from us) keeps up to `k · 2^min(i, growth)` entries: see
/// [`RoutingTable::with_bucket_growth`].
#[derive(Debug)]
pub struct RoutingTable {
    local: NodeId,
    k: usize,
    growth: u32,
    replacement_cache: usize,
    ping_after: core::time::Duration,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    /// An empty table for node `local` with buckets of `k` entries (deeper ones more with
    /// [`RoutingTable::with_bucket_growth`]) and `replacement_cache` waiting contacts per bucket.
    pub fn new(local: NodeId, k: usize, replacement_cache: usize) -> Self {
        RoutingTable {
            local,
            k: k.max(1),
            growth: 0,
            replacement_cache,
            ping_after: core::time::Duration::ZERO,
            buckets: Vec::new(),
        }
    }

    /// A full bucket pings its stalest entry only if that entry was last seen at least `ping_after` ago;
    /// otherwise the newcomer just waits in the replacement cache (default: always ping).
    pub fn with_ping_after(mut self, ping_after: core::time::Duration) -> Self {
        self.ping_after = ping_after;
        self
    }

    /// Lets deeper buckets hold more: bucket `i` keeps up to `k · 2^min(i, growth)` entries (0, the default,
    /// is the paper's k everywhere; at most [`MAX_BUCKET_GROWTH`]). Bucket `i` covers `2^-(i+1)` of the id
    /// space: bucket 0, where any made-up id lands with even odds, stays at k, and the deeper ones keep more
    /// of the peers that speak to us: their answers then cover a target's neighbourhood in fewer round
    /// trips. Entries still only come from peers that sent or answered us something; a bucket that is not
    /// full is not checked for departed entries (requests to them fail and remove them).
    pub fn with_bucket_growth(mut self, growth: u32) -> Self {
        self.growth = growth.min(MAX_BUCKET_GROWTH);
        self
    }

    /// Entries bucket `index` may hold.
    pub fn bucket_capacity(&self, index: usize) -> usize {
        let doublings = u32::try_from(index).unwrap_or(u32::MAX).min(self.growth);
        self.k.saturating_mul(1 << doublings)
    }

    /// The local node's id.
    pub fn local_id(&self) -> &NodeId {
        &self.local
    }

    fn index(&self, id: &NodeId) -> Option<usize> {
        self.local.distance(id).bucket_index()
    }

    fn bucket_mut(&mut self, index: usize, now: Instant) -> &mut Bucket {
        while self.buckets.len() <= index {
            self.buckets.push(Bucket::new(now));
        }
        &mut self.buckets[index]
    }

    /// Records that `contact` is alive (it sent us a message or answered one), inserting it when there is
    /// room. Call only for peers authenticated by the transport.
    pub fn insert(&mut self, contact: Contact, now: Instant) -> InsertResult {
        let Some(index) = self.index(&contact.id) else { return InsertResult::SelfId };
        let (capacity, cache, ping_after) = (self.bucket_capacity(index), self.replacement_cache, self.ping_after);
        let bucket = self.bucket_mut(index, now);
        if let Some(pos) = bucket.position(&contact.id) {
            // Entries stay where they are; "least recently seen" is the smallest `last_seen`, found when a
            // full bucket needs it (cheaper than moving the entries on every message).
            let entry = bucket.entry_mut(pos);
            entry.last_seen = now;
            entry.failures = 0;
            if !contact.addrs.is_empty() && *entry.addrs != contact.addrs[..] {
                entry.addrs = contact.addrs.into_boxed_slice();
            }
            if bucket.pending_ping == Some(contact.id) {
                bucket.pending_ping = None;
            }
            return InsertResult::Updated;
        }
        if bucket.len() < capacity {
            bucket.replacements.retain(|c| c.id != contact.id);
            let entry = Entry { id: contact.id, addrs: contact.addrs.into_boxed_slice(), last_seen: now, failures: 0 };
            bucket.push(entry, capacity);
            return InsertResult::Inserted;
        }
        bucket.add_replacement(contact, cache);
        // Even the stalest entry was heard from recently: it is almost surely alive, so no ping.
        if bucket.pending_ping.is_some() || bucket.seen_floor + ping_after > now {
            return InsertResult::Queued;
        }
        let stale = bucket.stalest().expect("a full bucket has entries");
        if stale.last_seen + ping_after > now {
            return InsertResult::Queued;
        }
        let stale = stale.contact();
        bucket.pending_ping = Some(stale.id);
        InsertResult::PingStale { stale }
    }

    /// Counts a failed request to `id`; returns the failure count since it was last seen (0 if unknown).
    pub fn record_failure(&mut self, id: &NodeId) -> u8 {
        let Some(index) = self.index(id) else { return 0 };
        let Some(bucket) = self.buckets.get_mut(index) else { return 0 };
        match bucket.position(id) {
            Some(pos) => {
                let e = bucket.entry_mut(pos);
                e.failures = e.failures.saturating_add(1);
                e.failures
            }
            None => 0,
        }
    }

    /// Removes `id` (it failed a liveness check or too many requests) and promotes the newest contact of
    /// the replacement cache, if any. Returns the removed entry.
    pub fn remove(&mut self, id: &NodeId, now: Instant) -> Option<Entry> {
        let index = self.index(id)?;
        let capacity = self.bucket_capacity(index);
        let bucket = self.buckets.get_mut(index)?;
        if bucket.pending_ping == Some(*id) {
            bucket.pending_ping = None;
        }
        let pos = bucket.position(id)?;
        let removed = bucket.remove(pos);
        if let Some(c) = bucket.replacements.pop_back() {
            let entry = Entry { id: c.id, addrs: c.addrs.into_boxed_slice(), last_seen: now, failures: 0 };
            if bucket.len() < capacity {
                bucket.push(entry, capacity);
            }
        }
        Some(removed)
    }

    /// Whether `id` is in the table.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    /// The entry for `id`.
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        let bucket = self.buckets.get(self.index(id)?)?;
        bucket.position(id).map(|p| &bucket.entries()[p])
    }

    /// Up to `count` contacts closest to `target`, nearest first (ties cannot occur: ids are distinct).
    pub fn closest(&self, target: &NodeId, count: usize) -> Vec<Contact> {
        self.closest_entries(target, count).into_iter().map(Entry::contact).collect()
    }

    /// Like [`RoutingTable::closest`], borrowing the entries.
    ///
    /// Walks the buckets in distance order and stops once it has `count` entries, instead of sorting the
    /// whole table. With `d` = our distance to the target and `b` its bucket (first set bit of `d`):
    /// - bucket `b` holds the closest entries (they agree with the target beyond bit `b`);
    /// - an entry of a deeper bucket `i > b` differs from the target at bit `b`, agrees with it on the bits
    ///   between `b` and `i` exactly where `d` does, and at bit `i` differs from it iff `d` has a 0 there. So
    ///   the deeper buckets with `d[i] = 1` come next, shallowest first, then those with `d[i] = 0`, deepest
    ///   first;
    /// - then the shallower buckets `b - 1, b - 2, …, 0`, each farther than the last.
    ///
    /// Only the entries within each bucket need sorting.
    pub fn closest_entries(&self, target: &NodeId, count: usize) -> Vec<&Entry> {
        if count == 0 {
            return Vec::new();
        }
        /// Appends one bucket, keeping only its closest `count - keyed.len()` entries, sorted. Orders by
        /// the distance of the id prefixes, and by full distance only where prefixes tie.
        fn take<'a>(keyed: &mut Vec<(u64, &'a Entry)>, bucket: &'a Bucket, target: &NodeId, count: usize) -> bool {
            let t = prefix(target);
            let by_distance = |a: &(u64, &Entry), b: &(u64, &Entry)| {
                a.0.cmp(&b.0).then_with(|| a.1.id.distance(target).cmp(&b.1.id.distance(target)))
            };
            let start = keyed.len();
            keyed.extend(bucket.prefixes().iter().zip(bucket.entries()).map(|(p, e)| (p ^ t, e)));
            let need = count - start;
            if keyed.len() - start > need {
                keyed[start..].select_nth_unstable_by(need - 1, by_distance);
                keyed.truncate(start + need);
            }
            keyed[start..].sort_unstable_by(by_distance);
            keyed.len() >= count
        }
        let d = self.local.distance(target);
        let n = self.buckets.len();
        let b = self.index(target).unwrap_or(256).min(n);
        let deeper = b + 1..n;
        let order = (b < n)
            .then_some(b)
            .into_iter()
            .chain(deeper.clone().filter(|&i| d.bit(i)))
            .chain(deeper.rev().filter(|&i| !d.bit(i)))
            .chain((0..b).rev());
        // A whole bucket is taken before trimming to `count`.
        let first = self.bucket_capacity(b);
        let mut keyed: Vec<(u64, &Entry)> = Vec::with_capacity(count.min(first) + first);
        for i in order {
            if take(&mut keyed, &self.buckets[i], target, count) {
                break;
            }
        }
        keyed.into_iter().map(|(_, e)| e).collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(Bucket::len).sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(|b| b.len() == 0)
    }

    /// All entries, bucket by bucket (farthest bucket first), in arrival order within a bucket.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.entries().iter())
    }

    /// Drops, in every bucket holding more than k entries, those not heard from for `older_than`, stalest
    /// first, until k remain; returns their ids. (The first k of a bucket are kept as the paper keeps them:
    /// a full bucket pings its stalest entry before replacing it.)
    pub fn shed_stale(&mut self, now: Instant, older_than: core::time::Duration) -> Vec<NodeId> {
        let k = self.k;
        let mut shed = Vec::new();
        for b in &mut self.buckets {
            let excess = b.len().saturating_sub(k);
            if excess == 0 || b.seen_floor + older_than > now {
                continue;
            }
            let mut stale: Vec<(Instant, NodeId)> =
                b.entries().iter().filter(|e| e.last_seen + older_than <= now).map(|e| (e.last_seen, e.id)).collect();
            stale.sort_unstable();
            for (_, id) in stale.into_iter().take(excess) {
                if let Some(pos) = b.position(&id) {
                    b.remove(pos);
                    if b.pending_ping == Some(id) {
                        b.pending_ping = None;
                    }
                    shed.push(id);
                }
            }
            let _ = b.stalest();
        }
        shed
    }

    /// What is worth saving across a restart: the `per_bucket` most recently seen entries of every bucket,
    /// as contacts (farthest bucket first). Bounded by `256 · per_bucket` whatever the buckets hold, so a
    /// saved table always loads back; deep buckets refill from the peers that speak to us.
    pub fn snapshot(&self, per_bucket: usize) -> Vec<Contact> {
        let mut out = Vec::new();
        for b in &self.buckets {
            let mut recent: Vec<&Entry> = b.entries().iter().collect();
            if recent.len() > per_bucket {
                recent.sort_unstable_by_key(|e| core::cmp::Reverse(e.last_seen));
                recent.truncate(per_bucket);
            }
            out.extend(recent.into_iter().map(Entry::contact));
        }
        out
    }

    /// `(bucket index, entries)` for every non-empty bucket: a picture of the table.
    pub fn buckets(&self) -> impl Iterator<Item = (usize, &[Entry])> {
        self.buckets.iter().enumerate().filter(|(_, b)| b.len() > 0).map(|(i, b)| (i, b.entries()))
    }

    /// Marks the bucket `target` falls in as recently looked up (no refresh needed for a while).
    pub fn touch(&mut self, target: &NodeId, now: Instant) {
        if let Some(index) = self.index(target) {
            if let Some(b) = self.buckets.get_mut(index) {
                b.last_touched = now;
            }
        }
    }

    /// Entries in bucket `index` (0 for a bucket never used).
    pub fn bucket_len(&self, index: usize) -> usize {
        self.buckets.get(index).map_or(0, Bucket::len)
    }

    /// Number of bucket slots allocated (one past the deepest bucket ever used).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// When bucket `index` was last looked up.
    pub fn last_touched(&self, index: usize) -> Option<Instant> {
        self.buckets.get(index).map(|b| b.last_touched)
    }

    /// Approximate heap bytes held by the table.
    pub fn heap_bytes(&self) -> usize {
        let entry = core::mem::size_of::<Entry>();
        let contact = core::mem::size_of::<Contact>();
        self.buckets.capacity() * core::mem::size_of::<Bucket>()
            + self
                .buckets
                .iter()
                .map(|b| {
                    b.capacity() * (entry + core::mem::size_of::<u64>())
                        + b.replacements.capacity() * contact
                        + b.entries()
                            .iter()
                            .map(|e| {
                                e.addrs
                                    .iter()
                                    .map(|a| core::mem::size_of::<crate::Address>() + 16 + a.as_str().len())
                                    .sum::<usize>()
                            })
                            .sum::<usize>()
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_with_prefix(first: u8, n: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[0] = first;
        b[31] = n;
        NodeId::from_bytes(b)
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn inserts_updates_and_refuses_self() {
        let local = NodeId::from_bytes([0; 32]);
        let mut rt = RoutingTable::new(local, 3, 2);
        assert_eq!(rt.insert(Contact::bare(local), t(0)), InsertResult::SelfId);
        let a = id_with_prefix(0x80, 1);
        assert_eq!(rt.insert(Contact::bare(a), t(1)), InsertResult::Inserted);
        assert_eq!(rt.insert(Contact::bare(a), t(2)), InsertResult::Updated);
        assert_eq!(rt.get(&a).unwrap().last_seen, t(2));
        assert_eq!(rt.len(), 1);
        assert_eq!(rt.bucket_count(), 1, "bucket 0 holds the far half");
    }

    #[test]
    fn full_bucket_pings_least_recently_seen_and_keeps_it_if_alive() {
        let local = NodeId::from_bytes([0; 32]);
        let mut rt = RoutingTable::new(local, 3, 2);
        let ids: Vec<_> = (1..=5).map(|n| id_with_prefix(0x80, n)).collect();
        for (i, id) in ids[..3].iter().enumerate() {
            assert_eq!(rt.insert(Contact::bare(*id), t(i as u64)), InsertResult::Inserted);
        }
        // The oldest (ids[0]) must be checked before the newcomer may replace it.
        assert_eq!(rt.insert(Contact::bare(ids[3]), t(10)), InsertResult::PingStale { stale: Contact::bare(ids[0]) });
        assert_eq!(rt.insert(Contact::bare(ids[4]), t(11)), InsertResult::Queued);
        // It answers: it stays, becomes most recent, and the newcomers stay out.
        assert_eq!(rt.insert(Contact::bare(ids[0]), t(12)), InsertResult::Updated);
        assert!(rt.contains(&ids[0]) && !rt.contains(&ids[3]) && !rt.contains(&ids[4]));
        // Next full insert pings the new stalest, ids[1].
        let r = rt.insert(Contact::bare(id_with_prefix(0x80, 9)), t(13));
        assert_eq!(r, InsertResult::PingStale { stale: Contact::bare(ids[1]) });
    }

    #[test]
    fn recently_seen_stale_entries_are_not_pinged() {
        let local = NodeId::from_bytes([0; 32]);
        let mut rt = RoutingTable::new(local, 1, 2).with_ping_after(core::time::Duration::from_secs(60));
        let (a, b) = (id_with_prefix(0x80, 1), id_with_prefix(0x80, 2));
        let _ = rt.insert(Contact::bare(a), t(0));
        assert_eq!(rt.insert(Contact::bare(b), t(59_999)), InsertResult::Queued);
        assert_eq!(rt.insert(Contact::bare(b), t(60_000)), InsertResult::PingStale { stale: Contact::bare(a) });
    }

    #[test]
    fn removal_promotes_newest_replacement() {
        let local = NodeId::from_bytes([0; 32]);
        let mut rt = RoutingTable::new(local, 2, 2);
        let ids: Vec<_> = (1..=5).map(|n| id_with_prefix(0x80, n)).collect();
        let _ = rt.insert(Contact::bare(ids[0]), t(0));
        let _ = rt.insert(Contact::bare(ids[1]), t(0));
        let _ = rt.insert(Contact::bare(ids[2]), t(1));
        let _ = rt.insert(Contact::bare(ids[3]), t(2));
        let _ = rt.insert(Contact::bare(ids[4]), t(3)); // cache cap 2: ids[2] dropped
        assert!(rt.remove(&ids[0], t(5)).is_some());
        assert!(rt.contains(&ids[4]), "newest waiting contact promoted");
        assert!(!rt.contains(&ids[2]));
        assert_eq!(rt.len(), 2);
        assert!(rt.remove(&ids[0], t(6)).is_none());
    }

    #[test]
    fn deeper_buckets_hold_more_with_growth() {
        let local = NodeId::from_bytes([0; 32]);
        // Prefix 0x80: bucket 0 (the far half); 0x20: bucket 2; 0x01: bucket 7.
        for (growth, caps) in [(0, [2, 2, 2]), (1, [2, 4, 4]), (3, [2, 8, 16])] {
            let mut rt = RoutingTable::new(local, 2, 0).with_bucket_growth(growth);
            for (first, cap) in [0x80u8, 0x20, 0x01].into_iter().zip(caps) {
                let index = usize::from(first.leading_zeros() as u8);
                assert_eq!(rt.bucket_capacity(index), cap, "growth {growth}, bucket {index}");
                for n in 0..cap as u8 {
                    assert_eq!(rt.insert(Contact::bare(id_with_prefix(first, n)), t(0)), InsertResult::Inserted);
                }
                let over = rt.insert(Contact::bare(id_with_prefix(first, 200)), t(1));
                assert!(matches!(over, InsertResult::PingStale { .. }), "growth {growth}, bucket {index}: full");
                assert_eq!(rt.bucket_len(index), cap);
            }
        }
        // A deep bucket stays full when a departed entry gives way to a waiting contact.
        let mut rt = RoutingTable::new(local, 2, 1).with_bucket_growth(3);
        for n in 0..16 {
            let _ = rt.insert(Contact::bare(id_with_prefix(0x01, n)), t(0));
        }
        let waiting = id_with_prefix(0x01, 100);
        assert!(matches!(rt.insert(Contact::bare(waiting), t(1)), InsertResult::PingStale { .. }));
        assert!(rt.remove(&id_with_prefix(0x01, 0), t(2)).is_some());
        assert!(rt.contains(&waiting), "promoted");
        assert_eq!(rt.bucket_len(7), 16);
        let huge = RoutingTable::new(local, 20, 0).with_bucket_growth(100);
        assert_eq!(huge.bucket_capacity(255), 20 << MAX_BUCKET_GROWTH, "growth is capped");
    }

    #[test]
    fn deep_buckets_shed_what_was_not_heard_from_lately_down_to_k() {
        let local = NodeId::from_bytes([0; 32]);
        let mut rt = RoutingTable::new(local, 2, 0).with_bucket_growth(3);
        let minute = core::time::Duration::from_secs(60);
        // Bucket 7 (capacity 16): six entries, seen at minutes 0..6; bucket 0 (capacity 2): two, at 0.
        for n in 0..6u8 {
            let _ = rt.insert(Contact::bare(id_with_prefix(0x01, n)), t(u64::from(n) * 60_000));
        }
        for n in 0..2 {
            let _ = rt.insert(Contact::bare(id_with_prefix(0x80, n)), t(0));
        }
        // At minute 10, entries older than 5 minutes go, stalest first: 0..=4 qualify but only four may go.
        let shed = rt.shed_stale(t(10 * 60_000), 5 * minute);
        assert_eq!(shed, (0..4).map(|n| id_with_prefix(0x01, n)).collect::<Vec<_>>());
        assert_eq!(rt.bucket_len(7), 2, "down to k");
        assert!(rt.contains(&id_with_prefix(0x01, 4)) && rt.contains(&id_with_prefix(0x01, 5)));
        assert_eq!(rt.bucket_len(0), 2, "a bucket at k keeps its entries, however old");
        assert!(rt.shed_stale(t(60 * 60_000), 5 * minute).is_empty());
        // Fresh entries are kept even above k.
        for n in 10..14u8 {
            let _ = rt.insert(Contact::bare(id_with_prefix(0x01, n)), t(61 * 60_000));
        }
        assert_eq!(rt.shed_stale(t(62 * 60_000), 5 * minute), vec![id_with_prefix(0x01, 4), id_with_prefix(0x01, 5)]);
        assert_eq!(rt.bucket_len(7), 4);
    }

    #[test]
    fn a_snapshot_keeps_the_most_recently_seen_of_each_bucket() {
        let local = NodeId::from_bytes([0; 32]);
        let mut rt = RoutingTable::new(local, 2, 0).with_bucket_growth(3);
        // Bucket 0 (capacity 2) gets two entries, bucket 7 (capacity 16) five, seen at times 0..5.
        for n in 0..2 {
            let _ = rt.insert(Contact::bare(id_with_prefix(0x80, n)), t(u64::from(n)));
        }
        for n in 0..5 {
            let _ = rt.insert(Contact::bare(id_with_prefix(0x01, n)), t(u64::from(n)));
        }
        let _ = rt.insert(Contact::bare(id_with_prefix(0x01, 0)), t(10));
        let ids: Vec<_> = rt.snapshot(2).into_iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), 4, "two per bucket");
        assert!(ids.contains(&id_with_prefix(0x80, 0)) && ids.contains(&id_with_prefix(0x80, 1)));
        assert!(ids.contains(&id_with_prefix(0x01, 0)), "seen last, at 10");
        assert!(ids.contains(&id_with_prefix(0x01, 4)), "seen at 4");
        assert_eq!(rt.snapshot(100).len(), 7);
    }

    #[test]
    fn failures_count_and_reset_on_contact() {
        let local = NodeId::from_bytes([0; 32]);
        let mut rt = RoutingTable::new(local, 2, 0);
        let a = id_with_prefix(0x10, 1);
        let _ = rt.insert(Contact::bare(a), t(0));
        assert_eq!(rt.record_failure(&a), 1);
        assert_eq!(rt.record_failure(&a), 2);
        let _ = rt.insert(Contact::bare(a), t(1));
        assert_eq!(rt.get(&a).unwrap().failures, 0);
        assert_eq!(rt.record_failure(&id_with_prefix(0x10, 2)), 0);
    }

    #[test]
    fn closest_matches_brute_force() {
        let local = NodeId::from_public_key(&[0; 32]);
        let mut rt = RoutingTable::new(local, 20, 0);
        let mut all = Vec::new();
        for i in 0..500u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            let id = NodeId::from_public_key(&key);
            if rt.insert(Contact::bare(id), t(0)) == InsertResult::Inserted {
                all.push(id);
            }
        }
        assert!(rt.len() > 60);
        for t in 0..200u8 {
            // Targets everywhere: far, near, and the local id itself.
            let target = if t == 0 { local } else { NodeId::from_public_key(&[t; 32]) };
            all.sort_by_key(|id| id.distance(&target));
            for count in [1, 20, 45, 1000] {
                let got: Vec<_> = rt.closest(&target, count).into_iter().map(|c| c.id).collect();
                assert_eq!(got, all[..count.min(all.len())]);
            }
        }
        // Targets sharing a long prefix with the local id (deep buckets).
        for bit in [3usize, 8, 40, 255] {
            let mut bytes = *local.as_bytes();
            bytes[bit / 8] ^= 1 << (7 - bit % 8);
            let target = NodeId::from_bytes(bytes);
            all.sort_by_key(|id| id.distance(&target));
            let got: Vec<_> = rt.closest(&target, 20).into_iter().map(|c| c.id).collect();
            assert_eq!(got, all[..20]);
        }
        assert_eq!(rt.closest(&local, 0), vec![]);
    }
}
