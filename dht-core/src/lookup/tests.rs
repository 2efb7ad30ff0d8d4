//! Unit tests of the lookup state machine.
use super::*;

fn id(n: u8) -> NodeId {
    let mut b = [0u8; 32];
    b[0] = n;
    NodeId::from_bytes(b)
}

fn params(k: usize, alpha: usize) -> LookupParams {
    LookupParams { k, alpha, max_candidates: 100, stall_after: alpha, distrust_after: 3, paths: 1 }
}

/// A lookup of `id(0)` seeded with `id(n)` for every n in `seeds`, with a region radius of `id(r)`'s
/// distance when `radius` is `Some(r)`.
fn lookup_of_zero(seeds: core::ops::Range<u8>, p: LookupParams, radius: Option<u8>) -> Lookup {
    let mut l = Lookup::new(id(0), seeds.map(|n| Contact::bare(id(n))), p);
    if let Some(r) = radius {
        l.set_region_radius(id(r).distance(&id(0)));
    }
    l
}

fn drain(l: &mut Lookup) -> Vec<NodeId> {
    let mut out = Vec::new();
    while let Next::Query(c) = l.poll_next() {
        out.push(c.id);
    }
    out
}

#[test]
fn asks_alpha_closest_first() {
    let target = id(0);
    let seeds = [9, 3, 7, 1, 5].map(|n| Contact::bare(id(n)));
    let mut l = Lookup::new(target, seeds, params(2, 2));
    assert_eq!(drain(&mut l), vec![id(1), id(3)]);
    assert_eq!(l.poll_next(), Next::Wait);
}

#[test]
fn finishes_when_k_closest_answered() {
    let target = id(0);
    let mut l = Lookup::new(target, [id(8), id(9)].map(Contact::bare), params(2, 3));
    assert_eq!(drain(&mut l), vec![id(8), id(9)]);
    l.on_success(&id(8), [id(2), id(3)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(2), id(3)], "α = 3: 9, 2 and 3 in flight");
    l.on_success(&id(9), []);
    assert_eq!(l.poll_next(), Next::Wait);
    l.on_success(&id(2), [id(1)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(1)]);
    l.on_failure(&id(1));
    assert_eq!(l.poll_next(), Next::Wait, "3 still in flight");
    l.on_success(&id(3), []);
    assert_eq!(l.poll_next(), Next::Finished);
    let got: Vec<_> = l.closest().into_iter().map(|c| c.id).collect();
    assert_eq!(got, vec![id(2), id(3)]);
    assert_eq!(l.hops(), 2);
    assert_eq!((l.requests(), l.responses(), l.failures()), (5, 4, 1));
}

#[test]
fn a_full_candidate_list_still_takes_closer_contacts() {
    let p = LookupParams { k: 2, alpha: 3, max_candidates: 4, stall_after: 3, distrust_after: 0, paths: 1 };
    let mut l = Lookup::new(id(0), [id(10), id(11), id(12)].map(Contact::bare), p);
    assert_eq!(drain(&mut l), vec![id(10), id(11), id(12)]);
    l.on_success(&id(11), []);
    l.on_success(&id(12), []);
    // The list fills up with peers that answered: the closer newcomers push the farthest of them (12,
    // beyond the k = 2 closest that answered) out; they used to push themselves out, and the lookup
    // ended without them.
    l.on_success(&id(10), [id(1), id(2)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(1), id(2)]);
    assert_eq!(l.state_of(&id(12)), None, "12 made room");
    l.on_success(&id(1), []);
    l.on_success(&id(2), []);
    assert_eq!(l.poll_next(), Next::Finished);
    let got: Vec<_> = l.closest().into_iter().map(|c| c.id).collect();
    assert_eq!(got, vec![id(1), id(2)]);
}

#[test]
fn made_up_contacts_cannot_push_answers_out_of_the_result() {
    let p = LookupParams { k: 2, alpha: 3, max_candidates: 3, stall_after: 3, distrust_after: 0, paths: 1 };
    let mut l = Lookup::new(id(0), [id(10), id(11), id(12)].map(Contact::bare), p);
    assert_eq!(drain(&mut l), vec![id(10), id(11), id(12)]);
    l.on_success(&id(11), []);
    l.on_success(&id(12), []);
    // 10 hands out two ids closer than anyone. The first pushes out 12 (three answered, k = 2); the
    // second finds only the k closest answers behind it and gives way itself.
    l.on_success(&id(10), [id(1), id(2)].map(Contact::bare));
    assert_eq!(l.state_of(&id(12)), None);
    assert_eq!(l.state_of(&id(2)), None);
    assert_eq!(drain(&mut l), vec![id(1)]);
    l.on_failure(&id(1));
    assert_eq!(l.poll_next(), Next::Finished);
    let got: Vec<_> = l.closest().into_iter().map(|c| c.id).collect();
    assert_eq!(got, vec![id(10), id(11)], "the answers survived the made-up contacts");
}

