//! Native WebRTC links through a signaling relay on 127.0.0.1 (host candidates on loopback only).

mod common;

use dht_core::Contact;
use dht_driver::{start, DriverConfig, NodeHandle, SystemClock, Transport, TransportError};
use dht_link::Identity;
use futures::{SinkExt, StreamExt};
use kvstore::MemoryStore;
use std::time::{Duration, Instant};
use transport_webrtc::{RtcConfig, WebRtcTransport};

async fn signaling() -> String {
    common::relay().await
}

async fn node(url: &str, seed: u64) -> (NodeHandle, Contact) {
    let identity = Identity::generate().unwrap();
    let id = identity.node_id();
    let transport = WebRtcTransport::start(identity, vec![], RtcConfig::loopback(url)).await.unwrap();
    let contact = Contact { id, addrs: transport.local_addrs().to_vec() };
    let (handle, task) = start(DriverConfig::new(contact.clone(), seed), transport, MemoryStore::new(), SystemClock);
    tokio::task::spawn_local(task);
    (handle, contact)
}

#[tokio::test(flavor = "current_thread")]
async fn a_link_opens_through_signaling_and_carries_messages() {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let url = signaling().await;
            let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
            let ta = WebRtcTransport::start(a.clone(), vec![], RtcConfig::loopback(&url)).await.unwrap();
            let mut tb = WebRtcTransport::start(b.clone(), vec![], RtcConfig::loopback(&url)).await.unwrap();
            let mut b_incoming = tb.incoming();
            let peers = ta.signaling().peers(5).await;
            assert_eq!(peers.len(), 1);
            let contact_b = Contact { id: b.node_id(), addrs: tb.local_addrs().to_vec() };

            let t0 = Instant::now();
            let mut la = ta.dial(&contact_b).await.expect("dial over WebRTC");
            let setup = t0.elapsed();
            let mut lb = tokio::time::timeout(Duration::from_secs(10), b_incoming.next()).await.unwrap().unwrap();
            eprintln!("link setup (offer → handshake done): {setup:?}");
            assert_eq!(la.remote.id, b.node_id());
            assert_eq!(lb.remote.id, a.node_id());

            let msg = dht_core::Message::Request { id: dht_core::RequestId(1), body: dht_core::Request::Ping };
            la.tx.send(msg.clone()).await.unwrap();
            assert_eq!(tokio::time::timeout(Duration::from_secs(5), lb.rx.next()).await.unwrap().unwrap(), msg);
            let reply = dht_core::Message::Response { id: dht_core::RequestId(1), body: dht_core::Response::Pong };
            lb.tx.send(reply.clone()).await.unwrap();
            assert_eq!(tokio::time::timeout(Duration::from_secs(5), la.rx.next()).await.unwrap().unwrap(), reply);

            // A peer on another signaling server, or with no rtc address, is not this transport's to dial.
            let elsewhere = Contact { id: b.node_id(), addrs: vec![transport_webrtc::address("ws://10.0.0.1:1/ws")] };
            assert!(matches!(ta.dial(&elsewhere).await, Err(TransportError::NoAddress(_))));
            // An id nobody registered: the server says so and the dial fails fast.
            let ghost = Contact { id: dht_core::NodeId::from_bytes([3; 32]), addrs: tb.local_addrs().to_vec() };
            let t1 = Instant::now();
            assert!(ta.dial(&ghost).await.is_err());
            assert!(t1.elapsed() < Duration::from_secs(5), "failed fast: {:?}", t1.elapsed());

            // Each end knows how its link travels: host candidates on loopback, over UDP, who dialed, and
            // how long it took; the path is forgotten once the link ends.
            let path_a = ta.paths().get(&b.node_id()).expect("the dialer's path");
            let path_b = tb.paths().get(&a.node_id()).expect("the answerer's path");
            eprintln!("paths: {path_a:?} / {path_b:?}");
            for (path, dialed) in [(&path_a, true), (&path_b, false)] {
                assert!(matches!(path.kind(), "host" | "prflx"), "{path:?}");
                assert_eq!((path.protocol.as_str(), path.dialed), ("udp", dialed));
                assert!(path.setup_ms <= setup.as_millis() as u64 + 50, "{path:?} vs {setup:?}");
            }
            assert_eq!(ta.paths().all().len(), 1);
            drop((la, lb));
            let t2 = Instant::now();
            while ta.paths().get(&b.node_id()).is_some() || tb.paths().get(&a.node_id()).is_some() {
                assert!(t2.elapsed() < Duration::from_secs(10), "paths kept after the links ended");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
}

#[tokio::test(flavor = "current_thread")]
async fn driver_nodes_put_and_get_over_webrtc() {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let url = signaling().await;
            let mut nodes = Vec::new();
            for seed in 0..4 {
                nodes.push(node(&url, seed).await);
            }
            let seed_contact = nodes[0].1.clone();
            for (h, _) in &nodes[1..] {
                assert!(!h.bootstrap(vec![seed_contact.clone()]).await.unwrap().is_empty());
            }
            for i in 0..6u32 {
                let out = nodes[(i % 4) as usize].0.put_signed(&i.to_be_bytes(), vec![i as u8; 40_000], None).await;
                let out = out.unwrap();
                assert!(out.acks >= 3, "put {i}: {out:?}");
            }
            for i in 0..6u32 {
                let owner = nodes[(i % 4) as usize].0.owner();
                let got = nodes[((i + 1) % 4) as usize].0.get_signed(owner, &i.to_be_bytes()).await.unwrap();
                assert_eq!(got.map(|r| r.value), Some(vec![i as u8; 40_000]), "get {i}");
            }
        })
        .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_peer_that_fails_the_in_channel_handshake_is_dropped() {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let url = signaling().await;
            let alice = Identity::generate().unwrap();
            let (mallory, other_key) = (Identity::generate().unwrap(), Identity::generate().unwrap());
            let mut ta = WebRtcTransport::start(alice.clone(), vec![], RtcConfig::loopback(&url)).await.unwrap();
            let mut a_incoming = ta.incoming();
            // Registered (with proof) as Mallory, but runs the Noise handshake with another key.
            let tm =
                WebRtcTransport::start_split(mallory.clone(), other_key.clone(), vec![], RtcConfig::loopback(&url))
                    .await
                    .unwrap();

            // Alice dials Mallory's id: WebRTC connects, the handshake proves another id, the dial fails.
            let m = Contact { id: mallory.node_id(), addrs: tm.local_addrs().to_vec() };
            let err = ta.dial(&m).await.expect_err("impostor refused");
            let (dialed, proven) = (mallory.node_id(), other_key.node_id());
            assert!(
                matches!(err, TransportError::WrongPeer { expected, actual } if expected == dialed && actual == proven),
                "{err}"
            );

            // Mallory dials Alice: the server says the offer is from Mallory, the handshake proves another
            // key; Alice drops the link and hands nothing to her node.
            let a = Contact { id: alice.node_id(), addrs: ta.local_addrs().to_vec() };
            let _ = tm.dial(&a).await;
            let nothing = tokio::time::timeout(Duration::from_secs(3), a_incoming.next()).await;
            assert!(nothing.is_err(), "no link reaches Alice's node");
        })
        .await;
}

