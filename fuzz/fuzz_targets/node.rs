//! Sequences of messages from several made-up peers, storage results, timeouts and commands never panic
//! a `Node`, and keep its invariants: requests in flight, records and queued outputs stay bounded, every
//! request it sends goes to another peer, and no request is answered more often than it was received.
#![no_main]

use arbitrary::Arbitrary;
use dht_core::{
    Config, Contact, Instant, Key, Message, Node, NodeId, Output, Record, Request, RequestId, Response, SigningKey,
    StoreOp, StoreOpId, StoreRefusal, StoreResult,
};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::time::Duration;

const PEERS: u8 = 12;
const MAX_PENDING: usize = 16;
const MAX_RECORDS: usize = 6;
const MAX_STORE_OPS: usize = 4;

#[derive(Debug, Arbitrary)]
enum Op {
    Request {
        peer: u8,
        id: u8,
        body: Req,
    },
    /// An answer to the `nth` request sent to `peer` still open (or to a made-up id when there is none).
    Response {
        peer: u8,
        nth: u8,
        body: Resp,
    },
    /// A storage operation ends (the `nth` open one).
    StoreDone {
        nth: u8,
        outcome: Outcome,
    },
    Advance {
        ms: u16,
    },
    FindNode {
        target: u8,
    },
    Put {
        record: Rec,
        cas: Option<u8>,
    },
    Get {
        key: u8,
    },
    AddContact {
        peer: u8,
    },
}

/// A record of some kind: immutable, signed by one of two owners (under one of four names), signed but
/// tampered with, or unsigned under a made-up key.
#[derive(Debug, Arbitrary)]
enum Rec {
    Immutable { byte: u8, len: u16 },
    Signed { owner: bool, name: u8, seq: u8, byte: u8, len: u16 },
    Tampered { name: u8, seq: u8 },
    Unchecked { key: u8, len: u16 },
}

#[derive(Debug, Arbitrary)]
enum Req {
    Ping,
    FindNode { target: u8 },
    FindValue { key: u8 },
    Store { record: Rec, ttl_secs: u32, cas: Option<u8> },
}

#[derive(Debug, Arbitrary)]
enum Resp {
    Pong,
    Nodes { contacts: Vec<u8> },
    Value { record: Rec, ttl_secs: u32, contacts: Vec<u8> },
    StoreAck { refused: Option<u8> },
}

#[derive(Debug, Arbitrary)]
enum Outcome {
    Done,
    Found { record: Rec },
    Missing,
    Failed,
}

fn peer(n: u8) -> NodeId {
    NodeId::from_public_key(&[n % PEERS + 1; 32])
}

/// The keys peers ask about: those of immutable records of one byte, and of the signed records' names.
fn key(n: u8) -> Key {
    match n % 3 {
        0 => Key::from_name(&[n]),
        _ => record(Rec::Signed { owner: n % 2 == 0, name: n, seq: 0, byte: 0, len: 0 }).key,
    }
}

fn record(r: Rec) -> Record {
    let signer = |owner: bool| SigningKey::from_bytes(&[if owner { 1 } else { 2 }; 32]);
    match r {
        Rec::Immutable { byte, len } => Record::immutable(vec![byte; usize::from(len) % 2048]),
        Rec::Signed { owner, name, seq, byte, len } => {
            Record::signed(&signer(owner), &[name % 4], u64::from(seq), vec![byte; usize::from(len) % 2048])
                .expect("a one-byte salt")
        }
        Rec::Tampered { name, seq } => {
            let mut r = Record::signed(&signer(true), &[name % 4], u64::from(seq), b"value".to_vec())
                .expect("a one-byte salt");
            r.value = b"other".to_vec();
            r
        }
        Rec::Unchecked { key: k, len } => Record::unchecked(key(k), vec![k; usize::from(len) % 2048]),
    }
}

fn refusal(n: u8) -> StoreRefusal {
    match n % 6 {
        0 => StoreRefusal::Full,
        1 => StoreRefusal::Stale { current: u64::from(n) },
        2 => StoreRefusal::CasFailed { current: u64::from(n) },
        3 => StoreRefusal::BadSignature,
        4 => StoreRefusal::Quota,
        _ => StoreRefusal::Busy,
    }
}

fn contact(n: u8) -> Contact {
    Contact { id: peer(n), addrs: vec![dht_core::Address::new(format!("tcp:127.0.0.1:{}", 4000 + u16::from(n)))] }
}

fn request(body: Req) -> Request {
    match body {
        Req::Ping => Request::Ping,
        Req::FindNode { target } => Request::FindNode { target: peer(target) },
        Req::FindValue { key: k } => Request::FindValue { key: key(k) },
        Req::Store { record: r, ttl_secs, cas } => {
            Request::Store { record: Box::new(record(r)), ttl_secs, cas: cas.map(u64::from) }
        }
    }
}

