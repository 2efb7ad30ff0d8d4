//! Unit tests of the record rules: signed versions only move forward, compare-and-swap, expiry that others
//! cannot shorten, gets that return the newest version and repair older holders.
#![allow(clippy::field_reassign_with_default)]

use super::tests::{drain, events, id, node_knowing, node_with, request, sends, store_ops, t};
use super::*;
use crate::message::{RequestId, Response, StoreRefusal};
use crate::record::OwnerKey;
use crate::{Config, SigningKey};

fn owner() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn version(seq: u64, value: &[u8]) -> Record {
    Record::signed(&owner(), b"profile", seq, value.to_vec()).expect("a short salt")
}

/// A peer (`from`) stores `record`; the store answers every write at once. Returns the refusal, if any,
/// and the expiry written.
fn store(node: &mut Node, now: Instant, from: u8, record: &Record, ttl_secs: u32, cas: Option<u64>) -> Answer {
    let body = Request::Store { record: Box::new(record.clone()), ttl_secs, cas };
    node.handle_message(now, Contact::bare(id(from)), Message::Request { id: RequestId(1), body });
    let mut written = None;
    let mut outs = drain(node);
    for (op, kind) in store_ops(&outs) {
        if let StoreOp::Put { expires, .. } = kind {
            written = Some(expires);
            node.handle_store_result(now, op, StoreResult::Done);
            outs.extend(drain(node));
        }
    }
    let refused = sends(&outs).into_iter().find_map(|(_, msg)| match msg {
        Message::Response { body: Response::StoreAck { refused }, .. } => Some(refused),
        _ => None,
    });
    Answer { refused: refused.expect("every store is answered"), written, outs }
}

struct Answer {
    refused: Option<StoreRefusal>,
    written: Option<Instant>,
    outs: Vec<Output>,
}

#[test]
fn signed_versions_only_move_forward() {
    let mut node = node_with(Config::default());
    assert_eq!(store(&mut node, t(0), 1, &version(5, b"five"), 3600, None).refused, None);
    assert_eq!(
        store(&mut node, t(1), 2, &version(4, b"four"), 3600, None).refused,
        Some(StoreRefusal::Stale { current: 5 })
    );
    assert_eq!(store(&mut node, t(2), 2, &version(5, b"other"), 3600, None).refused, Some(StoreRefusal::Conflict));
    assert_eq!(store(&mut node, t(3), 3, &version(5, b"five"), 3600, None).refused, None, "the same version again");
    assert_eq!(store(&mut node, t(4), 3, &version(6, b"six"), 3600, None).refused, None);
    assert_eq!(
        store(&mut node, t(5), 2, &version(5, b"five"), 3600, None).refused,
        Some(StoreRefusal::Stale { current: 6 })
    );

    // A forged value keeps the owner's signature of another one: refused, and held against the sender.
    let mut forged = version(7, b"seven");
    forged.value = b"forged".to_vec();
    let answer = store(&mut node, t(6), 9, &forged, 3600, None);
    assert_eq!(answer.refused, Some(StoreRefusal::BadSignature));
    assert!(events(&answer.outs).iter().any(|e| matches!(e, Event::PeerMisbehaved { from, .. } if *from == id(9))));

    // Nor does an unsigned record take the signed record's key.
    let squatter = Record::unchecked(version(1, b"").key, b"mine now".to_vec());
    assert_eq!(store(&mut node, t(7), 9, &squatter, 3600, None).refused, Some(StoreRefusal::Invalid));

    let s = node.stats();
    assert_eq!((s.refused_stale, s.refused_conflict, s.refused_bad_signature, s.refused_invalid), (2, 1, 1, 1));
}

#[test]
fn a_compare_and_swap_needs_the_version_held() {
    let mut node = node_with(Config::default());
    // Nothing held: nothing to compare with.
    assert_eq!(store(&mut node, t(0), 1, &version(5, b"five"), 3600, Some(4)).refused, None);
    assert_eq!(
        store(&mut node, t(1), 1, &version(6, b"six"), 3600, Some(4)).refused,
        Some(StoreRefusal::CasFailed { current: 5 })
    );
    assert_eq!(store(&mut node, t(2), 1, &version(6, b"six"), 3600, Some(5)).refused, None);
    assert_eq!(node.stats().refused_cas, 1);
}