#[test]
fn stalls_then_widens_to_k() {
    let target = id(0);
    let seeds: Vec<_> = (10..20).map(|n| Contact::bare(id(n))).collect();
    let mut l = Lookup::new(target, seeds, params(5, 2));
    assert_eq!(drain(&mut l).len(), 2);
    l.on_success(&id(10), []);
    assert_eq!(drain(&mut l).len(), 1);
    l.on_success(&id(11), []);
    // Two answers without progress: stalled, so up to k = 5 in flight.
    assert_eq!(drain(&mut l).len(), 4);
}

#[test]
fn ends_when_everyone_failed_and_ignores_strangers() {
    let mut l = Lookup::new(id(0), [id(1)].map(Contact::bare), params(3, 3));
    assert_eq!(drain(&mut l), vec![id(1)]);
    l.on_success(&id(42), [id(2)].map(Contact::bare));
    l.on_failure(&id(42));
    assert_eq!(l.poll_next(), Next::Wait);
    l.on_failure(&id(1));
    l.on_success(&id(1), []);
    assert_eq!(l.poll_next(), Next::Finished);
    assert!(l.closest().is_empty());
    let empty = Lookup::new(id(0), [], params(3, 3)).poll_next();
    assert_eq!(empty, Next::Finished);
}

#[test]
fn an_answer_from_inside_the_region_widens_at_once() {
    let mut l = lookup_of_zero(2..12, params(8, 2), Some(2));
    assert_eq!(drain(&mut l), vec![id(2), id(3)]);
    l.on_success(&id(3), [id(1)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(1)], "3 is outside the radius: still α");
    l.on_success(&id(2), [].map(Contact::bare));
    assert_eq!(drain(&mut l).len(), 7, "2 is inside: up to k = 8 in flight");
}

#[test]
fn a_candidate_inside_the_region_among_the_k_closest_is_asked_at_once() {
    let mut l = lookup_of_zero(20..30, params(3, 2), Some(4));
    assert_eq!(drain(&mut l), vec![id(20), id(21)]);
    // 20 names 2, 3, 5 and 6: 2 and 3 are inside the radius and among the k = 3 closest, so they go
    // out although α = 2 are in flight; 5 and 6 are outside it.
    l.on_success(&id(20), [id(2), id(3), id(5), id(6)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(2), id(3)]);
    // 1 arrives (inside, first): asked at once too.
    l.on_success(&id(21), [id(1)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(1)]);
    // With a radius that takes in all four, only the k = 3 closest go past α: 6 ranks fourth and waits.
    let mut l = lookup_of_zero(20..30, params(3, 2), Some(8));
    assert_eq!(drain(&mut l), vec![id(20), id(21)]);
    l.on_success(&id(20), [id(2), id(3), id(5), id(6)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(2), id(3), id(5)]);
    assert_eq!(l.state_of(&id(6)), Some(PeerState::NotContacted));
    // Without a radius the same answers wait for α.
    let mut l = lookup_of_zero(20..30, params(3, 2), None);
    assert_eq!(drain(&mut l), vec![id(20), id(21)]);
    l.on_success(&id(20), [id(2), id(3), id(5), id(6)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(2)]);
}

#[test]
fn a_budgeted_lookup_keeps_to_alpha_inside_the_region() {
    let mut l = lookup_of_zero(20..30, params(5, 3), Some(8));
    l.set_request_budget(6);
    assert_eq!(drain(&mut l), vec![id(20), id(21), id(22)], "half the budget in the first wave");
    // Contacts inside the radius do not spend the rest of the budget at once.
    l.on_success(&id(20), [id(1), id(2), id(3), id(4)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(1)]);
    // Nor does an answer from inside it widen the lookup past α.
    l.on_success(&id(1), []);
    assert_eq!(drain(&mut l), vec![id(2)]);
    assert_eq!(l.poll_next(), Next::Wait, "α = 3 in flight (21, 22, 2)");
}