/// One peer firing offers at a node: at most `max_pending_per_peer` (2) are answered at once, the rest
/// refused at once with a reason (before, one peer could hold all 64 setup slots).
#[tokio::test(flavor = "current_thread")]
async fn one_peers_offers_are_answered_two_at_a_time() {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let url = signaling().await;
            let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
            let flooder = WebRtcTransport::start(a, vec![], RtcConfig::loopback(&url)).await.unwrap();
            let mut victim = WebRtcTransport::start(b.clone(), vec![], RtcConfig::loopback(&url)).await.unwrap();
            let mut incoming = victim.incoming();
            tokio::task::spawn_local(async move { while incoming.next().await.is_some() {} });
            let target = Contact { id: b.node_id(), addrs: victim.local_addrs().to_vec() };
            let dials: Vec<_> = (0..6).map(|_| flooder.dial(&target)).collect();
            let results = futures::future::join_all(dials).await;
            let refused = results
                .iter()
                .filter(|r| matches!(r, Err(TransportError::Refused(why)) if why.contains("from you")))
                .count();
            let opened = results.iter().filter(|r| r.is_ok()).count();
            eprintln!("6 offers at once from one peer: {opened} links, {refused} refused");
            assert!(refused >= 4 && opened <= 2, "{opened} opened, {refused} refused: {results:?}");
        })
        .await;
}

