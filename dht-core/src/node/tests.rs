//! Unit tests of the node, driving it as its peers and store would.
// `Config` is `#[non_exhaustive]`: code outside the crate must start from `default()` and set fields, and the
// tests do the same.
#![allow(clippy::field_reassign_with_default)]

use super::harness::Pair;
use super::*;
use crate::message::{RequestId, Response, StoreRefusal};
use crate::Config;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

pub(super) fn id(n: u8) -> NodeId {
    NodeId::from_public_key(&[n; 32])
}

pub(super) fn t(ms: u64) -> Instant {
    Instant::from_millis(1_000_000 + ms)
}

pub(super) fn node_with(config: Config) -> Node {
    Node::new(config.validate().expect("a valid test config"), Contact::bare(id(0)), 7, t(0))
}

/// A node with `cfg` that knows the peers `ids`, its outputs so far drained.
pub(super) fn node_knowing(cfg: Config, ids: &[u8]) -> Node {
    let mut node = node_with(cfg);
    for &n in ids {
        node.add_contact(t(0), Contact::bare(id(n)));
    }
    drain(&mut node);
    node
}

pub(super) fn drain(node: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

/// Runs the node's timers due up to `deadline`, never answering a request; returns what it output.
pub(super) fn let_time_out(node: &mut Node, deadline: Instant) -> Vec<Output> {
    let mut outs = Vec::new();
    while let Some(at) = node.poll_timeout().filter(|at| *at <= deadline) {
        node.handle_timeout(at);
        outs.extend(drain(node));
    }
    outs
}

pub(super) fn sends(outs: &[Output]) -> Vec<(NodeId, Message)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((to.id, msg.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn request(msg: &Message) -> (RequestId, &Request) {
    match msg {
        Message::Request { id, body } => (*id, body),
        other => panic!("expected a request, got {other:?}"),
    }
}

pub(super) fn store_ops(outs: &[Output]) -> Vec<(StoreOpId, StoreOp)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Store { id, op } => Some((*id, op.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn events(outs: &[Output]) -> Vec<Event> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// An immutable record of `len` bytes `n`.
pub(super) fn rec(n: u8, len: usize) -> Record {
    Record::immutable(vec![n; len])
}

fn store_req(n: u8, len: usize, ttl_secs: u32) -> Message {
    let record = Box::new(rec(n, len));
    Message::Request { id: RequestId(u64::from(n)), body: Request::Store { record, ttl_secs, cas: None } }
}

#[test]
fn find_node_walks_closer_and_reports_the_closest() {
    let mut cfg = Config::default();
    cfg.k = 2;
    cfg.alpha = 1;
    let mut node = node_with(cfg);
    node.add_contact(t(0), Contact::bare(id(1)));
    drain(&mut node);
    let target = id(9);
    let q = node.find_node(t(0), target);
    let out = sends(&drain(&mut node));
    assert_eq!(out.len(), 1);
    let (rid, body) = request(&out[0].1);
    assert_eq!(body, &Request::FindNode { target });
    // Peer 1 knows 2 and 3.
    let reply = Response::Nodes { closer: vec![Contact::bare(id(2)), Contact::bare(id(3)), Contact::bare(id(0))] };
    node.handle_message(t(50), Contact::bare(id(1)), Message::Response { id: rid, body: reply });
    let mut asked = Vec::new();
    let mut outs = drain(&mut node);
    // Answer every request with no further contacts until the lookup ends.
    for round in 0..10 {
        let reqs = sends(&outs);
        if reqs.is_empty() {
            break;
        }
        outs.clear();
        for (to, msg) in reqs {
            asked.push(to);
            let (rid, _) = request(&msg);
            let reply = Message::Response { id: rid, body: Response::Nodes { closer: vec![] } };
            node.handle_message(t(100 + round), Contact::bare(to), reply);
            outs.extend(drain(&mut node));
        }
    }
    assert!(!asked.contains(&id(0)), "never asks itself");
    let finished = events(&outs).into_iter().find_map(|e| match e {
        Event::LookupFinished { query, closest, stats, .. } => Some((query, closest, stats)),
        _ => None,
    });
    let (query, closest, stats) = finished.expect("lookup finished");
    assert_eq!(query, q);
    let mut expect = [id(1), id(2), id(3)];
    expect.sort_by_key(|i| i.distance(&target));
    assert_eq!(closest.iter().map(|c| c.id).collect::<Vec<_>>(), expect[..2]);
    assert_eq!(stats.hops, if expect[0] == id(1) { 1 } else { 2 });
    assert!(node.routing_table().contains(&id(2)), "answering peers enter the table");
}

#[test]
fn inbound_store_is_acked_only_after_the_store_confirms() {
    let mut node = node_with(Config::default());
    node.handle_message(t(0), Contact::bare(id(1)), store_req(5, 10, 60));
    let outs = drain(&mut node);
    assert!(sends(&outs).is_empty(), "no ack before the store answers");
    let ops = store_ops(&outs);
    assert_eq!(ops.len(), 1);
    let (op, StoreOp::Put { expires, .. }) = &ops[0] else { panic!("expected a put") };
    assert_eq!(*expires, t(60_000));
    node.handle_store_result(t(1), *op, StoreResult::Done);
    let outs = drain(&mut node);
    let acks = sends(&outs);
    assert_eq!(acks, vec![(id(1), Message::Response { id: RequestId(5), body: Response::StoreAck { refused: None } })]);
    assert!(node.holds(&rec(5, 10).key));
    assert_eq!(node.stored_bytes(), 10);
    assert!(events(&outs).contains(&Event::RecordStored { key: rec(5, 10).key, from: id(1) }));
}

#[test]
fn refusals_are_answered_and_counted() {
    let mut cfg = Config::default();
    cfg.max_record_size = 100;
    cfg.max_records = 1;
    let mut node = node_with(cfg);
    let refused = |node: &mut Node| {
        let outs = drain(node);
        match sends(&outs).pop() {
            Some((_, Message::Response { body: Response::StoreAck { refused }, .. })) => refused,
            other => panic!("expected an ack, got {other:?}"),
        }
    };
    node.handle_message(t(0), Contact::bare(id(1)), store_req(1, 101, 60));
    assert_eq!(refused(&mut node), Some(StoreRefusal::TooLarge));
    node.handle_message(t(0), Contact::bare(id(1)), store_req(2, 1, 0));
    assert_eq!(refused(&mut node), Some(StoreRefusal::BadTtl));
    node.handle_message(t(0), Contact::bare(id(1)), store_req(3, 1, u32::MAX));
    assert_eq!(refused(&mut node), Some(StoreRefusal::BadTtl));
    node.handle_message(t(0), Contact::bare(id(1)), store_req(4, 1, 60));
    let (op, _) = store_ops(&drain(&mut node))[0].clone();
    node.handle_store_result(t(0), op, StoreResult::Done);
    drain(&mut node);
    // Full: the only source holds its whole share.
    node.handle_message(t(0), Contact::bare(id(1)), store_req(6, 1, 60));
    assert_eq!(refused(&mut node), Some(StoreRefusal::Quota));
    let s = node.stats();
    assert_eq!((s.refused_too_large, s.refused_bad_ttl, s.refused_quota), (1, 2, 1));
    // A failed store is reported to the peer, not acknowledged.
    let mut node = node_with(Config::default());
    node.handle_message(t(0), Contact::bare(id(1)), store_req(7, 1, 60));
    let (op, _) = store_ops(&drain(&mut node))[0].clone();
    node.handle_store_result(t(0), op, StoreResult::Failed("disk full".into()));
    assert_eq!(refused(&mut node), Some(StoreRefusal::StorageFailed));
    assert!(!node.holds(&rec(7, 1).key));
}

#[test]
fn stray_and_hostile_responses_are_dropped_and_counted() {
    let mut cfg = Config::default();
    cfg.max_contacts_per_reply = 2;
    let mut node = node_with(cfg);
    node.add_contact(t(0), Contact::bare(id(1)));
    drain(&mut node);
    // No such request.
    node.handle_message(t(0), Contact::bare(id(1)), Message::Response { id: RequestId(42), body: Response::Pong });
    node.find_node(t(0), id(9));
    let (to, msg) = sends(&drain(&mut node)).remove(0);
    let (rid, _) = request(&msg);
    // Right id, wrong peer.
    node.handle_message(t(1), Contact::bare(id(2)), Message::Response { id: rid, body: Response::Pong });
    assert_eq!(node.stats().unexpected_responses, 2);
    // Too many contacts: refused whole, the lookup counts a failure and ends.
    let closer = (10..13).map(|n| Contact::bare(id(n))).collect();
    node.handle_message(t(2), Contact::bare(to), Message::Response { id: rid, body: Response::Nodes { closer } });
    let outs = drain(&mut node);
    assert_eq!(node.stats().oversized_replies, 1);
    assert!(sends(&outs).is_empty(), "no contact of the refused answer is asked");
    let finished = events(&outs).into_iter().find_map(|e| match e {
        Event::LookupFinished { stats, closest, .. } => Some((stats, closest)),
        _ => None,
    });
    let (stats, closest) = finished.expect("lookup over");
    assert_eq!(stats.failures, 1);
    assert!(closest.is_empty());
    // Messages claiming our own id are refused.
    node.handle_message(t(3), Contact::bare(id(0)), Message::Request { id: RequestId(1), body: Request::Ping });
    assert!(sends(&drain(&mut node)).is_empty());
}

#[test]
fn silent_peers_time_out_and_leave_the_table() {
    let mut cfg = Config::default();
    cfg.max_failures = 2;
    cfg.request_retries = 0;
    let mut node = node_knowing(cfg.clone(), &[1]);
    for round in 0..2u64 {
        let now = t(round * 10_000);
        node.find_node(now, id(9));
        assert_eq!(sends(&drain(&mut node)).len(), 1);
        let deadline = node.poll_timeout().expect("a request deadline");
        assert_eq!(deadline, now + cfg.request_timeout);
        node.handle_timeout(deadline - core::time::Duration::from_millis(1));
        assert!(node.routing_table().contains(&id(1)), "not before the deadline");
        node.handle_timeout(deadline);
        let outs = drain(&mut node);
        assert!(events(&outs).iter().any(|e| matches!(e, Event::LookupFinished { .. })));
    }
    assert!(!node.routing_table().contains(&id(1)));
    assert_eq!(node.stats().timeouts, 2);
}

#[test]
fn full_bucket_pings_the_stale_entry_and_replaces_it_if_silent() {
    let mut cfg = Config::default();
    cfg.k = 1;
    cfg.ping_after = core::time::Duration::ZERO;
    let mut node = node_with(cfg);
    // Find two peers in the same bucket.
    let local = id(0);
    let mut same: Vec<NodeId> = Vec::new();
    for n in 1..=255u8 {
        if local.distance(&id(n)).bucket_index() == Some(0) {
            same.push(id(n));
        }
        if same.len() == 2 {
            break;
        }
    }
    let (old, new) = (same[0], same[1]);
    node.add_contact(t(0), Contact::bare(old));
    drain(&mut node);
    node.handle_message(t(10), Contact::bare(new), Message::Request { id: RequestId(1), body: Request::Ping });
    let out = sends(&drain(&mut node));
    assert!(out.iter().any(|(to, m)| *to == old && matches!(m, Message::Request { body: Request::Ping, .. })));
    assert!(out.iter().any(|(to, m)| *to == new && matches!(m, Message::Response { body: Response::Pong, .. })));
    assert!(node.routing_table().contains(&old) && !node.routing_table().contains(&new));
    // The ping goes twice; silent both times, the stale entry makes way.
    let mut outs = Vec::new();
    for _ in 0..2 {
        let deadline = node.poll_timeout().unwrap();
        assert!(node.routing_table().contains(&old), "not before the second ping's deadline");
        node.handle_timeout(deadline);
        outs = drain(&mut node);
    }
    assert!(events(&outs).contains(&Event::PeerRemoved { id: old }));
    assert!(node.routing_table().contains(&new), "the waiting contact took the slot");
}

#[test]
fn find_value_is_served_from_the_store_and_records_expire() {
    let mut node = node_with(Config::default());
    node.handle_message(t(0), Contact::bare(id(1)), store_req(3, 4, 10));
    let (op, _) = store_ops(&drain(&mut node))[0].clone();
    node.handle_store_result(t(0), op, StoreResult::Done);
    drain(&mut node);
    let key = rec(3, 4).key;
    node.handle_message(
        t(1_000),
        Contact::bare(id(2)),
        Message::Request { id: RequestId(8), body: Request::FindValue { key } },
    );
    let ops = store_ops(&drain(&mut node));
    assert_eq!(ops[0].1, StoreOp::Get { key });
    node.handle_store_result(t(1_000), ops[0].0, StoreResult::Value(Some(rec(3, 4))));
    let out = sends(&drain(&mut node));
    let expect = Response::Value { record: Box::new(rec(3, 4)), ttl_secs: 9, closer: vec![] };
    assert_eq!(out, vec![(id(2), Message::Response { id: RequestId(8), body: expect })]);
    // Expiry at 10 s removes it.
    assert!(node.poll_timeout().unwrap() <= t(10_000));
    node.handle_timeout(t(10_000));
    let ops = store_ops(&drain(&mut node));
    assert!(ops.iter().any(|(_, op)| *op == StoreOp::Remove { key }));
    assert!(!node.holds(&key));
    assert_eq!(node.stats().expired, 1);
}

#[test]
fn put_stores_locally_and_republishes() {
    let mut cfg = Config::default();
    cfg.republish_interval = core::time::Duration::from_secs(60);
    let mut node = node_with(cfg);
    let record = Record::immutable(b"v".to_vec());
    node.put(t(0), record.clone());
    let outs = drain(&mut node);
    let ops = store_ops(&outs);
    assert!(matches!(&ops[0].1, StoreOp::Put { record: r, .. } if *r == record));
    // No peers: the put ends with zero acks, but only once its own write is durable.
    assert!(!events(&outs).iter().any(|e| matches!(e, Event::PutFinished { .. })), "reported before its write");
    node.handle_store_result(t(0), ops[0].0, StoreResult::Done);
    let finished = events(&drain(&mut node));
    assert!(finished.iter().any(|e| matches!(e, Event::PutFinished { acks: 0, attempted: 0, refusal: None, .. })));
    // A local get answers from the store.
    let q = node.get(t(1), record.key);
    let ops = store_ops(&drain(&mut node));
    node.handle_store_result(t(1), ops[0].0, StoreResult::Value(Some(record.clone())));
    let got = events(&drain(&mut node)).into_iter().find_map(|e| match e {
        Event::GetFinished { query, record, .. } if query == q => Some(record),
        _ => None,
    });
    assert_eq!(got, Some(Some(record.clone())));
    // Republish: reads the value back, then puts it again.
    node.handle_timeout(t(60_000));
    let ops = store_ops(&drain(&mut node));
    assert_eq!(ops[0].1, StoreOp::Get { key: record.key });
    node.add_contact(t(60_000), Contact::bare(id(4)));
    drain(&mut node);
    node.handle_store_result(t(60_000), ops[0].0, StoreResult::Value(Some(record.clone())));
    let out = sends(&drain(&mut node));
    assert!(matches!(request(&out[0].1).1, Request::FindNode { .. }), "republish starts with a lookup");
}

#[test]
fn oversized_put_finishes_with_zero_acks() {
    let mut cfg = Config::default();
    cfg.max_record_size = 8;
    let mut node = node_with(cfg);
    node.put(t(0), Record::immutable(vec![0; 9]));
    let outs = drain(&mut node);
    assert!(store_ops(&outs).is_empty());
    assert!(events(&outs).iter().any(|e| matches!(e, Event::PutFinished { acks: 0, .. })));
}

#[test]
fn random_bucket_ids_land_in_their_bucket() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let local = id(0);
    for index in [0usize, 1, 7, 8, 9, 100, 255] {
        for _ in 0..20 {
            let r = random_id_in_bucket(&mut rng, &local, index);
            assert_eq!(local.distance(&r).bucket_index(), Some(index));
        }
    }
}

#[test]
fn a_timed_out_lookup_request_is_sent_once_more() {
    let mut cfg = Config::default();
    cfg.request_retries = 1;
    let mut node = node_knowing(cfg.clone(), &[1]);
    node.find_node(t(0), id(9));
    let (_, first) = sends(&drain(&mut node)).remove(0);
    let deadline = node.poll_timeout().unwrap();
    node.handle_timeout(deadline);
    let again = sends(&drain(&mut node));
    assert_eq!(again.len(), 1, "resent");
    let (to, second) = &again[0];
    assert_eq!(*to, id(1));
    let (rid1, body1) = request(&first);
    let (rid2, body2) = request(second);
    assert_eq!(body1, body2);
    assert_ne!(rid1, rid2, "a fresh request id");
    // The answer to the retry completes the lookup; the peer stays.
    node.handle_message(
        t(1_500),
        Contact::bare(id(1)),
        Message::Response { id: rid2, body: Response::Nodes { closer: vec![] } },
    );
    let outs = drain(&mut node);
    assert!(events(&outs).iter().any(|e| matches!(e, Event::LookupFinished { stats, .. } if stats.failures == 0)));
    assert!(node.routing_table().contains(&id(1)));
    assert_eq!(node.stats().timeouts, 1);
}

#[test]
fn a_late_answer_to_a_resent_request_counts_and_ends_both_attempts() {
    let mut cfg = Config::default();
    cfg.request_retries = 1;
    let mut node = node_knowing(cfg.clone(), &[1]);
    // Teach the node a 10 ms round trip, so that its adaptive timeout is the floor (200 ms).
    node.find_node(t(0), id(9));
    let (_, warm) = sends(&drain(&mut node)).remove(0);
    let (rid, _) = request(&warm);
    node.handle_message(
        t(10),
        Contact::bare(id(1)),
        Message::Response { id: rid, body: Response::Nodes { closer: vec![] } },
    );
    drain(&mut node);
    node.find_node(t(1_000), id(7));
    let (_, first) = sends(&drain(&mut node)).remove(0);
    let deadline = node.poll_timeout().unwrap();
    assert!(deadline < t(2_000), "the adaptive timeout, not the full one");
    node.handle_timeout(deadline);
    assert_eq!(sends(&drain(&mut node)).len(), 1, "resent");
    // The first attempt answers, late: the lookup finishes with the peer, and the resend is forgotten.
    let (rid1, _) = request(&first);
    node.handle_message(
        t(1_400),
        Contact::bare(id(1)),
        Message::Response { id: rid1, body: Response::Nodes { closer: vec![] } },
    );
    let outs = drain(&mut node);
    assert!(events(&outs).iter().any(|e| matches!(e, Event::LookupFinished { stats, .. } if stats.failures == 0)));
    // Nothing is left waiting: no deadline fires a failure for the peer later.
    while let Some(at) = node.poll_timeout() {
        if at > t(10_000) {
            break;
        }
        node.handle_timeout(at);
        drain(&mut node);
    }
    assert_eq!(node.stats().timeouts, 1, "only the first attempt's adaptive timeout");
    assert!(node.routing_table().contains(&id(1)));
    assert_eq!(node.routing_table().get(&id(1)).map(|e| e.failures), Some(0));
}

#[test]
fn a_slow_peer_is_passed_over_but_its_late_answer_counts() {
    let mut cfg = Config::default();
    cfg.k = 2;
    cfg.alpha = 1;
    cfg.request_retries = 0;
    let mut node = node_knowing(cfg.clone(), &[1, 2]);
    let answer = |node: &mut Node, at: u64, to: NodeId, msg: &Message| {
        let (rid, _) = request(msg);
        let reply = Message::Response { id: rid, body: Response::Nodes { closer: vec![] } };
        node.handle_message(t(at), Contact::bare(to), reply);
        drain(node)
    };
    // A first lookup answered in 10 ms teaches the node the round trip: the adaptive timeout is its floor.
    node.find_node(t(0), id(9));
    let mut outs = drain(&mut node);
    while let Some((to, msg)) = sends(&outs).pop() {
        outs = answer(&mut node, 10, to, &msg);
    }
    let start = 1_000;
    node.find_node(t(start), id(7));
    let (slow, first) = sends(&drain(&mut node)).remove(0);
    let soft = node.poll_timeout().expect("a deadline");
    assert_eq!(soft, t(start) + cfg.min_request_timeout);
    node.handle_timeout(soft);
    let (other, second) = sends(&drain(&mut node)).remove(0);
    assert_ne!(other, slow, "the lookup went on without the slow peer");
    assert_eq!(node.stats().slow_requests, 1);
    // The slow peer answers after its adaptive timeout but before the full one: it counts.
    let outs = answer(&mut node, start + 300, slow, &first);
    assert!(events(&outs).is_empty(), "still waiting on the second peer");
    let outs = answer(&mut node, start + 310, other, &second);
    let (closest, stats) = events(&outs)
        .into_iter()
        .find_map(|e| match e {
            Event::LookupFinished { closest, stats, .. } => Some((closest, stats)),
            _ => None,
        })
        .expect("lookup finished");
    assert_eq!(closest.len(), 2, "both peers in the result");
    assert_eq!(stats.failures, 0);
    assert_eq!((node.stats().late_answers, node.stats().timeouts), (1, 0));
    node.handle_timeout(t(start + 5_000));
    assert!(node.routing_table().get(&slow).is_some_and(|e| e.failures == 0), "no failure recorded");
}

/// A node with k = 2, α = 1 and one retry that knows peers 1 and 2 and has learnt a 10 ms round trip
/// (its adaptive timeout is then the floor).
fn node_with_retries() -> (Node, Config) {
    small_node_with_retries(1)
}

/// The same with `retries` retries.
fn small_node_with_retries(retries: u8) -> (Node, Config) {
    let mut cfg = Config::default();
    cfg.k = 2;
    cfg.alpha = 1;
    cfg.request_retries = retries;
    let mut node = node_knowing(cfg.clone(), &[1, 2]);
    node.find_node(t(0), id(9));
    let mut outs = drain(&mut node);
    while let Some((to, msg)) = sends(&outs).pop() {
        let (rid, _) = request(&msg);
        let reply = Message::Response { id: rid, body: Response::Nodes { closer: vec![] } };
        node.handle_message(t(10), Contact::bare(to), reply);
        outs = drain(&mut node);
    }
    (node, cfg)
}

fn answer(node: &mut Node, at: u64, to: NodeId, msg: &Message) -> Vec<Output> {
    let (rid, _) = request(msg);
    let reply = Message::Response { id: rid, body: Response::Nodes { closer: vec![] } };
    node.handle_message(t(at), Contact::bare(to), reply);
    drain(node)
}

fn finished(outs: &[Output]) -> Option<Vec<NodeId>> {
    events(outs).into_iter().find_map(|e| match e {
        Event::LookupFinished { closest, .. } => Some(closest.iter().map(|c| c.id).collect()),
        _ => None,
    })
}

#[test]
fn a_resent_peer_among_the_closest_holds_the_lookup_until_its_resend_answers() {
    let (mut node, cfg) = node_with_retries();
    let start = 1_000;
    node.find_node(t(start), id(7));
    let (slow, _lost) = sends(&drain(&mut node)).remove(0);
    node.handle_timeout(t(start) + cfg.min_request_timeout);
    let outs = sends(&drain(&mut node));
    let resend = outs.iter().find(|(to, _)| *to == slow).expect("sent again").1.clone();
    let (other, msg) = outs.into_iter().find(|(to, _)| *to != slow).expect("the lookup went on");
    // The other peer answers: the lookup still waits, since the resend may bring the slow one in.
    assert_eq!(finished(&answer(&mut node, start + 250, other, &msg)), None, "held for the resend");
    let got = finished(&answer(&mut node, start + 260, slow, &resend)).expect("finished on the resend's answer");
    assert_eq!(got.len(), 2, "both peers in the result");
    assert!(got.contains(&slow));
}

#[test]
fn once_a_resend_goes_unanswered_lookups_stop_holding_for_resends() {
    let (mut node, cfg) = node_with_retries();
    let start = 1_000;
    node.find_node(t(start), id(7));
    let (slow, _) = sends(&drain(&mut node)).remove(0);
    node.handle_timeout(t(start) + cfg.min_request_timeout);
    let (other, msg) = sends(&drain(&mut node)).into_iter().find(|(to, _)| *to != slow).unwrap();
    assert_eq!(finished(&answer(&mut node, start + 250, other, &msg)), None, "held for the resend");
    // The resend goes unanswered too: the lookup ends without the peer.
    let mut got = None;
    while got.is_none() {
        let at = node.poll_timeout().expect("a deadline");
        node.handle_timeout(at);
        got = finished(&drain(&mut node));
    }
    assert_eq!(got.unwrap(), vec![other]);
    // The next lookup meets the same silent peer: it ends as soon as the other answers.
    let start = 5_000;
    node.find_node(t(start), id(6));
    let first = sends(&drain(&mut node));
    node.handle_timeout(t(start) + cfg.min_request_timeout);
    let outs: Vec<_> = first.into_iter().chain(sends(&drain(&mut node))).filter(|(to, _)| *to == other).collect();
    let (_, msg) = outs.last().expect("the other peer asked").clone();
    let got = finished(&answer(&mut node, start + 250, other, &msg)).expect("not held");
    assert_eq!(got, vec![other]);
}

#[test]
fn a_slow_peer_that_never_answers_fails_at_the_full_timeout() {
    let mut cfg = Config::default();
    cfg.max_failures = 1;
    let mut node = node_knowing(cfg.clone(), &[1, 2]);
    node.find_node(t(0), id(9));
    let reqs = sends(&drain(&mut node));
    // Only one peer answers, at once: the node now has a round trip, and the silent peer a soft deadline.
    let (to, msg) = &reqs[0];
    let (rid, _) = request(msg);
    let reply = Message::Response { id: rid, body: Response::Nodes { closer: vec![] } };
    node.handle_message(t(5), Contact::bare(*to), reply);
    drain(&mut node);
    let silent = reqs[1].0;
    node.find_node(t(100), id(8));
    let mut outs = drain(&mut node);
    for (to, msg) in sends(&outs) {
        if to != silent {
            let (rid, _) = request(&msg);
            let reply = Message::Response { id: rid, body: Response::Nodes { closer: vec![] } };
            node.handle_message(t(105), Contact::bare(to), reply);
            outs.extend(drain(&mut node));
        }
    }
    node.handle_timeout(t(100) + cfg.min_request_timeout);
    assert!(node.routing_table().contains(&silent), "slow is not failed");
    node.handle_timeout(t(100) + cfg.request_timeout);
    assert!(!node.routing_table().contains(&silent), "failed at the full timeout");
    assert!(node.stats().timeouts >= 1);
}

#[test]
fn immutable_records_refuse_forgeries() {
    let mut cfg = Config::default();
    cfg.alpha = 1;
    let mut node = node_with(cfg);
    let value = b"the real value".to_vec();
    let key = Key::from_name(&value);
    // A store whose key is not its value's hash is refused.
    let forged = Record::unchecked(key, b"forged".to_vec());
    node.handle_message(
        t(0),
        Contact::bare(id(1)),
        Message::Request {
            id: RequestId(1),
            body: Request::Store { record: Box::new(forged.clone()), ttl_secs: 60, cas: None },
        },
    );
    let acks: Vec<_> = sends(&drain(&mut node));
    assert!(matches!(
        &acks[..],
        [(_, Message::Response { body: Response::StoreAck { refused: Some(StoreRefusal::Invalid) }, .. })]
    ));
    assert_eq!(node.stats().refused_invalid, 1);
    // So is a local put of such a record.
    node.put(t(0), forged.clone());
    assert!(events(&drain(&mut node)).iter().any(|e| matches!(e, Event::PutFinished { acks: 0, .. })));
    // A get ignores a forged answer and goes on to the peer with the real record. The liar is the peer
    // nearer the key, so it is asked first (α = 1).
    let target = NodeId::from_key(&key);
    let (liar, honest) =
        if id(1).distance(&target) < id(2).distance(&target) { (id(1), id(2)) } else { (id(2), id(1)) };
    node.add_contact(t(0), Contact::bare(liar));
    node.add_contact(t(0), Contact::bare(honest));
    drain(&mut node);
    let q = node.get(t(0), key);
    let mut outs = drain(&mut node);
    let mut found = None;
    for round in 0..6 {
        for (to, msg) in sends(&outs) {
            let (rid, _) = request(&msg);
            let record = if to == liar { forged.clone() } else { Record::immutable(value.clone()) };
            let reply = Message::Response {
                id: rid,
                body: Response::Value { record: Box::new(record), ttl_secs: 60, closer: vec![] },
            };
            node.handle_message(t(10 + round), Contact::bare(to), reply);
        }
        outs = drain(&mut node);
        if let Some(r) = events(&outs).into_iter().find_map(|e| match e {
            Event::GetFinished { query, record, .. } if query == q => Some(record),
            _ => None,
        }) {
            found = Some(r);
            break;
        }
    }
    assert_eq!(found.expect("the get finished").map(|r| r.value), Some(value));
    assert_eq!(node.stats().bad_values, 1, "the forged answer was seen and refused");
}

#[test]
fn holders_replicate_their_records_with_the_time_left() {
    // Node 1 publishes a record for two hours; node 0 holds it and, after the replication interval, stores
    // it again at the closest (node 1, which does not replicate itself here) for the time it has left.
    let mut holder = Config::default();
    holder.replicate_interval = Duration::from_secs(3600);
    holder.self_lookup_interval = Duration::ZERO;
    holder.refresh_interval = Duration::from_secs(100 * 3600);
    let mut publisher = holder.clone();
    publisher.replicate_interval = Duration::ZERO;
    publisher.record_ttl = Duration::from_secs(7200);
    let mut pair = Pair::new([holder, publisher], t(0));
    let record = rec(5, 10);
    pair.nodes[1].put(pair.now, record.clone());
    pair.drive();
    let (_, expires) = pair.stores[0].get(&record.key).expect("the holder stored the record");
    // After the put's lookup and its store: three one-way delays.
    assert_eq!(expires, t(0) + Duration::from_secs(7200) + 3 * pair.delay);
    pair.take_events(1);
    // Nothing before three quarters of the interval.
    pair.advance(Duration::from_secs(2600));
    assert!(!pair.take_events(1).iter().any(|e| matches!(e, Event::RecordStored { .. })));
    // By the interval the holder has stored it at the publisher again, keeping its expiry (within the
    // whole seconds a TTL carries), not two hours from then.
    pair.advance(Duration::from_secs(1000));
    let holder_id = pair.ids()[0];
    assert!(pair.take_events(1).iter().any(|e| matches!(e, Event::RecordStored { from, .. } if *from == holder_id)));
    let (_, again) = pair.stores[1].get(&record.key).expect("the publisher holds the record");
    let drift = again.as_millis().abs_diff(expires.as_millis());
    assert!(drift <= 1_000, "stored again with {drift} ms more or less than it had left");
    assert_eq!(pair.lost, 0, "only the two nodes were asked");
}

#[test]
fn a_pair_puts_and_finds_each_other() {
    let mut pair = Pair::new([Config::default(), Config::default()], t(0));
    let [a, b] = pair.ids();
    assert!(pair.nodes[0].routing_table().contains(&b) && pair.nodes[1].routing_table().contains(&a));
    let record = Record::immutable(b"hello".to_vec());
    let q = pair.nodes[0].put(pair.now, record.clone());
    pair.drive();
    let put = pair.take_events(0).into_iter().find_map(|e| match e {
        Event::PutFinished { query, acks, attempted, .. } if query == q => Some((acks, attempted)),
        _ => None,
    });
    assert_eq!(put, Some((1, 1)), "the one other node acknowledged");
    assert_eq!(pair.stores[1].get(&record.key).map(|(r, _)| r.clone()), Some(record.clone()));
    assert!(pair.nodes[1].holds(&record.key));
    let q = pair.nodes[1].find_node(pair.now, a);
    pair.drive();
    let closest = pair.take_events(1).into_iter().find_map(|e| match e {
        Event::LookupFinished { query, closest, .. } if query == q => Some(closest),
        _ => None,
    });
    assert_eq!(closest.map(|c| c.into_iter().map(|c| c.id).collect::<Vec<_>>()), Some(vec![a]));
}

#[test]
fn ids_without_the_proof_of_work_are_kept_out() {
    let mut cfg = Config::default();
    cfg.id_difficulty = 4;
    let mut node = node_with(cfg);
    // About one id in sixteen carries four bits of work.
    let ids: Vec<NodeId> = (1..=64).map(id).collect();
    let (worthy, weak): (Vec<NodeId>, Vec<NodeId>) = ids.iter().partition(|i| i.work() >= 4);
    assert!(!worthy.is_empty() && !weak.is_empty());
    for i in &ids {
        node.add_contact(t(0), Contact::bare(*i));
    }
    drain(&mut node);
    assert!(worthy.iter().all(|i| node.routing_table().contains(i)));
    assert!(weak.iter().all(|i| !node.routing_table().contains(i)));
    assert_eq!(node.stats().weak_ids, weak.len() as u64);
    // Nor do they enter a lookup through an answer.
    let target = id(200);
    node.find_node(t(0), target);
    let out = sends(&drain(&mut node));
    let (to, msg) = out[0].clone();
    let (rid, _) = request(&msg);
    let closer = vec![Contact::bare(weak[0]), Contact::bare(worthy[0])];
    node.handle_message(t(10), Contact::bare(to), Message::Response { id: rid, body: Response::Nodes { closer } });
    let asked: Vec<NodeId> = sends(&drain(&mut node)).into_iter().map(|(to, _)| to).collect();
    assert!(!asked.contains(&weak[0]), "a weak id was asked");
}

#[test]
fn a_drained_node_gives_back_its_output_queue() {
    // Sixty contacts added at once queue an event each (and pings of full buckets' stalest entries);
    // once they are taken, the queue shrinks back.
    let mut node = node_with(Config::default());
    for n in 1..=60 {
        node.add_contact(t(0), Contact::bare(id(n)));
    }
    let queued = node.outputs.len();
    assert!(queued > 20 && node.outputs.capacity() >= queued, "{queued} queued");
    assert_eq!(drain(&mut node).len(), queued);
    assert!(node.outputs.capacity() <= 8, "capacity {}", node.outputs.capacity());
}

#[test]
fn the_node_sizes_its_buckets_by_config() {
    let node = node_with(Config::default());
    assert_eq!(node.routing_table().bucket_capacity(0), 20);
    assert_eq!(node.routing_table().bucket_capacity(9), 20 << 4, "default growth 4");
    let mut cfg = Config::default();
    cfg.bucket_growth = 0;
    assert_eq!(node_with(cfg).routing_table().bucket_capacity(9), 20, "the paper's k everywhere");
}

#[test]
fn deep_buckets_shed_quiet_peers_on_the_nodes_timer() {
    let mut cfg = Config::default();
    cfg.k = 2;
    cfg.shed_after = Duration::from_secs(600);
    cfg.self_lookup_interval = Duration::ZERO;
    let mut node = node_with(cfg);
    // Six peers in bucket 7 (their ids differ from ours first in bit 7): room for 2·2^4 = 32, no pings.
    let deep: Vec<NodeId> = (0..6u8)
        .map(|n| {
            let mut b = *id(0).as_bytes();
            b[0] ^= 0x01;
            b[31] = n;
            NodeId::from_bytes(b)
        })
        .collect();
    for (i, id) in deep.iter().enumerate() {
        node.add_contact(t(i as u64), Contact::bare(*id));
    }
    let _ = drain(&mut node);
    assert!(node.poll_timeout().is_some_and(|at| at <= t(600_000)), "the shed is on the node's timer");
    node.handle_timeout(t(600_010));
    let removed: Vec<Event> = events(&drain(&mut node));
    for id in &deep[..4] {
        assert!(removed.contains(&Event::PeerRemoved { id: *id }), "{id:?} shed");
    }
    assert_eq!(node.routing_table().len(), 2, "down to k");
}

#[test]
fn a_second_resend_goes_only_where_resends_were_answered() {
    // Sends to the slow peer after its first attempt, until the lookup gives up on it.
    let resends_to_silent_peer = |node: &mut Node, start: u64, target: u8| {
        node.find_node(t(start), id(target));
        let (slow, _) = sends(&drain(node)).remove(0);
        let mut n = 0;
        let mut other = None;
        for _ in 0..6 {
            let Some(at) = node.poll_timeout().filter(|at| *at < t(start + 3_000)) else { break };
            node.handle_timeout(at);
            for (to, msg) in sends(&drain(node)) {
                if to == slow {
                    n += 1;
                } else {
                    other = Some((to, msg));
                }
            }
        }
        (slow, n, other)
    };
    let fresh = || small_node_with_retries(2).0;
    // Without history: one resend to a silent peer.
    let mut node = fresh();
    assert_eq!(resends_to_silent_peer(&mut node, 1_000, 7).1, 1);
    // After a resend was answered (a lost message), an unanswered one gets another.
    let mut node = fresh();
    node.find_node(t(1_000), id(7));
    drain(&mut node);
    node.handle_timeout(node.poll_timeout().unwrap());
    for (to, msg) in sends(&drain(&mut node)) {
        answer(&mut node, 1_250, to, &msg);
    }
    assert!(node.poll_timeout().is_none_or(|at| at > t(5_000)), "nothing left to fail");
    assert_eq!(resends_to_silent_peer(&mut node, 5_000, 6).1, 2);
}

/// A node with k = 2, α = 1 and one retry that knows peers 1 and 2 and has learnt a 10 ms round trip, at
/// `start` looking up a target: returns it with the peer asked first and that request.
fn lookup_from_a_warm_node(start: u64) -> (Node, NodeId, Message) {
    let (mut node, _) = node_with_retries();
    node.find_node(t(start), id(7));
    let (first, msg) = sends(&drain(&mut node)).remove(0);
    (node, first, msg)
}

#[test]
fn a_peer_being_dialed_is_waited_for_past_the_round_trip_and_its_answer_counts() {
    let start = 1_000;
    let (mut node, dialed, first) = lookup_from_a_warm_node(start);
    node.dialing(t(start), &dialed);
    // The lookup goes on without the peer being dialed meanwhile...
    let (other, second) = sends(&drain(&mut node)).remove(0);
    assert_ne!(other, dialed);
    let outs = answer(&mut node, start + 10, other, &second);
    assert!(events(&outs).is_empty(), "but holds its end for it");
    // ... past the full request timeout, without sending it again (the request waits on the link).
    node.handle_timeout(t(start + 3_000));
    let outs = drain(&mut node);
    assert!(sends(&outs).is_empty() && events(&outs).is_empty(), "{outs:?}");
    let outs = answer(&mut node, start + 3_500, dialed, &first);
    let closest = finished(&outs).expect("lookup finished");
    assert!(closest.contains(&dialed) && closest.len() == 2, "the dialed peer is in the result");
    assert_eq!(node.stats().timeouts, 0);
    // Reported twice, the dial changes nothing more.
    node.dialing(t(start + 3_600), &dialed);
    assert!(drain(&mut node).is_empty());
}

#[test]
fn a_dialed_peer_that_is_never_reached_ends_the_wait_at_the_connect_timeout() {
    let start = 1_000;
    let (mut node, dialed, _) = lookup_from_a_warm_node(start);
    node.dialing(t(start), &dialed);
    let (other, second) = sends(&drain(&mut node)).remove(0);
    answer(&mut node, start + 10, other, &second);
    let connect = Config::default().connect_timeout.as_millis() as u64;
    node.handle_timeout(t(start + connect - 1));
    assert!(events(&drain(&mut node)).is_empty(), "still waiting");
    node.handle_timeout(t(start + connect));
    let closest = finished(&drain(&mut node)).expect("lookup finished at the connect timeout");
    assert_eq!(closest, vec![other]);
    assert_eq!(node.stats().timeouts, 1);
}

#[test]
fn requests_lost_with_their_link_are_sent_again_at_once_and_then_fail() {
    let start = 1_000;
    let (mut node, peer, first) = lookup_from_a_warm_node(start);
    // The link closes 5 ms after the request went, well inside its timeout: it is sent again at once, and
    // the lookup asks the other peer meanwhile.
    node.link_lost(t(start + 5), &peer);
    let outs = sends(&drain(&mut node));
    let (again, others): (Vec<_>, Vec<_>) = outs.into_iter().partition(|(to, _)| *to == peer);
    assert_eq!(again.len(), 1, "sent again: {again:?}");
    let (other, second) = others.into_iter().next().expect("the lookup went on");
    assert_eq!(node.stats().lost_with_link, 1);
    let outs = answer(&mut node, start + 10, other, &second);
    assert!(events(&outs).is_empty(), "the lookup holds its end for the request sent again");
    // Its new link closes too, and no attempt is left: the request fails and the lookup ends without it.
    node.link_lost(t(start + 20), &peer);
    let closest = finished(&drain(&mut node)).expect("lookup finished when the second link closed");
    assert_eq!(closest, vec![other]);
    assert_eq!((node.stats().lost_with_link, node.stats().timeouts), (2, 2));
    // Nothing of it is left waiting: a late answer to the first attempt is unexpected.
    answer(&mut node, start + 30, peer, &first);
    assert_eq!(node.stats().unexpected_responses, 1);
    // A link that closes with nothing in flight changes nothing.
    node.link_lost(t(start + 40), &other);
    assert!(drain(&mut node).is_empty());
    assert_eq!(node.stats().lost_with_link, 2);
}

#[test]
fn an_unreachable_peer_fails_its_requests_at_once() {
    let start = 1_000;
    let (mut node, dialed, first) = lookup_from_a_warm_node(start);
    node.dialing(t(start), &dialed);
    let (other, second) = sends(&drain(&mut node)).remove(0);
    answer(&mut node, start + 10, other, &second);
    node.unreachable(t(start + 50), &dialed);
    let closest = finished(&drain(&mut node)).expect("lookup finished when the dial failed");
    assert_eq!(closest, vec![other]);
    assert_eq!((node.stats().unreachable, node.stats().timeouts), (1, 0));
    assert_eq!(node.routing_table().get(&dialed).map(|e| e.failures), Some(1), "counted as a failure");
    // Nothing of it is left waiting: a late answer is unexpected, and no deadline fires for it.
    answer(&mut node, start + 60, dialed, &first);
    assert_eq!(node.stats().unexpected_responses, 1);
    node.handle_timeout(t(start + 10_000));
    assert_eq!(node.stats().timeouts, 0);
}