fn response(body: Resp) -> Response {
    match body {
        Resp::Pong => Response::Pong,
        Resp::Nodes { contacts } => Response::Nodes { closer: contacts.into_iter().map(contact).collect() },
        Resp::Value { record: r, ttl_secs, contacts } => {
            Response::Value { record: Box::new(record(r)), ttl_secs, closer: contacts.into_iter().map(contact).collect() }
        }
        Resp::StoreAck { refused } => Response::StoreAck { refused: refused.map(refusal) },
    }
}

/// The node and what its peers and store have seen of it.
struct World {
    node: Node,
    now: Instant,
    /// Requests the node sent and nobody answered yet, by peer.
    open: HashMap<NodeId, Vec<RequestId>>,
    /// Storage operations not answered yet.
    store_ops: Vec<(StoreOpId, StoreOp)>,
    /// Requests received and answers sent, per (peer, request id).
    received: HashMap<(NodeId, RequestId), (u32, u32)>,
    /// Keys we put ourselves: our own records are not held against `max_records`.
    own: std::collections::HashSet<Key>,
}

impl World {
    fn new() -> Self {
        let mut config = Config::default();
        config.k = 4;
        config.alpha = 2;
        config.max_pending_requests = MAX_PENDING;
        config.max_records = MAX_RECORDS;
        config.max_pending_store_ops = MAX_STORE_OPS;
        config.max_record_size = 1024;
        config.max_lookup_candidates = 16;
        config.max_contacts_per_reply = 8;
        config.request_retries = 1;
        let config = config.validate().expect("the fuzzer's configuration is valid");
        let now = Instant::from_millis(1_000_000);
        let node = Node::new(config, Contact::bare(NodeId::from_public_key(&[0; 32])), 1, now);
        World {
            node,
            now,
            open: HashMap::new(),
            store_ops: Vec::new(),
            received: HashMap::new(),
            own: Default::default(),
        }
    }

    fn apply(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Request { peer: p, id, body } => {
                let rid = RequestId(u64::from(id));
                self.received.entry((peer(p), rid)).or_default().0 += 1;
                self.node.handle_message(now, contact(p), Message::Request { id: rid, body: request(body) });
            }
            Op::Response { peer: p, nth, body } => {
                let open = self.open.entry(peer(p)).or_default();
                let id = if open.is_empty() {
                    RequestId(u64::from(nth))
                } else {
                    open.remove(usize::from(nth) % open.len())
                };
                self.node.handle_message(now, contact(p), Message::Response { id, body: response(body) });
            }
            Op::StoreDone { nth, outcome } => {
                if self.store_ops.is_empty() {
                    return;
                }
                let (id, _) = self.store_ops.remove(usize::from(nth) % self.store_ops.len());
                let result = match outcome {
                    Outcome::Done => StoreResult::Done,
                    Outcome::Found { record: r } => StoreResult::Value(Some(record(r))),
                    Outcome::Missing => StoreResult::Value(None),
                    Outcome::Failed => StoreResult::Failed("disk full".into()),
                };
                self.node.handle_store_result(now, id, result);
            }
            Op::Advance { ms } => {
                self.now = now + Duration::from_millis(u64::from(ms) * 8);
                self.node.handle_timeout(self.now);
            }
            Op::FindNode { target } => {
                let _ = self.node.find_node(now, peer(target));
            }
            Op::Put { record: r, cas } => {
                let record = record(r);
                self.own.insert(record.key);
                let _ = self.node.put_cas(now, record, cas.map(u64::from));
            }
            Op::Get { key: k } => {
                let _ = self.node.get(now, key(k));
            }
            Op::AddContact { peer: p } => self.node.add_contact(now, contact(p)),
        }
    }

    /// Drains the outputs, checking each.
    fn drain(&mut self) {
        let mut count = 0;
        while let Some(out) = self.node.poll_output() {
            count += 1;
            match out {
                Output::Send { to, msg: Message::Request { id, .. } } => {
                    assert_ne!(&to.id, self.node.local_id(), "a request to ourselves");
                    self.open.entry(to.id).or_default().push(id);
                }
                Output::Send { to, msg: Message::Response { id, .. } } => {
                    let seen = self.received.get_mut(&(to.id, id)).expect("an answer to a request never received");
                    seen.1 += 1;
                    assert!(seen.1 <= seen.0, "request {id:?} of {:?} answered twice", to.id);
                }
                Output::Send { msg: Message::Relay(_), .. } => panic!("the node never sends relayed messages"),
                Output::Store { id, op } => self.store_ops.push((id, op)),
                Output::Event(_) => {}
            }
        }
        // One input causes at most a lookup's worth of requests, answers, store operations and events.
        assert!(count <= 4 * MAX_PENDING + 64, "{count} outputs from one input");
        assert!(self.node.pending_requests() <= MAX_PENDING, "requests in flight over the limit");
        assert!(self.node.record_count() <= MAX_RECORDS + self.own.len(), "records over the limit");
        if let Some(t) = self.node.poll_timeout() {
            assert!(t.as_millis() >= 1_000_000, "a deadline before the start");
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut world = World::new();
    for op in ops.into_iter().take(256) {
        world.apply(op);
        world.drain();
    }
});
