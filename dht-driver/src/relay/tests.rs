use super::*;

fn id(n: u8) -> NodeId {
    NodeId::from_public_key(&[n; 32])
}

fn relayed(from: u8, to: u8, route: &[u8], hop: u8) -> Relayed {
    let route = route.iter().map(|&n| id(n)).collect();
    Relayed { from: id(from), to: id(to), route, hop, payload: vec![7; 10], undeliverable: None }
}

/// Node `n`'s relay, holding links to `linked`.
fn relay_of(n: u8, linked: &[u8]) -> (Relay, RelayPort) {
    let (relay, port, _) = Relay::new(id(n));
    for &p in linked {
        relay.links().insert(id(p));
    }
    (relay, port)
}

#[test]
fn relay_addresses_round_trip_and_refuse_what_is_not_one() {
    let one = via_address(&[id(1)]);
    let two = via_address(&[id(1), id(2)]);
    assert!(one.as_str().starts_with("rtc:via:") && one.as_str().len() == 8 + 64);
    assert_eq!(parse_via(&one), Some(vec![id(1)]));
    assert_eq!(parse_via(&two), Some(vec![id(1), id(2)]));
    assert_eq!(parse_via(&via_address(&[id(1), id(2), id(3)])), None, "three relays are too many");
    assert_eq!(parse_via(&Address::new("rtc:ws://127.0.0.1:1/ws")), None);
    assert_eq!(parse_via(&Address::new("rtc:via:")), None);
    assert_eq!(parse_via(&Address::new("rtc:via:00ff")), None, "a short id");
}

#[test]
fn messages_follow_their_route_and_nothing_else() {
    // Node 2 relays between 1 and 3 (it holds links to both).
    let (r2, _) = relay_of(2, &[1, 3]);
    assert_eq!(r2.route(id(1), &relayed(1, 3, &[2], 0)), Verdict::Forward(id(3)));
    assert_eq!(r2.route(id(4), &relayed(1, 3, &[2], 0)), Verdict::Drop("not from the previous hop of its route"));
    assert_eq!(r2.route(id(1), &relayed(1, 3, &[5], 0)), Verdict::Drop("we are not its next relay"));
    assert_eq!(r2.route(id(1), &relayed(1, 6, &[2], 0)), Verdict::NoLink);
    // The first of two relays passes it to the second; the second to the addressee.
    assert_eq!(r2.route(id(1), &relayed(1, 9, &[2, 3], 0)), Verdict::Forward(id(3)));
    let (r3, _) = relay_of(3, &[2, 9]);
    assert_eq!(r3.route(id(2), &relayed(1, 9, &[2, 3], 1)), Verdict::Forward(id(9)));
    assert_eq!(r3.route(id(1), &relayed(1, 9, &[2, 3], 1)), Verdict::Drop("not from the previous hop of its route"));
    // At its end.
    let (r9, _) = relay_of(9, &[3]);
    assert_eq!(r9.route(id(3), &relayed(1, 9, &[2, 3], 2)), Verdict::Deliver);
    assert_eq!(r9.route(id(3), &relayed(1, 8, &[2, 3], 2)), Verdict::Drop("not for us"));
    // Malformed: three relays, a hop past the route, a payload too large, a route through an end.
    assert_eq!(r2.route(id(1), &relayed(1, 3, &[2, 4, 5], 0)), Verdict::Drop("malformed"));
    assert_eq!(r9.route(id(3), &relayed(1, 9, &[3], 2)), Verdict::Drop("malformed"));
    let mut big = relayed(1, 3, &[2], 0);
    big.payload = vec![0; MAX_RELAY_PAYLOAD + 1];
    assert_eq!(r2.route(id(1), &big), Verdict::Drop("malformed"));
    assert_eq!(r2.route(id(1), &relayed(1, 1, &[2], 0)), Verdict::Drop("a route through its own ends"));
    assert_eq!(r2.route(id(1), &relayed(1, 3, &[2, 1], 0)), Verdict::Drop("a route through its own ends"));
}

#[test]
fn relaying_is_budgeted_by_link_and_by_sender() {
    let (mut r2, _) = relay_of(2, &[3, 4, 5]);
    let mut forwarded = 0;
    for _ in 0..1000 {
        forwarded += usize::from(r2.received(id(3), relayed(3, 4, &[2], 0), 0).is_some());
    }
    assert_eq!(forwarded, SOURCE_BURST as usize, "one sender: its burst, then nothing within the same moment");
    assert_eq!(r2.stats.over_budget, 1000 - u64::from(SOURCE_BURST));
    // A second later the sender has its rate again.
    let later: usize =
        (0..1000).map(|_| usize::from(r2.received(id(3), relayed(3, 4, &[2], 0), 1_000).is_some())).sum();
    assert_eq!(later, SOURCE_RATE as usize);
    // Many senders behind one link (a relay of relays) share the link's budget.
    let (mut r9, _) = relay_of(9, &[2, 4]);
    let mut through = 0;
    for n in 0..200u8 {
        for _ in 0..4 {
            let m = Relayed { from: id(100 + (n % 100)), ..relayed(0, 4, &[2, 9], 1) };
            through += usize::from(r9.received(id(2), m, 0).is_some());
        }
    }
    assert_eq!(through, LINK_BURST as usize, "the link's burst");
}