#[test]
fn a_budgeted_lookup_does_not_widen_when_stalled() {
    let p = LookupParams { k: 10, alpha: 3, max_candidates: 100, stall_after: 2, distrust_after: 0, paths: 1 };
    let mut l = lookup_of_zero(10..30, p, None);
    l.set_request_budget(12);
    assert_eq!(drain(&mut l).len(), 3);
    // Two answers without progress: an unbudgeted lookup would now have up to k = 10 in flight.
    l.on_success(&id(10), []);
    l.on_success(&id(11), []);
    assert_eq!(drain(&mut l).len(), 2, "back to α = 3 in flight, no more");
    // The same answers without a budget widen.
    let mut l = lookup_of_zero(10..30, p, None);
    assert_eq!(drain(&mut l).len(), 3);
    l.on_success(&id(10), []);
    l.on_success(&id(11), []);
    assert_eq!(drain(&mut l).len(), 9, "stalled: up to k = 10 in flight");
}

#[test]
fn a_budget_caps_requests() {
    let seeds: Vec<_> = (10..20).map(|n| Contact::bare(id(n))).collect();
    let mut l = Lookup::new(id(0), seeds, params(5, 3));
    l.set_request_budget(4);
    assert_eq!(drain(&mut l).len(), 2, "half the budget in the first wave");
    l.on_success(&id(10), [id(1)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(1)], "the second wave follows the answer");
    l.on_success(&id(11), []);
    assert_eq!(drain(&mut l), vec![id(12)]);
    assert_eq!(l.poll_next(), Next::Wait, "budget spent, two answers pending");
    l.on_success(&id(1), []);
    l.on_failure(&id(12));
    assert_eq!(l.poll_next(), Next::Finished);
    assert_eq!(l.requests(), 4);
}

#[test]
fn candidates_are_capped_keeping_the_closest() {
    let mut l = Lookup::new(
        id(0),
        [id(200)].map(Contact::bare),
        LookupParams { k: 2, alpha: 1, max_candidates: 3, stall_after: 1, distrust_after: 3, paths: 1 },
    );
    assert_eq!(drain(&mut l), vec![id(200)]);
    l.on_success(&id(200), (1..=10).map(|n| Contact::bare(id(n))));
    assert_eq!(drain(&mut l), vec![id(1)]);
    assert_eq!(l.state_of(&id(4)), None, "far candidates dropped");
    assert_eq!(l.state_of(&id(2)), Some(PeerState::NotContacted));
}

#[test]
fn a_peer_whose_introductions_never_answer_is_distrusted() {
    let target = id(0);
    let mut l = Lookup::new(target, [id(100), id(101)].map(Contact::bare), params(2, 1));
    assert_eq!(drain(&mut l), vec![id(100)]);
    // 100 lies: four made-up ids nearer the target than anyone real.
    l.on_success(&id(100), [id(1), id(2), id(3), id(4)].map(Contact::bare));
    for n in 1..=3 {
        assert_eq!(drain(&mut l), vec![id(n)]);
        l.on_failure(&id(n));
    }
    assert_eq!(l.distrusted(), &[id(100)], "three failures, no answer: distrusted");
    assert_eq!(l.state_of(&id(4)), None, "its last made-up id is dropped unasked");
    assert_eq!(drain(&mut l), vec![id(101)]);
    l.on_success(&id(101), [id(50)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(50)]);
    l.on_success(&id(50), [id(100), id(7)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(7)], "the liar is not asked again");
    l.on_success(&id(7), []);
    while let Next::Query(c) = l.poll_next() {
        l.on_success(&c.id, []);
    }
    let got: Vec<_> = l.closest().into_iter().map(|c| c.id).collect();
    assert_eq!(got, vec![id(7), id(50)]);
}

