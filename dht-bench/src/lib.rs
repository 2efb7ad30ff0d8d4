//! # dht-bench
//!
//! The core benchmark: one `dht-core` node handling a stream of requests from many peers, codec included
//! (frames decoded from bytes, answers encoded to bytes), with the node's storage answered at once. The
//! workload is generated from a seed before timing, so the native build and the wasm32 build (run under
//! Node.js by `cargo xtask bench`) do the same work.
#![warn(missing_docs)]

use dht_core::{
    Config, Contact, Event, FrameDecoder, FrameEncoder, Instant, Key, MemoryRecords, Message, Node, NodeId, OutputSink,
    Record, Request, RequestId, StoreOp, StoreOpId, StoreResult,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Peers in the node's routing table, and senders of the requests.
const PEERS: usize = 2_000;

/// A prepared request stream.
pub struct Workload {
    seed: u64,
    local: NodeId,
    table: Vec<NodeId>,
    senders: Vec<NodeId>,
    frames: Vec<u8>,
    messages: usize,
}

fn id(rng: &mut ChaCha8Rng) -> NodeId {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    NodeId::from_bytes(b)
}

impl Workload {
    /// `messages` requests from `seed`: 70% FindNode, 15% FindValue, 10% Store of 100-byte records, 5% Ping.
    pub fn new(messages: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let local = id(&mut rng);
        let table: Vec<NodeId> = (0..PEERS).map(|_| id(&mut rng)).collect();
        let mut enc = FrameEncoder::new(1 << 20, usize::MAX);
        let mut senders = Vec::with_capacity(messages);
        let mut frames = Vec::new();
        for n in 0..messages {
            let body = match rng.next_u32() % 100 {
                0..70 => Request::FindNode { target: id(&mut rng) },
                70..85 => Request::FindValue { key: Key::from_bytes(*id(&mut rng).as_bytes()) },
                85..95 => {
                    let mut value = vec![0u8; 100];
                    rng.fill_bytes(&mut value);
                    let record = Record::immutable(value);
                    Request::Store { record: Box::new(record), ttl_secs: 3600, cas: None }
                }
                _ => Request::Ping,
            };
            enc.push(&Message::Request { id: RequestId(n as u64), body }).expect("requests encode");
            frames.extend_from_slice(enc.pending());
            let len = enc.pending().len();
            enc.advance(len);
            senders.push(table[(rng.next_u64() % PEERS as u64) as usize]);
        }
        Workload { seed, local, table, senders, frames, messages }
    }

    /// Requests in the stream.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Runs the stream through a fresh node (decode, handle, store, encode the answers).
    pub fn run(&self) -> RunStats {
        let mut now = Instant::from_millis(1_000_000);
        let config = Config::default().validate().expect("the default configuration is valid");
        let mut node = Node::new(config, Contact::bare(self.local), self.seed, now);
        for peer in &self.table {
            node.add_contact(now, Contact::bare(*peer));
        }
        let mut dec = FrameDecoder::new(1 << 20);
        let mut sink = BenchSink {
            enc: FrameEncoder::new(1 << 20, usize::MAX),
            store: MemoryRecords::new(),
            stats: RunStats::default(),
        };
        let mut n = 0;
        for chunk in self.frames.chunks(16 * 1024) {
            dec.feed(chunk);
            while let Ok(Some(msg)) = dec.next_frame() {
                if n % 100 == 0 {
                    now = now + core::time::Duration::from_millis(1);
                }
                node.handle_message(now, Contact::bare(self.senders[n]), msg);
                n += 1;
                node.pump(now, &mut sink);
            }
        }
        sink.stats.handled = n;
        sink.stats
    }
}

/// The benchmark's side of the node: answers are encoded to bytes (and counted), storage is in memory.
struct BenchSink {
    enc: FrameEncoder,
    store: MemoryRecords,
    stats: RunStats,
}

impl OutputSink for BenchSink {
    fn send(&mut self, _now: Instant, _to: Contact, msg: Message) {
        self.enc.push(&msg).expect("answers encode");
        let len = self.enc.pending().len();
        self.stats.answers += 1;
        self.stats.bytes += len as u64;
        self.enc.advance(len);
    }

    fn store(&mut self, _now: Instant, _id: StoreOpId, op: StoreOp) -> Option<StoreResult> {
        Some(self.store.apply(op))
    }

    fn event(&mut self, _now: Instant, _event: Event) {}
}

/// What a run did (also keeps the work from being optimized away).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Requests decoded and handled.
    pub handled: usize,
    /// Messages the node sent.
    pub answers: usize,
    /// Bytes of the frames it sent.
    pub bytes: u64,
}