#[test]
fn others_cannot_shorten_a_records_life() {
    let mut node = node_with(Config::default());
    let hour = 3_600_000;
    // Immutable: a store with a shorter TTL is taken, the later expiry kept; a longer one extends it.
    let content = Record::immutable(b"content".to_vec());
    assert_eq!(store(&mut node, t(0), 1, &content, 3600, None).written, Some(t(hour)));
    let short = store(&mut node, t(10), 2, &content, 1, None);
    assert_eq!((short.refused, short.written), (None, Some(t(hour))));
    assert_eq!(store(&mut node, t(20), 2, &content, 7200, None).written, Some(t(20 + 2 * hour)));

    // Signed: the same version cannot shorten it either; only the owner's newer version sets a new one.
    assert_eq!(store(&mut node, t(0), 1, &version(1, b"one"), 3600, None).written, Some(t(hour)));
    assert_eq!(store(&mut node, t(10), 2, &version(1, b"one"), 1, None).written, Some(t(hour)));
    assert_eq!(store(&mut node, t(20), 1, &version(2, b"two"), 10, None).written, Some(t(10_020)));

    // Two seconds later both are still held: the short stores changed nothing.
    node.handle_timeout(t(2_000));
    drain(&mut node);
    assert!(node.holds(&content.key) && node.holds(&version(2, b"two").key));
}

#[test]
fn an_older_local_put_is_refused_with_the_version_held() {
    let mut node = node_with(Config::default());
    store(&mut node, t(0), 1, &version(5, b"five"), 3600, None);
    node.put(t(1), version(3, b"three"));
    let outs = drain(&mut node);
    assert!(store_ops(&outs).is_empty(), "nothing written");
    let refusal = events(&outs).into_iter().find_map(|e| match e {
        Event::PutFinished { refusal, acks: 0, .. } => Some(refusal),
        _ => None,
    });
    assert_eq!(refusal, Some(Some(StoreRefusal::Stale { current: 5 })));
    node.put_cas(t(2), version(6, b"six"), Some(4));
    let refusal = events(&drain(&mut node)).into_iter().find_map(|e| match e {
        Event::PutFinished { refusal, .. } => Some(refusal),
        _ => None,
    });
    assert_eq!(refusal, Some(Some(StoreRefusal::CasFailed { current: 5 })));
}

#[test]
fn a_put_reports_a_holders_failed_compare_and_swap() {
    let mut node = node_knowing(Config::default(), &[1]);
    let q = node.put_cas(t(0), version(8, b"eight"), Some(6));
    let mut outs = drain(&mut node);
    node.handle_store_result(t(0), store_ops(&outs)[0].0, StoreResult::Done);
    outs.extend(drain(&mut node));
    let mut finished = None;
    for round in 0..4 {
        for (to, msg) in sends(&outs) {
            let (rid, body) = request(&msg);
            let reply = match body {
                Request::FindNode { .. } => Response::Nodes { closer: vec![] },
                Request::Store { cas, .. } => {
                    assert_eq!(*cas, Some(6), "the compare-and-swap travels with the store");
                    Response::StoreAck { refused: Some(StoreRefusal::CasFailed { current: 7 }) }
                }
                other => panic!("unexpected {other:?}"),
            };
            node.handle_message(t(10 + round), Contact::bare(to), Message::Response { id: rid, body: reply });
        }
        outs = drain(&mut node);
        finished = finished.or(events(&outs).into_iter().find_map(|e| match e {
            Event::PutFinished { query, acks, refusal, .. } if query == q => Some((acks, refusal)),
            _ => None,
        }));
    }
    assert_eq!(finished, Some((0, Some(StoreRefusal::CasFailed { current: 7 }))));
}