#[test]
fn disjoint_paths_never_share_a_peer() {
    let target = id(0);
    let seeds: Vec<_> = (10..16).map(|n| Contact::bare(id(n))).collect();
    let p = LookupParams { k: 2, alpha: 1, max_candidates: 100, stall_after: 5, distrust_after: 0, paths: 2 };
    let mut l = Lookup::new(target, seeds, p);
    // Seeds dealt nearest first: path 0 has 10, 12, 14 and path 1 has 11, 13, 15; α = 1 per path.
    assert_eq!(drain(&mut l), vec![id(10), id(11)]);
    // 10 (path 0) introduces 1, and 11, which path 1 already has: 11 stays on path 1.
    l.on_success(&id(10), [id(1), id(11)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(1)]);
    // 11 (path 1) introduces 1 (path 0's) and 2: path 1 asks only 2.
    l.on_success(&id(11), [id(1), id(2)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(2)]);
    // 1 (path 0) introduces 2 (path 1's) and 3: path 0 asks 3, path 1 still waits on 2.
    l.on_success(&id(1), [id(2), id(3)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(3)]);
    l.on_success(&id(3), []);
    assert_eq!(l.poll_next(), Next::Wait, "path 0 is done (1 and 3); path 1 waits on 2");
    l.on_success(&id(2), []);
    assert_eq!(l.poll_next(), Next::Finished);
    let got: Vec<_> = l.closest().into_iter().map(|c| c.id).collect();
    assert_eq!(got, vec![id(1), id(2)], "the k closest over both paths");
    assert_eq!(l.requests(), 5, "no peer asked twice");
}

#[test]
fn a_liar_on_one_path_does_not_steer_the_other() {
    let target = id(0);
    let seeds = [id(20), id(21)].map(Contact::bare);
    let p = LookupParams { k: 1, alpha: 1, max_candidates: 100, stall_after: 5, distrust_after: 0, paths: 2 };
    let mut l = Lookup::new(target, seeds, p);
    assert_eq!(drain(&mut l), vec![id(20), id(21)]);
    // 20 lies: made-up ids nearer than anyone. Only path 0 chases them.
    l.on_success(&id(20), [id(1), id(2), id(3)].map(Contact::bare));
    l.on_success(&id(21), [id(5)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(1), id(5)]);
    l.on_success(&id(5), []);
    for n in 1..=3 {
        l.on_failure(&id(n));
        let _ = drain(&mut l);
    }
    assert_eq!(l.poll_next(), Next::Finished);
    let got: Vec<_> = l.closest().into_iter().map(|c| c.id).collect();
    assert_eq!(got, vec![id(5)], "path 1 found the real closest peer on its own");
}

#[test]
fn a_late_answer_from_a_slow_peer_still_counts() {
    let mut l = Lookup::new(id(0), [id(10), id(11)].map(Contact::bare), params(2, 1));
    assert_eq!(drain(&mut l), vec![id(10)]);
    l.on_slow(&id(10));
    assert_eq!(drain(&mut l), vec![id(11)], "the lookup goes on without the slow peer");
    l.on_success(&id(10), [id(1)].map(Contact::bare));
    assert_eq!(l.state_of(&id(10)), Some(PeerState::Succeeded));
    assert_eq!(l.failures(), 0);
    assert_eq!(l.poll_next(), Next::Wait, "α = 1: 11 is in flight");
    l.on_success(&id(11), []);
    assert_eq!(drain(&mut l), vec![id(1)], "the late answer's contact is asked");
    l.on_success(&id(1), []);
    l.on_failure(&id(10));
    assert_eq!(l.poll_next(), Next::Finished);
    let got: Vec<_> = l.closest().into_iter().map(|c| c.id).collect();
    assert_eq!(got, vec![id(1), id(10)]);
    // A peer that simply failed is not revived by a stray answer.
    let mut l = Lookup::new(id(0), [id(10)].map(Contact::bare), params(1, 1));
    assert_eq!(drain(&mut l), vec![id(10)]);
    l.on_failure(&id(10));
    l.on_success(&id(10), []);
    assert_eq!(l.state_of(&id(10)), Some(PeerState::Failed));
}

#[test]
fn failed_candidates_make_room_and_are_not_taken_again() {
    let p = LookupParams { k: 2, alpha: 3, max_candidates: 3, stall_after: 3, distrust_after: 0, paths: 1 };
    let mut l = Lookup::new(id(0), [id(10), id(11), id(12)].map(Contact::bare), p);
    assert_eq!(drain(&mut l), vec![id(10), id(11), id(12)]);
    l.on_failure(&id(10));
    l.on_failure(&id(11));
    // The list is full of asked peers, two of them failed: they give way to newcomers.
    l.on_success(&id(12), [id(20), id(21), id(10)].map(Contact::bare));
    assert_eq!(l.state_of(&id(20)), Some(PeerState::NotContacted));
    assert_eq!(l.state_of(&id(21)), Some(PeerState::NotContacted));
    assert_eq!(l.state_of(&id(10)), None, "a failed peer is not taken again");
    assert_eq!(drain(&mut l), vec![id(20), id(21)]);
}

