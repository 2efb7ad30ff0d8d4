//! Records only their owner can change, on real processes: three `dht-node`s; a node that is not the owner
//! tries through its control socket, and a raw peer (an authenticated link of its own) tries to forge,
//! replay, shorten and squat the owner's record at every node. All refused: the owner's value survives.

mod common;

use common::{ctl, spawn, wait_for_peers, Proc};
use dht_core::{Contact, Message, NodeId, OwnerKey, Record, Request, RequestId, Response, StoreRefusal};
use dht_driver::{PeerLink, Transport};
use dht_link::Identity;
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use transport_tcp::{TcpConfig, TcpTransport};

/// The node's id and TCP address, from `ID`.
fn contact(p: &Proc) -> Contact {
    let id = ctl(p, "ID");
    let mut words = id.split(' ').skip(1);
    let node: NodeId = words.next().expect("an id").parse().expect("a hex id");
    let addrs = words.filter(|a| a.starts_with("tcp:")).map(dht_core::Address::new).collect();
    Contact { id: node, addrs }
}

/// One request on `link`, and its answer (bounded in time).
async fn ask(link: &mut PeerLink, id: u64, body: Request) -> Response {
    link.tx.send(Message::Request { id: RequestId(id), body }).await.expect("the link is open");
    let answer = async {
        while let Some(msg) = link.rx.next().await {
            if let Message::Response { id: got, body } = msg {
                if got == RequestId(id) {
                    return body;
                }
            }
        }
        panic!("the link closed before answering request {id}");
    };
    tokio::time::timeout(Duration::from_secs(10), answer).await.expect("an answer within 10 s")
}

fn refusal(answer: Response) -> Option<StoreRefusal> {
    match answer {
        Response::StoreAck { refused } => refused,
        other => panic!("expected a store ack, got {other:?}"),
    }
}

fn store(record: &Record, ttl_secs: u32) -> Request {
    Request::Store { record: Box::new(record.clone()), ttl_secs, cas: None }
}

#[tokio::test(flavor = "current_thread")]
async fn only_the_owner_changes_a_record() {
    let root = tempfile::tempdir().unwrap();
    let owner_node = spawn(&root.path().join("owner"), None);
    let seed = contact(&owner_node).addrs[0].as_str().strip_prefix("tcp:").unwrap().to_owned();
    let others: Vec<Proc> = (0..2).map(|i| spawn(&root.path().join(format!("n{i}")), Some(&seed))).collect();
    let nodes: Vec<&Proc> = std::iter::once(&owner_node).chain(&others).collect();
    for p in &nodes {
        wait_for_peers(p, 2);
    }
    let owner: OwnerKey = ctl(&owner_node, "OWNER").strip_prefix("OWNER ").unwrap().parse().unwrap();
    let put = ctl(&owner_node, "PUT profile first");
    assert!(put.starts_with("OK seq=1 acks=2 of=2"), "{put}");
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let raw = TcpTransport::bind(
                "127.0.0.1:0".parse().unwrap(),
                Identity::generate().unwrap(),
                vec![],
                TcpConfig::default(),
            )
            .await
            .unwrap();
            let mut links = Vec::new();
            for p in &nodes {
                links.push(raw.dial(&contact(p)).await.expect("the raw peer links up"));
            }
            // The raw peer keeps a copy of version 1, as any holder could.
            let key = owner.record_key(b"profile");
            let Response::Value { record: first, .. } = ask(&mut links[1], 1, Request::FindValue { key }).await else {
                panic!("node 1 holds version 1");
            };
            assert_eq!(first.seq(), Some(1));
            let put = ctl(&owner_node, "PUT profile second");
            assert!(put.starts_with("OK seq=2 acks=2 of=2"), "{put}");
            let Response::Value { record: second, .. } = ask(&mut links[2], 2, Request::FindValue { key }).await else {
                panic!("node 2 holds version 2");
            };

            // Through a control socket: another node writes only its own record of that name, and a
            // compare-and-swap on the owner against a version it does not hold fails.
            assert!(ctl(&others[0], "PUT profile mine").starts_with("OK seq=1"));
            let cas = ctl(&owner_node, "PUT --cas 1 profile third");
            assert!(cas.starts_with("ERR") && cas.contains("held is 2"), "{cas}");

            // Through a raw peer, at every node: a replay of version 1, a forged version 3, version 2 with a
            // one-second TTL, and an unsigned value under the record's key.
            let mut forged = first.clone();
            forged.value = b"evil".to_vec();
            forged.signed.as_mut().unwrap().seq = 3;
            let squat = Record::unchecked(key, b"evil".to_vec());
            for (n, link) in links.iter_mut().enumerate() {
                let base = 100 * (n as u64 + 1);
                assert_eq!(
                    refusal(ask(link, base, store(&first, 3600)).await),
                    Some(StoreRefusal::Stale { current: 2 })
                );
                assert_eq!(refusal(ask(link, base + 1, store(&forged, 3600)).await), Some(StoreRefusal::BadSignature));
                assert_eq!(refusal(ask(link, base + 2, store(&second, 1)).await), None, "taken, its expiry kept");
                assert_eq!(refusal(ask(link, base + 3, store(&squat, 3600)).await), Some(StoreRefusal::Invalid));
            }
        })
        .await;
    // Past the one-second TTL, every node still holds version 2 and every get returns it.
    std::thread::sleep(Duration::from_millis(2500));
    for p in &nodes {
        assert_eq!(ctl(p, &format!("LOCAL profile {owner}")), "VALUE second", "held at {}", p.dir.display());
        assert_eq!(ctl(p, &format!("GET profile {owner}")), "VALUE second");
    }
    assert_eq!(
        ctl(&others[1], &format!("GET profile {}", ctl(&others[0], "OWNER").trim_start_matches("OWNER "))),
        "VALUE mine"
    );
}
