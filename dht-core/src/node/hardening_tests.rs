//! Attacks one hostile peer (or a few sybils) can mount on the node's state machine, with the defence.
#![allow(clippy::field_reassign_with_default)] // `Config` is non-exhaustive

use super::tests::{drain, events, id, let_time_out, node_with, request, sends, t};
use super::*;
use crate::message::{Address, RequestId, Response};
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

/// A liar hands out an honest peer's id with an address where nothing answers for it. The node must reach
/// the honest peer where the peer itself said it is (its handshake, kept in the table): before, a lookup
/// that heard the lie first (the honest entry not among its starting peers, a closer one failing) dialed
/// the bogus address and counted the failure against the honest entry; two lookups dropped it.
#[test]
fn a_liar_handing_out_bogus_addresses_cannot_get_an_honest_peer_dropped() {
    let mut cfg = Config::default();
    cfg.k = 2;
    cfg.alpha = 1;
    let addr = |n: u8| vec![Address::new(format!("tcp:198.51.100.{n}:4000"))];
    // Three table entries and a target with: dead < liar < honest by distance to the target, so that a
    // lookup starts at the dead and the liar (k = 2), and reaches the honest peer through the liar's answer.
    let target = id(250);
    let fill = |node: &mut Node, ns: [u8; 3]| {
        for n in ns {
            node.add_contact(t(0), Contact { id: id(n), addrs: addr(n) });
        }
    };
    let found = (1..60u8)
        .flat_map(|a| (1..60u8).flat_map(move |b| (1..60u8).map(move |c| [a, b, c])))
        .filter(|[a, b, c]| a != b && b != c && a != c)
        .find(|ns| {
            let d = |n: u8| id(n).distance(&target);
            let mut probe = node_with(cfg.clone());
            fill(&mut probe, *ns);
            let all_in = ns.iter().all(|n| probe.routing_table().get(&id(*n)).is_some());
            all_in && d(ns[0]) < d(ns[1]) && d(ns[1]) < d(ns[2])
        })
        .expect("such ids exist");
    let [_dead, liar, honest] = found.map(id);
    let mut node = node_with(cfg);
    fill(&mut node, found);
    let real = node.routing_table().get(&honest).unwrap().contact();
    let bogus = Contact { id: honest, addrs: vec![Address::new("tcp:203.0.113.66:9")] };
    drain(&mut node);
    let mut now = 0;
    for round in 0..3 {
        now += 10_000;
        node.find_node(t(now), target);
        let mut outs = drain(&mut node);
        let mut removed = false;
        for step in 0..20 {
            let mut next = Vec::new();
            for o in outs {
                removed |= matches!(o, Output::Event(Event::PeerRemoved { id }) if id == honest);
                let Output::Send { to, msg } = o else { continue };
                let Message::Request { id: rid, .. } = msg else { continue };
                let body = if to.id == liar {
                    Response::Nodes { closer: vec![bogus.clone()] }
                } else if to.id == honest && to.addrs == real.addrs {
                    Response::Nodes { closer: vec![] }
                } else {
                    continue; // the dead peer, or the bogus address: nobody answers
                };
                node.handle_message(t(now + step), to.clone(), Message::Response { id: rid, body });
                next.extend(drain(&mut node));
            }
            next.extend(let_time_out(&mut node, t(now + 100 * (step + 1))));
            outs = next;
        }
        assert!(!removed, "round {round}: the honest peer was dropped");
    }
    assert!(node.routing_table().get(&honest).is_some(), "the honest peer is still in the table");
}