/// A node with a lifetime budget of 10 peer connections (a browser page's cap, scaled down) answers
/// offers until 90 % of it is spent, refuses the rest, and keeps the last for a dial of its own; past
/// the budget its dials fail at once.
#[tokio::test(flavor = "current_thread")]
async fn a_connection_budget_keeps_its_last_tenth_for_our_own_dials() {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let url = signaling().await;
            let ids: Vec<Identity> = (0..3).map(|_| Identity::generate().unwrap()).collect();
            let flooder = WebRtcTransport::start(ids[0].clone(), vec![], RtcConfig::loopback(&url)).await.unwrap();
            let config = RtcConfig { connection_budget: Some(10), ..RtcConfig::loopback(&url) };
            let mut victim = WebRtcTransport::start(ids[1].clone(), vec![], config).await.unwrap();
            let mut other = WebRtcTransport::start(ids[2].clone(), vec![], RtcConfig::loopback(&url)).await.unwrap();
            for t in [&mut victim, &mut other] {
                let mut incoming = t.incoming();
                tokio::task::spawn_local(async move { while incoming.next().await.is_some() {} });
            }
            let target = Contact { id: ids[1].node_id(), addrs: victim.local_addrs().to_vec() };
            let mut answered = 0;
            let mut refused = 0;
            for _ in 0..11 {
                match flooder.dial(&target).await {
                    Ok(_) => answered += 1,
                    Err(TransportError::Refused(why)) if why.contains("budget") => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!((answered, refused), (9, 2));
            assert_eq!(victim.connections_made(), 9);
            let third = Contact { id: ids[2].node_id(), addrs: other.local_addrs().to_vec() };
            assert!(victim.dial(&third).await.is_ok(), "the last tenth is ours");
            let spent = victim.dial(&third).await;
            assert!(matches!(&spent, Err(TransportError::Refused(why)) if why.contains("budget")), "{spent:?}");
            assert_eq!(victim.connections_made(), 10);
        })
        .await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_first_signaling_server_that_answers_is_used() {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let url = signaling().await;
            // A port nobody listens on.
            let dead = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                format!("ws://{}/ws", l.local_addr().unwrap())
            };
            let identity = Identity::generate().unwrap();
            let config = RtcConfig { more_signaling: vec![url.clone()], ..RtcConfig::loopback(&dead) };
            let t = WebRtcTransport::start(identity.clone(), vec![], config).await.expect("the second answers");
            assert_eq!(t.local_addrs()[0], transport_webrtc::address(&url), "registered where it answered");
            assert_eq!(t.signaling().peers(5).await.len(), 0, "registered and asking that server");

            let config = RtcConfig { more_signaling: vec![dead.clone()], ..RtcConfig::loopback(&dead) };
            match WebRtcTransport::start(identity, vec![], config).await {
                Err(TransportError::Signaling(why)) => assert_eq!(why.matches(&dead).count(), 2, "{why}"),
                Err(other) => panic!("unexpected error {other:?}"),
                Ok(_) => panic!("no server answers, yet started"),
            }
        })
        .await;
}

