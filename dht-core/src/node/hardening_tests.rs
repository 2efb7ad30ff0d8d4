//! Attacks one hostile peer (or a few sybils) can mount on the node's state machine, with the defence.
#![allow(clippy::field_reassign_with_default)] // `Config` is non-exhaustive

use super::tests::{drain, events, id, let_time_out, node_with, request, sends, t};
use super::*;
use crate::message::{RequestId, Response};
use crate::Config;

/// Two ids in bucket 0 of `id(0)` (the far half), and one elsewhere.
fn bucket_mates() -> (NodeId, NodeId, Vec<NodeId>) {
    let local = id(0);
    let (mut same, mut other) = (Vec::new(), Vec::new());
    for n in 1..=255u8 {
        match local.distance(&id(n)).bucket_index() {
            Some(0) => same.push(id(n)),
            Some(_) => other.push(id(n)),
            None => {}
        }
    }
    (same[0], same[1], other)
}

/// A node whose one-slot far bucket holds `old` (stale at once), having seen only 5 ms round trips from
/// sybils close by (so its adaptive timeout is at the 200 ms floor).
fn node_with_fast_neighbours(old: NodeId, sybils: &[NodeId]) -> Node {
    let mut cfg = Config::default();
    cfg.k = 1;
    cfg.ping_after = core::time::Duration::ZERO;
    let mut node = node_with(cfg);
    node.add_contact(t(0), Contact::bare(old));
    for (i, s) in sybils.iter().enumerate().take(8) {
        node.add_contact(t(0), Contact::bare(*s));
        // Each sybil answers a lookup in 5 ms.
        let at = 100 * i as u64;
        node.find_node(t(at), *s);
        for (to, msg) in sends(&drain(&mut node)) {
            if to == *s {
                let (rid, _) = request(&msg);
                let reply = Message::Response { id: rid, body: Response::Nodes { closer: vec![] } };
                node.handle_message(t(at + 5), Contact::bare(to), reply);
            }
        }
        drain(&mut node);
    }
    node
}

/// The attacker's `newcomer` speaks to the node at `at` ms: the stale `old` entry is pinged (the id of
/// that ping).
fn newcomer_arrives(node: &mut Node, at: u64, newcomer: NodeId, old: NodeId) -> RequestId {
    node.handle_message(t(at), Contact::bare(newcomer), Message::Request { id: RequestId(1), body: Request::Ping });
    ping_of(&drain(node), old)
}

/// `old` answers ping `id` at `at`.
fn pong(node: &mut Node, at: Instant, old: NodeId, id: RequestId) {
    node.handle_message(at, Contact::bare(old), Message::Response { id, body: Response::Pong });
    drain(node);
}

/// The ping of `old` among `outs`.
fn ping_of(outs: &[Output], old: NodeId) -> RequestId {
    sends(outs)
        .into_iter()
        .find(|(to, m)| *to == old && matches!(m, Message::Request { body: Request::Ping, .. }))
        .map(|(_, m)| request(&m).0)
        .expect("the stale entry is pinged")
}

#[test]
fn fast_sybils_cannot_shrink_the_time_a_stale_entry_has_to_answer() {
    let (old, newcomer, sybils) = bucket_mates();
    let mut node = node_with_fast_neighbours(old, &sybils);
    // The attacker's newcomer arrives: the old entry is pinged. It is farther away and answers in 500 ms.
    let start = 1_000;
    let ping = newcomer_arrives(&mut node, start, newcomer, old);
    let_time_out(&mut node, t(start + 499));
    assert!(node.routing_table().contains(&old), "evicted before it could answer (timeout shrunk by sybils)");
    pong(&mut node, t(start + 500), old, ping);
    assert!(node.routing_table().contains(&old) && !node.routing_table().contains(&newcomer));
}

#[test]
fn one_lost_ping_does_not_evict_a_long_lived_entry() {
    let (old, newcomer, sybils) = bucket_mates();
    let mut node = node_with_fast_neighbours(old, &sybils);
    let start = 1_000;
    let _lost = newcomer_arrives(&mut node, start, newcomer, old);
    // The first ping goes unanswered: it goes again, and the entry stays meanwhile.
    let outs = let_time_out(&mut node, t(start + 1_000));
    assert!(!events(&outs).contains(&Event::PeerRemoved { id: old }));
    pong(&mut node, t(start + 1_000), old, ping_of(&outs, old));
    assert!(node.routing_table().contains(&old) && !node.routing_table().contains(&newcomer));
}