#[test]
fn a_get_returns_the_newest_version_and_repairs_older_holders() {
    let mut cfg = Config::default();
    cfg.alpha = 4;
    let mut node = node_knowing(cfg, &[1, 2, 3, 4]);
    let key = version(0, b"").key;
    let q = node.get(t(0), key);
    let answers = |peer: NodeId| {
        let mut forged = version(9, b"nine");
        forged.value = b"forged nine".to_vec();
        match peer {
            p if p == id(1) => Some(version(1, b"one")),
            p if p == id(2) => Some(version(3, b"three")),
            p if p == id(3) => Some(forged),
            _ => None,
        }
    };
    let mut outs = drain(&mut node);
    let mut repaired = Vec::new();
    let mut found = None;
    for round in 0..6 {
        for (to, msg) in sends(&outs) {
            let (rid, body) = request(&msg);
            match body {
                Request::FindValue { .. } => {
                    let reply = match answers(to) {
                        Some(record) => Response::Value { record: Box::new(record), ttl_secs: 600, closer: vec![] },
                        None => Response::Nodes { closer: vec![] },
                    };
                    node.handle_message(t(10 + round), Contact::bare(to), Message::Response { id: rid, body: reply });
                }
                Request::Store { record, ttl_secs, .. } => repaired.push((to, record.seq(), *ttl_secs)),
                other => panic!("unexpected {other:?}"),
            }
        }
        outs = drain(&mut node);
        found = found.or(events(&outs).into_iter().find_map(|e| match e {
            Event::GetFinished { query, record, .. } if query == q => Some(record),
            _ => None,
        }));
    }
    let found = found.expect("the get finished").expect("a value was found");
    assert_eq!((found.seq(), found.value.as_slice()), (Some(3), &b"three"[..]), "the newest valid version");
    assert_eq!(found.owner(), Some(OwnerKey::of(&owner())));
    // The holder of version 1 and the closest peer without it (4) get version 3; the forger gets nothing.
    repaired.sort_by_key(|(to, ..)| *to);
    let mut expect = vec![(id(1), Some(3), 600), (id(4), Some(3), 600)];
    expect.sort_by_key(|(to, ..)| *to);
    assert_eq!(repaired, expect);
    assert_eq!(node.stats().bad_values, 1);
}

#[test]
fn a_restored_record_is_read_before_a_peer_replaces_it() {
    let mut node = node_with(Config::default());
    let held = version(5, b"five");
    node.restore_record(t(0), held.key, t(3_600_000), held.value.len(), false);
    drain(&mut node);
    // The kind of what is held is unknown: the store waits, and the record is read.
    let answer = store(&mut node, t(1), 1, &version(4, b"four"), 3600, None);
    assert_eq!(answer.refused, Some(StoreRefusal::Busy));
    let reads = store_ops(&answer.outs);
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].1, StoreOp::Get { key: held.key });
    // While the read is under way, another store waits without a second read.
    let again = store(&mut node, t(1), 1, &version(4, b"four"), 3600, None);
    assert_eq!((again.refused, store_ops(&again.outs).len()), (Some(StoreRefusal::Busy), 0));
    node.handle_store_result(t(2), reads[0].0, StoreResult::Value(Some(held)));
    drain(&mut node);
    assert_eq!(
        store(&mut node, t(3), 1, &version(4, b"four"), 3600, None).refused,
        Some(StoreRefusal::Stale { current: 5 })
    );
    assert_eq!(store(&mut node, t(4), 1, &version(6, b"six"), 3600, None).refused, None);
}

#[test]
fn a_write_under_way_holds_off_another_of_the_same_key() {
    let mut node = node_with(Config::default());
    let body = Request::Store { record: Box::new(version(1, b"one")), ttl_secs: 60, cas: None };
    node.handle_message(t(0), Contact::bare(id(1)), Message::Request { id: RequestId(1), body });
    let first = store_ops(&drain(&mut node));
    assert_eq!(first.len(), 1, "the first write goes to the store");
    assert_eq!(store(&mut node, t(0), 2, &version(2, b"two"), 60, None).refused, Some(StoreRefusal::Busy));
    node.handle_store_result(t(1), first[0].0, StoreResult::Done);
    drain(&mut node);
    assert_eq!(store(&mut node, t(2), 2, &version(2, b"two"), 60, None).refused, None);
}

