//! What the node hands back to its driver: messages to send, storage operations, and events.

use crate::id::{Key, NodeId};
use crate::message::{Contact, Message, StoreRefusal};
use crate::record::Record;
use crate::time::Instant;
use core::time::Duration;

/// Identifies a query started by [`crate::Node::find_node`], [`crate::Node::put`] or [`crate::Node::get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// Identifies a storage operation; answer it with [`crate::Node::handle_store_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreOpId(pub u64);

/// Something the driver must do or learn. Drain with [`crate::Node::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `msg` to `to` (dial its addresses if there is no live link).
    Send {
        /// The peer.
        to: Contact,
        /// The message.
        msg: Message,
    },
    /// Perform a storage operation and report its outcome with the same id.
    Store {
        /// Echo this back.
        id: StoreOpId,
        /// What to do.
        op: StoreOp,
    },
    /// Something happened.
    Event(Event),
}

/// A storage operation the core asks for. The store must make a `Put` durable before reporting success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Keep `record` until `expires` (replacing any older value under its key).
    Put {
        /// The record.
        record: Record,
        /// When it may be forgotten.
        expires: Instant,
    },
    /// Read the record under `key`.
    Get {
        /// The key.
        key: Key,
    },
    /// Forget `key`. Fire and forget: the result is ignored.
    Remove {
        /// The key.
        key: Key,
    },
}

/// The outcome of a [`StoreOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreResult {
    /// A `Put` or `Remove` was done.
    Done,
    /// A `Get` found this record (`None`: absent).
    Value(Option<Record>),
    /// The operation failed; nothing is assumed stored.
    Failed(String),
}

/// Counters of one finished query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryStats {
    /// Requests sent.
    pub requests: u32,
    /// Answers received.
    pub responses: u32,
    /// Requests that timed out or were refused.
    pub failures: u32,
    /// Path length to the closest peer reached (1 = a peer of our own table).
    pub hops: u32,
    /// Time from start to finish.
    pub duration: Duration,
}

/// Something that happened, reported as a past fact.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A `find_node` (or the bootstrap self-lookup) ended with these closest peers, nearest first.
    LookupFinished {
        /// The query.
        query: QueryId,
        /// What was looked up.
        target: NodeId,
        /// Up to k closest peers that answered.
        closest: Vec<Contact>,
        /// Counters.
        stats: QueryStats,
    },
    /// A `put` ended: `acks` of the closest peers stored the record.
    PutFinished {
        /// The query.
        query: QueryId,
        /// The record's key.
        key: Key,
        /// Peers that acknowledged the store.
        acks: usize,
        /// Peers the record was sent to.
        attempted: usize,
        /// Why the put did not go out (refused here: too large, invalid, older than the version held, a
        /// failed compare-and-swap, ...), or else the telling refusal of a peer: a failed compare-and-swap or
        /// a newer version held, with the highest `seq` reported.
        refusal: Option<StoreRefusal>,
        /// Counters (of the lookup and the stores).
        stats: QueryStats,
    },
    /// A `get` ended, with the record if one was found.
    GetFinished {
        /// The query.
        query: QueryId,
        /// The key asked for.
        key: Key,
        /// The record found, locally or remotely.
        record: Option<Record>,
        /// Counters.
        stats: QueryStats,
    },
    /// A peer entered the routing table.
    PeerAdded {
        /// Its id.
        id: NodeId,
    },
    /// A peer left the routing table (it stopped answering).
    PeerRemoved {
        /// Its id.
        id: NodeId,
    },
    /// We stored a record for a peer.
    RecordStored {
        /// The key.
        key: Key,
        /// Who asked.
        from: NodeId,
    },
    /// We refused a peer's record.
    StoreRefused {
        /// The key.
        key: Key,
        /// Who asked.
        from: NodeId,
        /// Why.
        reason: StoreRefusal,
    },
    /// A peer sent something invalid; it was dropped and counted.
    PeerMisbehaved {
        /// The peer.
        from: NodeId,
        /// What it did.
        reason: &'static str,
    },
}
