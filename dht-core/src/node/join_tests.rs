//! Joins: one that reaches nobody is tried again, with a growing pause, until a seed answers.
#![allow(clippy::field_reassign_with_default)]

use super::tests::{drain, events, id, let_time_out, node_with, request, sends, t};
use super::*;
use crate::message::Response;
use crate::Config;
use core::time::Duration;

fn reports(outs: &[Output]) -> usize {
    events(outs).iter().filter(|e| matches!(e, Event::LookupFinished { .. })).count()
}

#[test]
fn a_join_that_reaches_nobody_is_tried_again_with_a_growing_pause() {
    let mut cfg = Config::default();
    cfg.request_retries = 0;
    let mut node = node_with(cfg.clone());
    let seed = Contact::bare(id(1));
    node.bootstrap(t(0), vec![seed.clone()]);
    assert_eq!(sends(&drain(&mut node)).len(), 1, "the seed is asked");
    // The seed never answers: the join reports an empty result, once.
    let outs = let_time_out(&mut node, t(0) + cfg.request_timeout);
    assert_eq!(reports(&outs), 1);
    assert!(node.routing_table().is_empty());
    let failed_at = t(0) + cfg.request_timeout;
    assert_eq!(node.maintenance.rejoin_at, Some(failed_at + Duration::from_secs(1)));

    // The second try fails too: the third waits twice as long. Tries are not reported.
    let outs = let_time_out(&mut node, failed_at + Duration::from_secs(1) + cfg.request_timeout);
    assert_eq!(sends(&outs).iter().filter(|(to, _)| *to == seed.id).count(), 1, "asked again");
    assert_eq!(reports(&outs), 0, "the caller had its answer");
    let second_failed = failed_at + Duration::from_secs(1) + cfg.request_timeout;
    assert_eq!(node.maintenance.rejoin_at, Some(second_failed + Duration::from_secs(2)));

    // The third try reaches the seed, which knows a peer: both join the table and the tries stop.
    node.handle_timeout(second_failed + Duration::from_secs(2));
    let mut pending = sends(&drain(&mut node));
    assert_eq!(pending.len(), 1);
    let mut at = second_failed + Duration::from_secs(2);
    while let Some((to, msg)) = pending.pop() {
        let (rid, _) = request(&msg);
        let closer = if to == seed.id { vec![Contact::bare(id(2))] } else { vec![] };
        at = at + Duration::from_millis(10);
        node.handle_message(at, Contact::bare(to), Message::Response { id: rid, body: Response::Nodes { closer } });
        let outs = drain(&mut node);
        assert_eq!(reports(&outs), 0);
        pending.extend(sends(&outs).into_iter().filter(|(_, m)| matches!(m, Message::Request { .. })));
    }
    assert!(node.routing_table().contains(&id(1)) && node.routing_table().contains(&id(2)));
    assert_eq!(node.maintenance.rejoin_at, None, "joined: no more tries");
}

#[test]
fn a_join_that_reaches_someone_is_not_tried_again() {
    let mut node = node_with(Config::default());
    node.bootstrap(t(0), vec![Contact::bare(id(1))]);
    let (to, msg) = sends(&drain(&mut node)).remove(0);
    let (rid, _) = request(&msg);
    node.handle_message(
        t(10),
        Contact::bare(to),
        Message::Response { id: rid, body: Response::Nodes { closer: vec![] } },
    );
    assert_eq!(reports(&drain(&mut node)), 1);
    assert_eq!(node.maintenance.rejoin_at, None);
}