#[test]
fn a_flooding_peer_makes_way_and_our_own_records_stay() {
    let mut cfg = Config::default();
    cfg.max_records = 4;
    let mut node = node_with(cfg);
    // Two records of our own: not charged against the room for others.
    let own: Vec<Record> = (0..2u8).map(|n| Record::immutable(vec![n; 8])).collect();
    for r in &own {
        node.put(t(0), r.clone());
        for (op, kind) in store_ops(&drain(&mut node)) {
            assert!(matches!(kind, StoreOp::Put { .. }));
            node.handle_store_result(t(0), op, StoreResult::Done);
        }
    }
    // Peer 1 may fill the idle room, with records expiring one after another.
    let flood: Vec<Record> = (10..15u8).map(|n| Record::immutable(vec![n; 8])).collect();
    for (n, r) in flood.iter().take(4).enumerate() {
        assert_eq!(store(&mut node, t(1), 1, r, 100 + n as u32, None).refused, None);
    }
    // Full, and peer 1 holds it all: its next record is refused.
    assert_eq!(store(&mut node, t(2), 1, &flood[4], 3600, None).refused, Some(StoreRefusal::Quota));
    // Peer 2 is within its share: peer 1's record expiring first makes way.
    let answer = store(&mut node, t(3), 2, &Record::immutable(b"fresh".to_vec()), 3600, None);
    assert_eq!(answer.refused, None);
    let removed: Vec<StoreOp> = store_ops(&answer.outs).into_iter().map(|(_, op)| op).collect();
    assert!(removed.contains(&StoreOp::Remove { key: flood[0].key }), "{removed:?}");
    assert!(!node.holds(&flood[0].key) && node.holds(&flood[1].key));
    assert!(own.iter().all(|r| node.holds(&r.key)), "our own records stay");
    assert_eq!((node.stats().evicted, node.stats().refused_quota), (1, 1));
}

#[test]
fn an_owner_cannot_fill_a_node_through_many_peers() {
    let mut cfg = Config::default();
    cfg.max_owner_records = 2;
    let mut node = node_with(cfg);
    let signed = |salt: &[u8]| Record::signed(&owner(), salt, 1, b"v".to_vec()).expect("a short salt");
    assert_eq!(store(&mut node, t(0), 1, &signed(b"a"), 60, None).refused, None);
    assert_eq!(store(&mut node, t(0), 2, &signed(b"b"), 60, None).refused, None);
    assert_eq!(store(&mut node, t(0), 3, &signed(b"c"), 60, None).refused, Some(StoreRefusal::Quota));
    // A new version of a record held is no new record.
    let newer = Record::signed(&owner(), b"a", 2, b"w".to_vec()).expect("a short salt");
    assert_eq!(store(&mut node, t(1), 3, &newer, 60, None).refused, None);
}

#[test]
fn a_signed_get_goes_on_through_the_holders_contacts() {
    // We know only peer 1, which holds version 1 and knows peer 2, which holds version 2.
    let mut node = node_knowing(Config::default(), &[1]);
    let key = version(0, b"").key;
    let q = node.get(t(0), key);
    let mut outs = drain(&mut node);
    let mut found = None;
    for round in 0..6 {
        for (to, msg) in sends(&outs) {
            let (rid, body) = request(&msg);
            let reply = match body {
                Request::FindValue { .. } if to == id(1) => Response::Value {
                    record: Box::new(version(1, b"one")),
                    ttl_secs: 60,
                    closer: vec![Contact::bare(id(2))],
                },
                Request::FindValue { .. } => {
                    Response::Value { record: Box::new(version(2, b"two")), ttl_secs: 60, closer: vec![] }
                }
                Request::Store { .. } => continue,
                other => panic!("unexpected {other:?}"),
            };
            node.handle_message(t(10 + round), Contact::bare(to), Message::Response { id: rid, body: reply });
        }
        outs = drain(&mut node);
        found = found.or(events(&outs).into_iter().find_map(|e| match e {
            Event::GetFinished { query, record, .. } if query == q => Some(record),
            _ => None,
        }));
    }
    assert_eq!(found.expect("the get finished").and_then(|r| r.seq()), Some(2));
}

#[test]
fn a_put_whose_own_write_fails_says_so() {
    let mut node = node_with(Config::default());
    node.put(t(0), Record::immutable(b"v".to_vec()));
    let ops = store_ops(&drain(&mut node));
    node.handle_store_result(t(0), ops[0].0, StoreResult::Failed("disk full".into()));
    let refusal = events(&drain(&mut node)).into_iter().find_map(|e| match e {
        Event::PutFinished { refusal, .. } => Some(refusal),
        _ => None,
    });
    assert_eq!(refusal, Some(Some(StoreRefusal::StorageFailed)));
}
