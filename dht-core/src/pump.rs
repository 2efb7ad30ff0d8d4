//! Draining a node's outputs: the one loop every runner of a [`Node`] uses (the async driver, the
//! simulator, the benchmarks and the tests), and the in-memory record store that answers storage
//! operations at once.

use crate::event::{Event, Output, StoreOp, StoreOpId, StoreResult};
use crate::id::Key;
use crate::message::{Contact, Message};
use crate::node::Node;
use crate::record::Record;
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
/// benchmarks (as `MemoryRecords<Record>`), and the record half of the driver's in-memory store (which
/// keeps encoded records: `MemoryRecords<Vec<u8>>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryRecords<V = Record> {
    records: BTreeMap<Key, (V, Instant)>,
}

impl<V> Default for MemoryRecords<V> {
    fn default() -> Self {
        MemoryRecords { records: BTreeMap::new() }
    }
}

impl MemoryRecords<Record> {
    /// Performs a storage operation at once.
    pub fn apply(&mut self, op: StoreOp) -> StoreResult {
        match op {
            StoreOp::Put { record, expires } => {
                self.put(record.key, record, expires);
                StoreResult::Done
            }
            StoreOp::Get { key } => StoreResult::Value(self.get(&key).map(|(r, _)| r.clone())),
            StoreOp::Remove { key } => {
                self.remove(&key);
                StoreResult::Done
            }
        }
    }
}

impl<V> MemoryRecords<V> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `value` under `key` until `expires`, replacing what was there.
    pub fn put(&mut self, key: Key, value: V, expires: Instant) {
        self.records.insert(key, (value, expires));
    }

    /// The value under `key` and its expiry.
    pub fn get(&self, key: &Key) -> Option<(&V, Instant)> {
        self.records.get(key).map(|(v, e)| (v, *e))
    }

    /// Forgets `key`; whether it was held.
    pub fn remove(&mut self, key: &Key) -> bool {
        self.records.remove(key).is_some()
    }

    /// Every record: key, value, expiry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &V, Instant)> {
        self.records.iter().map(|(k, (v, e))| (k, v, *e))
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