/// The codec benchmark's stream: 200 × (FindNode, Nodes with 20 contacts, Store of 256 bytes), as the
/// criterion bench of dht-core. Returns the bytes and the number of frames.
pub fn codec_stream() -> (Vec<u8>, usize) {
    let mut enc = FrameEncoder::new(1 << 20, usize::MAX);
    let mut count = 0;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for i in 0..200u64 {
        let closer = (0..20).map(|_| Contact::bare(id(&mut rng))).collect();
        let msgs = [
            Message::Request { id: RequestId(i), body: Request::FindNode { target: id(&mut rng) } },
            Message::Response { id: RequestId(i), body: dht_core::Response::Nodes { closer } },
            Message::Request {
                id: RequestId(i),
                body: Request::Store {
                    record: Box::new(Record::immutable([i.to_be_bytes().as_slice(), &[7; 248]].concat())),
                    ttl_secs: 60,
                    cas: None,
                },
            },
        ];
        for m in &msgs {
            enc.push(m).expect("bench messages fit");
            count += 1;
        }
    }
    (enc.pending().to_vec(), count)
}

/// Decodes `bytes` fed in pieces of `chunk` bytes; returns the frames decoded.
pub fn decode_in_chunks(bytes: &[u8], chunk: usize) -> usize {
    let mut dec = FrameDecoder::new(1 << 20);
    let mut n = 0;
    for piece in bytes.chunks(chunk.max(1)) {
        dec.feed(piece);
        while let Ok(Some(m)) = dec.next_frame() {
            std::hint::black_box(&m);
            n += 1;
        }
    }
    n
}

/// Creates `count` identities whose ids carry `difficulty` bits of proof of work; returns the key pairs it
/// took in all.
pub fn make_ids(difficulty: u32, count: u32) -> u64 {
    (0..count).map(|_| dht_link::Identity::generate_with_work(difficulty).map(|(_, tries)| tries).unwrap_or(0)).sum()
}

/// `count` versions of one signed record of 256 bytes, signed.
pub fn sign_records(count: u32) -> Vec<dht_core::Record> {
    let key = dht_core::SigningKey::from_bytes(&[7; 32]);
    (0..count)
        .map(|seq| {
            dht_core::Record::signed(&key, b"bench", u64::from(seq), vec![seq as u8; 256]).expect("a short salt")
        })
        .collect()
}

/// Checks each record as a holder checks a store; returns how many verified (all, or the workload is broken).
pub fn verify_records(records: &[dht_core::Record]) -> usize {
    records.iter().filter(|r| r.verify() == Ok(dht_core::RecordKind::Signed)).count()
}

/// The wasm32 entry points, for Node.js (`cargo xtask bench`).
#[cfg(target_arch = "wasm32")]
mod wasm {
    use wasm_bindgen::prelude::*;

    /// A prepared core workload.
    #[wasm_bindgen]
    pub struct CoreBench(super::Workload);

    /// Creates `count` identities with `difficulty` bits of work (timed by the caller); returns the key
    /// pairs it took.
    #[wasm_bindgen(js_name = makeIds)]
    pub fn make_ids(difficulty: u32, count: u32) -> f64 {
        super::make_ids(difficulty, count) as f64
    }

    /// Signs `count` records (timed by the caller); returns how many.
    #[wasm_bindgen(js_name = signRecords)]
    pub fn sign_records(count: u32) -> f64 {
        super::sign_records(count).len() as f64
    }

    /// Signs `count` records and verifies them (timed by the caller: the verifying is the difference with
    /// `signRecords`); returns the records verified.
    #[wasm_bindgen(js_name = signAndVerify)]
    pub fn sign_and_verify(count: u32) -> f64 {
        super::verify_records(&super::sign_records(count)) as f64
    }

    #[wasm_bindgen]
    impl CoreBench {
        /// Prepares `messages` requests from `seed` (not timed).
        #[wasm_bindgen(constructor)]
        pub fn new(messages: u32, seed: u32) -> CoreBench {
            CoreBench(super::Workload::new(messages as usize, u64::from(seed)))
        }

        /// Runs them (timed by the caller); returns the requests handled.
        pub fn run(&self) -> f64 {
            self.0.run().handled as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_records_verify() {
        let records = sign_records(3);
        assert_eq!(verify_records(&records), 3);
        let mut forged = records;
        forged[1].value[0] ^= 1;
        assert_eq!(verify_records(&forged), 2);
    }

    #[test]
    fn the_workload_is_deterministic_and_answers_every_request() {
        let w = Workload::new(2_000, 7);
        let a = w.run();
        assert_eq!(a, w.run());
        assert_eq!((a.handled, a.answers), (2_000, 2_000), "one answer per request");
        assert_ne!(a.bytes, Workload::new(2_000, 8).run().bytes);
    }
}
