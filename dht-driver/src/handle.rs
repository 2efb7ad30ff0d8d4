//! The program-facing side of a running node.

use dht_core::{Contact, Key, NodeId, QueryStats, Record};
use futures::channel::{mpsc, oneshot};

/// Why a request to the node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The node's task has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// The value is larger than the node's `max_record_size`.
    #[error("value of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The result of a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// Peers that acknowledged storing the record.
    pub acks: usize,
    /// Peers it was sent to.
    pub attempted: usize,
    /// Counters of the query.
    pub stats: QueryStats,
}

/// Something the node reports to its program.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// An authenticated link to a peer opened.
    PeerConnected(Contact),
    /// The link to a peer closed.
    PeerDisconnected(NodeId),
    /// A peer entered the routing table.
    PeerAdded(NodeId),
    /// A peer left the routing table.
    PeerRemoved(NodeId),
    /// We stored a record for a peer.
    RecordStored {
        /// The key.
        key: Key,
        /// Who asked.
        from: NodeId,
    },
    /// A peer sent something invalid.
    PeerMisbehaved {
        /// The peer.
        from: NodeId,
        /// What it did.
        reason: &'static str,
    },
}

pub(crate) enum Command {
    Bootstrap(Vec<Contact>, oneshot::Sender<Vec<Contact>>),
    FindNode(NodeId, oneshot::Sender<Vec<Contact>>),
    Put(Record, oneshot::Sender<PutOutcome>),
    Get(Key, oneshot::Sender<Option<Record>>),
    GetLocal(Key, oneshot::Sender<Option<Vec<u8>>>),
    Peers(oneshot::Sender<Vec<Contact>>),
    RoutingTable(oneshot::Sender<Vec<(usize, Vec<Contact>)>>),
    Subscribe(mpsc::UnboundedSender<NodeEvent>),
    Shutdown,
}

/// A handle on a running node; cheap to clone. Every call waits for the node's answer.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) id: NodeId,
    pub(crate) max_record_size: usize,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

impl core::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NodeHandle").field("id", &self.id).finish()
    }
}

impl NodeHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.commands.unbounded_send(make(tx)).map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Our node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Joins through `seeds` (a self-lookup); returns the closest peers found.
    pub async fn bootstrap(&self, seeds: Vec<Contact>) -> Result<Vec<Contact>, DriverError> {
        self.ask(|tx| Command::Bootstrap(seeds, tx)).await
    }

    /// The k peers closest to `target`.
    pub async fn find_node(&self, target: NodeId) -> Result<Vec<Contact>, DriverError> {
        self.ask(|tx| Command::FindNode(target, tx)).await
    }

    /// Stores `value` under `key` here and at the k closest peers.
    pub async fn put(&self, key: Key, value: Vec<u8>) -> Result<PutOutcome, DriverError> {
        if value.len() > self.max_record_size {
            return Err(DriverError::TooLarge { len: value.len(), max: self.max_record_size });
        }
        self.ask(|tx| Command::Put(Record { key, value }, tx)).await
    }

    /// The value under `key`, from here or the network.
    pub async fn get(&self, key: Key) -> Result<Option<Vec<u8>>, DriverError> {
        Ok(self.ask(|tx| Command::Get(key, tx)).await?.map(|r| r.value))
    }

    /// The value under `key` in this node's own store only (no network): what it holds for others.
    pub async fn get_local(&self, key: Key) -> Result<Option<Vec<u8>>, DriverError> {
        self.ask(|tx| Command::GetLocal(key, tx)).await
    }

    /// Peers with a live link.
    pub async fn peers(&self) -> Result<Vec<Contact>, DriverError> {
        self.ask(Command::Peers).await
    }

    /// The routing table: `(bucket index, entries)` for every non-empty bucket.
    pub async fn routing_table(&self) -> Result<Vec<(usize, Vec<Contact>)>, DriverError> {
        self.ask(Command::RoutingTable).await
    }

    /// A stream of events from now on.
    pub fn events(&self) -> mpsc::UnboundedReceiver<NodeEvent> {
        let (tx, rx) = mpsc::unbounded();
        let _ = self.commands.unbounded_send(Command::Subscribe(tx));
        rx
    }

    /// Stops the node's task (links close, the routing table is saved).
    pub fn shutdown(&self) {
        let _ = self.commands.unbounded_send(Command::Shutdown);
    }
}
