//! Draining a node's outputs: the one loop every runner of a [`Node`] uses (the async driver, the
//! simulator, the benchmarks and the tests), and the in-memory record store that answers storage
//! operations at once.

use crate::event::{Event, Output, StoreOp, StoreOpId, StoreResult};
use crate::id::Key;
use crate::message::{Contact, Message, Record};
use crate::node::Node;
use crate::time::Instant;
use std::collections::BTreeMap;

/// Where a node's outputs go, one method per kind of [`Output`].
pub trait OutputSink {
    /// Send `msg` to `to`.
    fn send(&mut self, now: Instant, to: Contact, msg: Message);
    /// Perform a storage operation. Return its result when it is done at once (the node hears it before
    /// the next output is drained), or `None` when it finishes later and its result comes in through
    /// [`Node::handle_store_result`].
    fn store(&mut self, now: Instant, id: StoreOpId, op: StoreOp) -> Option<StoreResult>;
    /// Learn of an event.
    fn event(&mut self, now: Instant, event: Event);
}

impl Node {
    /// Drains every output into `sink`, in order, handing results of storage operations done at once
    /// back to the node as they come. Call after every input or command, then ask
    /// [`Node::poll_timeout`].
    pub fn pump(&mut self, now: Instant, sink: &mut impl OutputSink) {
        while let Some(out) = self.poll_output() {
            match out {
                Output::Send { to, msg } => sink.send(now, to, msg),
                Output::Store { id, op } => {
                    if let Some(result) = sink.store(now, id, op) {
                        self.handle_store_result(now, id, result);
                    }
                }
                Output::Event(event) => sink.event(now, event),
            }
        }
    }
}

/// Records in memory, keyed by [`Key`], each with its expiry: the store of tests, the simulator and the
/// benchmarks, and the record half of the driver's in-memory store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryRecords {
    records: BTreeMap<Key, (Vec<u8>, Instant)>,
}

impl MemoryRecords {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Performs a storage operation at once.
    pub fn apply(&mut self, op: StoreOp) -> StoreResult {
        match op {
            StoreOp::Put { record, expires } => {
                self.put(record, expires);
                StoreResult::Done
            }
            StoreOp::Get { key } => StoreResult::Value(self.get(&key).map(|(v, _)| v.to_vec())),
            StoreOp::Remove { key } => {
                self.remove(&key);
                StoreResult::Done
            }
        }
    }

    /// Keeps `record` until `expires`, replacing what was under its key.
    pub fn put(&mut self, record: Record, expires: Instant) {
        self.records.insert(record.key, (record.value, expires));
    }

    /// The value under `key` and its expiry.
    pub fn get(&self, key: &Key) -> Option<(&[u8], Instant)> {
        self.records.get(key).map(|(v, e)| (v.as_slice(), *e))
    }

    /// Forgets `key`; whether it was held.
    pub fn remove(&mut self, key: &Key) -> bool {
        self.records.remove(key).is_some()
    }

    /// Every record: key, value, expiry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &[u8], Instant)> {
        self.records.iter().map(|(k, (v, e))| (k, v.as_slice(), *e))
    }

    /// Forgets the records expired by `now`; how many.
    pub fn remove_expired(&mut self, now: Instant) -> usize {
        let before = self.records.len();
        self.records.retain(|_, (_, e)| *e > now);
        before - self.records.len()
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
