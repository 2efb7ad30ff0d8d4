//! The wire protocol: requests and responses, each carrying a request id.

use crate::id::{Key, NodeId};
use crate::record::Record;
use std::sync::Arc;

/// Identifies one request and its response on a link. Chosen by the requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct RequestId(pub u64);

/// A transport address, opaque to the core: `tcp:127.0.0.1:4000`, `rtc:ws://host:8080`, ...
///
/// Shared text: a contact is copied wherever it goes (each message's sender, answers, the table, every
/// lookup that hears of it), and a copy of an address is a reference count, not a string. On the wire it is
/// a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub struct Address(Arc<str>);

impl Address {
    /// Wraps a string.
    pub fn new(s: impl Into<Arc<str>>) -> Self {
        Address(s.into())
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A peer as other nodes learn of it: its id and the addresses it can be reached at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub struct Contact {
    /// The peer's node id.
    pub id: NodeId,
    /// Addresses, in the peer's order of preference.
    pub addrs: Vec<Address>,
}

impl Contact {
    /// A contact with no known address (the simulator routes by id alone).
    pub fn bare(id: NodeId) -> Self {
        Contact { id, addrs: Vec::new() }
    }
}

/// Why a node refused to store a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
#[non_exhaustive]
pub enum StoreRefusal {
    /// The value is larger than the node accepts.
    TooLarge,
    /// The node holds as many records as it accepts.
    Full,
    /// The TTL is zero or above the node's maximum.
    BadTtl,
    /// The node's storage failed.
    StorageFailed,
    /// The record fails the node's [`crate::RecordPolicy`]: an unsigned record whose key is not its value's
    /// hash, or a signed one whose key is not its owner's key and salt.
    Invalid,
    /// A signed record whose signature does not verify (counted against the sender).
    BadSignature,
    /// A signed record older than the version held, whose `seq` this is.
    Stale {
        /// The version held.
        current: u64,
    },
    /// A signed record of the version held, with another value.
    Conflict,
    /// A compare-and-swap store whose expected version is not the one held.
    CasFailed {
        /// The version held.
        current: u64,
    },
    /// The sender (or the record's owner) holds its share of this node's room for others' records.
    Quota,
    /// A write of this key is still under way; try again later.
    Busy,
}

/// A message on a link.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Message {
    /// A request; the peer answers with a [`Message::Response`] carrying the same id.
    Request {
        /// Chosen by the requester.
        id: RequestId,
        /// What is asked.
        body: Request,
    },
    /// The answer to a request.
    Response {
        /// The id of the request answered.
        id: RequestId,
        /// The answer.
        body: Response,
    },
    /// A message for another node, carried through the peers of its route (a transport's link setup
    /// signals: how nodes that share no signaling server reach each other). The driver forwards and delivers
    /// these; the [`crate::Node`] ignores them.
    Relay(Box<Relayed>),
}

/// The relays a [`Relayed`] message may pass at most.
pub const MAX_RELAY_HOPS: usize = 2;

/// The largest payload a [`Relayed`] message carries.
pub const MAX_RELAY_PAYLOAD: usize = 16 * 1024;

/// A message from `from` to `to` through the relays of `route`, in order: the sender hands it to
/// `route[0]`, each relay to the next and the last to `to` itself; `hop` counts the relays passed. Each link
/// it crosses is authenticated, and each relay checks that it came from the previous one (or, first, from
/// `from` itself), so `from` is as honest as the relays between. What the payload sets up must still prove
/// its ends (a WebRTC link's Noise handshake does).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Relayed {
    /// The sender.
    pub from: NodeId,
    /// The addressee.
    pub to: NodeId,
    /// The relays between, in order (at most [`MAX_RELAY_HOPS`]).
    pub route: Vec<NodeId>,
    /// Relays passed so far.
    pub hop: u8,
    /// The transport's message (at most [`MAX_RELAY_PAYLOAD`] bytes); empty in a notice.
    pub payload: Vec<u8>,
    /// A notice, not a message: relay `from` could not pass on a message from `to` to this node (it holds
    /// no link to the next hop), so `to` need not wait for an answer.
    pub undeliverable: Option<NodeId>,
}

/// What a node can ask of a peer.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Request {
    /// Are you there? Answered by [`Response::Pong`].
    Ping,
    /// Which nodes do you know closest to `target`? Answered by [`Response::Nodes`].
    FindNode {
        /// The point of the id space asked about.
        target: NodeId,
    },
    /// Do you hold `key`? Answered by [`Response::Value`] or [`Response::Nodes`].
    FindValue {
        /// The key asked for.
        key: Key,
    },
    /// Keep this record for `ttl_secs`. Answered by [`Response::StoreAck`].
    Store {
        /// The record (boxed: a message is as large as its largest kind, and most carry none).
        record: Box<Record>,
        /// How long to keep it, in seconds. A store never shortens the time a held record has left,
        /// unless it brings a newer version signed by the owner.
        ttl_secs: u32,
        /// Compare-and-swap: store only if the version held is this `seq` (signed records).
        cas: Option<u64>,
    },
}

/// Answers to [`Request`]s.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong,
    /// The closest contacts the responder knows to the target (at most k, never the requester itself).
    Nodes {
        /// Sorted by distance to the target, nearest first.
        closer: Vec<Contact>,
    },
    /// The record asked for by [`Request::FindValue`].
    Value {
        /// The record (boxed, as in [`Request::Store`]).
        record: Box<Record>,
        /// Seconds it has left to live at the responder.
        ttl_secs: u32,
        /// For a signed record, the closest contacts the responder knows to its key (as in
        /// [`Response::Nodes`]): a get of a signed record goes on to the k closest, and the holders near the key
        /// are the ones that know the others; empty otherwise.
        closer: Vec<Contact>,
    },
    /// Answer to [`Request::Store`].
    StoreAck {
        /// `None` when stored, else why not.
        refused: Option<StoreRefusal>,
    },
}

impl Request {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::FindNode { .. } => "find_node",
            Request::FindValue { .. } => "find_value",
            Request::Store { .. } => "store",
        }
    }
}