/// A node whose signaling server goes away registers on the next one it was given, under that server's
/// `rtc:` address, and a node registered there finds it and links with it through that server.
#[tokio::test(flavor = "current_thread")]
async fn a_node_moves_to_the_next_signaling_server_when_its_own_goes_away() {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let first = common::stoppable_relay().await;
            let second = signaling().await;
            let a = Identity::generate().unwrap();
            let config = RtcConfig { more_signaling: vec![second.clone()], ..RtcConfig::loopback(&first.url) };
            let mut ta = WebRtcTransport::start(a.clone(), vec![], config).await.unwrap();
            let mut a_incoming = ta.incoming();
            assert_eq!(ta.local_address(), transport_webrtc::address(&first.url));
            first.stop();
            let t0 = Instant::now();
            while ta.local_address() != transport_webrtc::address(&second) || !ta.signaling().is_connected() {
                assert!(t0.elapsed() < Duration::from_secs(10), "not registered on the second server");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!("registered on the second server {:?} after the first stopped", t0.elapsed());
            assert_eq!(ta.local_addrs(), vec![transport_webrtc::address(&second)]);

            let b = Identity::generate().unwrap();
            let tb = WebRtcTransport::start(b.clone(), vec![], RtcConfig::loopback(&second)).await.unwrap();
            let peers = tb.signaling().peers(5).await;
            let found = peers.into_iter().map(Contact::from).find(|c| c.id == a.node_id()).expect("a is listed");
            assert_eq!(found.addrs, vec![transport_webrtc::address(&second)], "under the second server's address");
            let link = tb.dial(&found).await.expect("dial through the second server");
            assert_eq!(link.remote.id, a.node_id());
            let la = tokio::time::timeout(Duration::from_secs(10), a_incoming.next()).await.unwrap().unwrap();
            assert_eq!(la.remote.id, b.node_id());
            assert_eq!(tb.paths().get(&a.node_id()).map(|p| p.relays), Some(0), "signaled by the server");
        })
        .await;
}

/// An offer the node cannot answer (its SDP is not SDP) is rejected with the reason at once: the dialer
/// does not wait for an answer that never comes.
#[tokio::test(flavor = "current_thread")]
async fn an_offer_that_cannot_be_answered_is_rejected_at_once() {
    use async_tungstenite::tungstenite::Message;
    use signaling_protocol::{prove, solve_work, ClientMsg, Hex32, ServerMsg};
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let url = signaling().await;
            let b = Identity::generate().unwrap();
            let mut node = WebRtcTransport::start(b.clone(), vec![], RtcConfig::loopback(&url)).await.unwrap();
            let mut incoming = node.incoming();
            tokio::task::spawn_local(async move { while incoming.next().await.is_some() {} });
            // A raw client of the signaling protocol, as a hostile or broken peer would be.
            let (mut ws, _) = async_tungstenite::tokio::connect_async(&url).await.unwrap();
            let next = |text: Option<Result<Message, _>>| match text {
                Some(Ok(Message::Text(t))) => ServerMsg::decode(t.as_str()).unwrap(),
                other => panic!("unexpected {other:?}"),
            };
            let ServerMsg::Challenge { nonce, key, work } = next(ws.next().await) else { panic!("no challenge") };
            let a = Identity::generate().unwrap();
            let (public_key, proof) = prove(a.private_bytes(), &nonce, &key).unwrap();
            let work = solve_work(&nonce, &public_key, work).unwrap();
            let register = ClientMsg::Register { public_key, proof, addrs: vec![], work };
            ws.send(Message::text(register.encode())).await.unwrap();
            assert!(matches!(next(ws.next().await), ServerMsg::Registered { .. }));
            let offer = transport_webrtc::Signal::Offer { session: 7, sdp: "not sdp".into() };
            let to = Hex32(*b.node_id().as_bytes());
            let signal = ClientMsg::Signal { to, data: serde_json::to_string(&offer).unwrap() };
            let sent = Instant::now();
            ws.send(Message::text(signal.encode())).await.unwrap();
            let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an answer at once");
            let ServerMsg::Signal { data, .. } = next(reply) else { panic!("no signal back") };
            let back: transport_webrtc::Signal = serde_json::from_str(&data).unwrap();
            match back {
                transport_webrtc::Signal::Reject { session: 7, reason } => {
                    assert!(reason.starts_with("cannot answer"), "{reason}")
                }
                other => panic!("expected a rejection, got {other:?}"),
            }
            eprintln!("rejected after {:?}", sent.elapsed());
        })
        .await;
}
