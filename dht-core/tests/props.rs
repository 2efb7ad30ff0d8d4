//! Properties of the routing table and the lookup state machine, checked on random operation sequences.

use dht_core::lookup::{Lookup, LookupParams, Next, PeerState};
use dht_core::routing::{InsertResult, RoutingTable};
use dht_core::{Contact, Instant, NodeId};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn id(n: u16) -> NodeId {
    let mut key = [0u8; 32];
    key[..2].copy_from_slice(&n.to_le_bytes());
    NodeId::from_public_key(&key)
}

fn local() -> NodeId {
    NodeId::from_public_key(&[0xff; 32])
}

#[derive(Debug, Clone)]
enum TableOp {
    /// Peer `n` spoke to us (`ms` later than the last operation).
    Seen(u16, u16),
    /// A request to peer `n` failed.
    Failed(u16),
    /// Peer `n` is removed (its stale-ping went unanswered).
    Remove(u16),
    /// Buckets over k shed entries not heard from for `secs`.
    Shed(u16),
}

fn table_op() -> impl Strategy<Value = TableOp> {
    prop_oneof![
        6 => (0u16..600, 0u16..5000).prop_map(|(n, ms)| TableOp::Seen(n, ms)),
        1 => (0u16..600).prop_map(TableOp::Failed),
        1 => (0u16..600).prop_map(TableOp::Remove),
        1 => (0u16..120).prop_map(TableOp::Shed),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No bucket holds more than its capacity; `closest` is a brute-force sort of the entries; an entry
    /// leaves only when removed or shed while stale, never because a newcomer arrived.
    #[test]
    fn routing_table_keeps_its_bounds_and_its_live_peers(
        ops in proptest::collection::vec(table_op(), 1..400),
        k in 1usize..8,
        growth in 0u32..3,
        target in any::<u16>(),
    ) {
        let mut table = RoutingTable::new(local(), k, 2).with_bucket_growth(growth);
        let mut now = Instant::from_millis(1_000_000);
        for op in ops {
            let before: BTreeMap<NodeId, Instant> = table.iter().map(|e| (e.id, e.last_seen)).collect();
            let mut allowed_out = BTreeSet::new();
            match op {
                TableOp::Seen(n, ms) => {
                    now = now + Duration::from_millis(u64::from(ms));
                    let r = table.insert(Contact::bare(id(n)), now);
                    if let InsertResult::PingStale { stale } = r {
                        prop_assert!(table.contains(&stale.id), "the stale entry to ping is in the table");
                    }
                }
                TableOp::Failed(n) => { table.record_failure(&id(n)); }
                TableOp::Remove(n) => {
                    table.remove(&id(n), now);
                    allowed_out.insert(id(n));
                }
                TableOp::Shed(secs) => {
                    let older = Duration::from_secs(u64::from(secs));
                    for gone in table.shed_stale(now, older) {
                        let seen = before[&gone];
                        prop_assert!(seen + older <= now, "shed an entry heard from lately");
                        allowed_out.insert(gone);
                    }
                }
            }
            for peer in before.keys() {
                prop_assert!(table.contains(peer) || allowed_out.contains(peer), "an entry was evicted");
            }
            for (index, entries) in table.buckets() {
                prop_assert!(entries.len() <= table.bucket_capacity(index));
            }
        }
        let target = id(target);
        let mut all: Vec<NodeId> = table.iter().map(|e| e.id).collect();
        all.sort_by_key(|p| p.distance(&target));
        for count in [0, 1, k, 3 * k, all.len() + 5] {
            let got: Vec<NodeId> = table.closest(&target, count).into_iter().map(|c| c.id).collect();
            prop_assert_eq!(&got[..], &all[..count.min(all.len())]);
        }
    }
}

/// A made-up network for lookups: peer `n` knows the `fanout` peers after it (mod the size) and fails
/// when `dead` says so.
struct World {
    size: u16,
    fanout: u16,
    dead: BTreeSet<u16>,
    by_id: BTreeMap<NodeId, u16>,
}

impl World {
    fn new(size: u16, fanout: u16, dead: BTreeSet<u16>) -> Self {
        World { size, fanout, dead, by_id: (0..size).map(|n| (id(n), n)).collect() }
    }

    fn known_by(&self, n: u16) -> Vec<Contact> {
        (1..=self.fanout).map(|i| Contact::bare(id((n + i * 7) % self.size))).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// A lookup ends, asks no peer twice, and never returns a peer that failed or was never asked.
    #[test]
    fn lookups_end_ask_once_and_return_only_answers(
        size in 8u16..300,
        fanout in 1u16..12,
        dead in proptest::collection::btree_set(0u16..300, 0..100),
        seeds in proptest::collection::vec(0u16..300, 1..6),
        k in 1usize..10,
        alpha in 1usize..4,
        paths in 1usize..4,
        target in any::<u16>(),
        answer_order in any::<u64>(),
    ) {
        let world = World::new(size, fanout, dead);
        let params = LookupParams { k, alpha, max_candidates: 4 * k + 8, stall_after: alpha, distrust_after: 3, paths };
        let target = id(target);
        let seeds: Vec<Contact> = seeds.into_iter().map(|s| Contact::bare(id(s % size))).collect();
        let mut lookup = Lookup::new(target, seeds, params);
        let mut asked = BTreeSet::new();
        let mut failed = BTreeSet::new();
        let mut waiting: Vec<NodeId> = Vec::new();
        let mut rng = answer_order;
        for _step in 0..10_000 {
            match lookup.poll_next() {
                Next::Query(c) => {
                    prop_assert!(asked.insert(c.id), "asked {:?} twice", c.id);
                    waiting.push(c.id);
                }
                Next::Wait => {
                    prop_assert!(!waiting.is_empty(), "waits with nothing in flight");
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let peer = waiting.swap_remove((rng >> 33) as usize % waiting.len());
                    let n = world.by_id[&peer];
                    if world.dead.contains(&n) {
                        failed.insert(peer);
                        lookup.on_failure(&peer);
                    } else {
                        lookup.on_success(&peer, world.known_by(n));
                    }
                }
                Next::Finished => {
                    for c in lookup.closest() {
                        prop_assert!(!failed.contains(&c.id), "returned a failed peer");
                        prop_assert!(asked.contains(&c.id), "returned a peer never asked");
                        prop_assert_eq!(lookup.state_of(&c.id), Some(PeerState::Succeeded));
                    }
                    prop_assert!(lookup.closest().len() <= k);
                    return Ok(());
                }
            }
        }
        prop_assert!(false, "the lookup did not end in 10,000 steps");
    }
}