#[test]
fn a_resent_peer_among_the_k_closest_holds_the_end_and_its_answer_counts() {
    let mut l = Lookup::new(id(0), [id(1), id(2), id(3)].map(Contact::bare), params(2, 3));
    assert_eq!(drain(&mut l), vec![id(1), id(2), id(3)]);
    // 1's first attempt timed out and was sent again: the lookup goes on without it…
    l.on_resent(&id(1));
    l.on_success(&id(2), []);
    l.on_success(&id(3), []);
    // …but does not end while 1 may still answer.
    assert_eq!(l.poll_next(), Next::Wait);
    l.on_success(&id(1), []);
    assert_eq!(l.poll_next(), Next::Finished);
    let got: Vec<_> = l.closest().into_iter().map(|c| c.id).collect();
    assert_eq!(got, vec![id(1), id(2)]);
    assert_eq!(l.failures(), 0, "a late answer is not a failure");
}

#[test]
fn a_failed_resend_ends_the_wait() {
    let mut l = Lookup::new(id(0), [id(1), id(2), id(3)].map(Contact::bare), params(2, 3));
    drain(&mut l);
    l.on_resent(&id(1));
    l.on_success(&id(2), []);
    l.on_success(&id(3), []);
    assert_eq!(l.poll_next(), Next::Wait);
    l.on_failure(&id(1));
    assert_eq!(l.poll_next(), Next::Finished);
    let got: Vec<_> = l.closest().into_iter().map(|c| c.id).collect();
    assert_eq!(got, vec![id(2), id(3)]);
}

#[test]
fn a_resent_peer_is_not_forgotten_to_make_room() {
    let p = LookupParams { k: 2, alpha: 3, max_candidates: 3, stall_after: 3, distrust_after: 0, paths: 1 };
    let mut l = Lookup::new(id(0), [id(5), id(6), id(7)].map(Contact::bare), p);
    drain(&mut l);
    l.on_resent(&id(5));
    l.on_success(&id(6), [id(1), id(2)].map(Contact::bare));
    assert_eq!(l.state_of(&id(5)), Some(PeerState::Failed), "kept while its resend may answer");
    l.on_success(&id(5), []);
    assert_eq!(l.state_of(&id(5)), Some(PeerState::Succeeded));
}

#[test]
fn a_lookup_whose_only_peer_was_resent_waits_for_it() {
    // A join through one seed whose first request was lost must not end empty.
    let mut l = Lookup::new(id(0), [id(1)].map(Contact::bare), params(2, 3));
    drain(&mut l);
    l.on_resent(&id(1));
    assert_eq!(l.poll_next(), Next::Wait);
    l.on_success(&id(1), [id(2)].map(Contact::bare));
    assert_eq!(drain(&mut l), vec![id(2)]);
}

#[test]
fn peers_being_dialed_hold_the_end_but_are_no_failures_until_they_fail() {
    let target = id(0);
    let mut l = Lookup::new(target, [id(100), id(101)].map(Contact::bare), params(4, 1));
    assert_eq!(drain(&mut l), vec![id(100)]);
    // 100 introduces four peers, each of which must be dialed first.
    l.on_success(&id(100), [id(1), id(2), id(3), id(4)].map(Contact::bare));
    for n in 1..=4 {
        assert_eq!(drain(&mut l), vec![id(n)], "one dial does not hold up the next request");
        l.on_dialing(&id(n));
    }
    assert!(l.distrusted().is_empty(), "dials are not failures: 100 is no liar");
    assert_eq!(l.failures(), 0);
    assert_eq!(drain(&mut l), vec![id(101)]);
    l.on_success(&id(101), []);
    assert_eq!(l.poll_next(), Next::Wait, "the end waits for the peers being dialed");
    for n in 1..=3 {
        l.on_success(&id(n), []);
    }
    assert_eq!(l.poll_next(), Next::Wait, "and for the last one");
    l.on_failure(&id(4));
    assert_eq!(l.failures(), 1, "a dial that failed counts");
    assert_eq!(l.poll_next(), Next::Finished);
    let got: Vec<_> = l.closest().into_iter().map(|c| c.id).collect();
    assert_eq!(got, vec![id(1), id(2), id(3), id(100)]);
}