#[test]
fn messages_for_us_reach_the_transport_and_ours_leave_by_a_link() {
    let (mut r9, mut port) = relay_of(9, &[3]);
    assert_eq!(r9.received(id(3), relayed(1, 9, &[2, 3], 2), 0), None);
    let got = port.inbound.try_recv().expect("delivered");
    assert_eq!((got.from, got.route.clone()), (id(1), vec![id(2), id(3)]));
    assert_eq!(r9.stats.delivered, 1);
    // Replying: along the route reversed, first to the link that holds its first relay.
    let reply = relayed(9, 1, &[3, 2], 0);
    let (first, msg) = r9.send(reply.clone()).expect("a link to the first relay");
    assert_eq!(first, id(3));
    assert_eq!(msg, Message::Relay(Box::new(reply)));
    // Not through a relay we hold no link to, not as someone else, not with three relays.
    assert_eq!(r9.send(Relayed { route: vec![id(4)], ..relayed(9, 1, &[], 0) }), None);
    let notice = port.inbound.try_recv().expect("our transport hears that it went nowhere");
    assert_eq!((notice.to, notice.undeliverable, notice.payload.len()), (id(9), Some(id(1)), 0));
    assert_eq!((notice.from, notice.route), (id(9), vec![id(4)]), "from us, naming the hop without a link");
    assert_eq!(r9.send(relayed(8, 1, &[3], 0)), None);
    assert_eq!(r9.send(relayed(9, 1, &[3, 4, 5], 0)), None);
    assert_eq!(r9.stats.sent, 1);
    assert_eq!(r9.stats.unroutable, 3);
}

#[test]
fn a_node_vouches_only_for_its_own_links() {
    let (mut r2, _) = relay_of(2, &[3, 4]);
    let rtc = |s: &str| Address::new(format!("rtc:ws://{s}/ws"));
    // Linked to 3: through us.
    let mut c3 = Contact { id: id(3), addrs: vec![rtc("a"), via_address(&[id(7)])] };
    r2.annotate(&mut c3, 4);
    assert_eq!(c3.addrs, vec![rtc("a"), via_address(&[id(2)])], "the relay address it came with is not passed on");
    // Not linked to 5, but 4 (linked to us) said it holds a link to 5: through us and 4.
    r2.learn(&[Contact { id: id(5), addrs: vec![rtc("b"), via_address(&[id(4)])] }], 1);
    let mut c5 = Contact { id: id(5), addrs: vec![rtc("b")] };
    r2.annotate(&mut c5, 4);
    assert_eq!(c5.addrs, vec![rtc("b"), via_address(&[id(2), id(4)])]);
    assert_eq!(
        r2.with_hints(Contact { id: id(5), addrs: vec![rtc("b")] }).addrs,
        vec![rtc("b"), via_address(&[id(4)])]
    );
    // No way to it, or not a signaled node: nothing added; a full list makes room for ours.
    let mut c6 = Contact { id: id(6), addrs: vec![rtc("c")] };
    r2.annotate(&mut c6, 4);
    assert_eq!(c6.addrs, vec![rtc("c")]);
    let mut tcp = Contact { id: id(3), addrs: vec![Address::new("tcp:127.0.0.1:1")] };
    r2.annotate(&mut tcp, 4);
    assert_eq!(tcp.addrs.len(), 1);
    let mut full = Contact { id: id(3), addrs: vec![rtc("a"); 4] };
    r2.annotate(&mut full, 4);
    assert_eq!(full.addrs.len(), 4);
    assert_eq!(full.addrs[3], via_address(&[id(2)]));
}

#[test]
fn hints_are_bounded() {
    let (mut r, _) = relay_of(1, &[]);
    for n in 0..(MAX_HINTS as u32 + 50) {
        let c = Contact {
            id: NodeId::from_public_key(&[[n as u8; 16], [(n >> 8) as u8; 16]].concat().try_into().unwrap()),
            addrs: vec![via_address(&[id(2)]), via_address(&[id(3)]), via_address(&[id(4)])],
        };
        r.learn(&[c], u64::from(n));
    }
    assert_eq!(r.hints.len(), MAX_HINTS);
    assert!(r.hints.values().all(|(h, _)| h.len() == HINTS_PER_NODE));
}

#[test]
fn a_relay_without_a_link_to_the_next_hop_tells_the_sender_back_along_the_route() {
    // 1 → 2 → 3 → 9, but 3 holds no link to 9.
    let (mut r3, _) = relay_of(3, &[2]);
    let (back_to, msg) = r3.received(id(2), relayed(1, 9, &[2, 3], 1), 0).expect("a notice");
    assert_eq!(back_to, id(2));
    let Message::Relay(notice) = msg else { panic!("a relayed notice") };
    let expected =
        Relayed { from: id(3), to: id(1), route: vec![id(2)], hop: 0, payload: vec![], undeliverable: Some(id(9)) };
    assert_eq!(*notice, expected);
    // 2 passes it on to 1, which hands it to its transport.
    let (mut r2, _) = relay_of(2, &[1, 3]);
    let (next, msg) = r2.received(id(3), *notice, 0).expect("passed on");
    assert_eq!(next, id(1));
    let Message::Relay(mut notice) = msg else { panic!("a relayed notice") };
    assert_eq!(notice.hop, 1);
    let (mut r1, mut port) = relay_of(1, &[2]);
    assert_eq!(r1.received(id(2), (*notice).clone(), 0), None);
    assert_eq!(port.inbound.try_recv().expect("delivered").undeliverable, Some(id(9)));
    // A notice that cannot be passed on is dropped, not answered; one with a payload is malformed.
    let (mut lonely, _) = relay_of(2, &[3]);
    notice.hop = 0;
    assert_eq!(lonely.received(id(3), *notice.clone(), 0), None);
    notice.payload = vec![1];
    assert_eq!(r2.route(id(3), &notice), Verdict::Drop("malformed"));
}
