//! The program-facing side of a running node.

use crate::signer::Signer;
use dht_core::{
    signing_buffer, Contact, Key, NodeId, NodeStats, OwnerKey, QueryStats, Record, RecordError, RecordKind,
    StoreRefusal, MAX_SALT_LEN,
};
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
    /// A signed record could not be made (a salt too long).
    #[error("record: {0}")]
    Record(#[from] RecordError),
    /// The version found is the last one there can be (`u64::MAX`).
    #[error("the record is at its last version")]
    LastVersion,
    /// The platform keeping the signing key refused to sign.
    #[error("signing: {0}")]
    Signing(String),
}

/// The result of a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The record's key (for an immutable record, the hash that names it).
    pub key: Key,
    /// The version put, for a signed record.
    pub seq: Option<u64>,
    /// Peers that acknowledged storing the record.
    pub acks: usize,
    /// Peers it was sent to.
    pub attempted: usize,
    /// Why the put did not go out (refused by this node: an older version than the one held, a failed
    /// compare-and-swap, ...), or else a peer's telling refusal: a failed compare-and-swap or a newer
    /// version held, with its `seq`.
    pub refusal: Option<StoreRefusal>,
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
    /// A link to a peer could not be opened (what was sent to it waits for no answer).
    DialFailed {
        /// The peer.
        peer: NodeId,
        /// Why, in words (the transport's error).
        reason: String,
    },
}

pub(crate) enum Command {
    Bootstrap(Vec<Contact>, oneshot::Sender<Vec<Contact>>),
    FindNode(NodeId, oneshot::Sender<Vec<Contact>>),
    Put(Record, Option<u64>, oneshot::Sender<PutOutcome>),
    Get(Key, oneshot::Sender<Option<Record>>),
    GetLocal(Key, oneshot::Sender<Option<Record>>),
    /// `true`: the signed ones only.
    OwnRecords(bool, oneshot::Sender<Vec<Record>>),
    IsPublished(Key, oneshot::Sender<bool>),
    Stats(oneshot::Sender<NodeStats>),
    RelayStats(oneshot::Sender<crate::RelayStats>),
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
    pub(crate) signer: Signer,
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

    /// The key this node signs its records with, as peers see it.
    pub fn owner(&self) -> OwnerKey {
        self.signer.owner()
    }

    /// The 32 secret bytes of the signing key (to carry this identity to another device); `None` when
    /// the platform keeps the key and never hands it out ([`Signer::External`]).
    pub fn signing_key_bytes(&self) -> Option<[u8; 32]> {
        self.signer.secret_bytes()
    }

    /// Puts `record` here and at the k closest peers (`cas`: only where the version held is that `seq`).
    pub async fn put_record(&self, record: Record, cas: Option<u64>) -> Result<PutOutcome, DriverError> {
        if record.value.len() > self.max_record_size {
            return Err(DriverError::TooLarge { len: record.value.len(), max: self.max_record_size });
        }
        self.ask(|tx| Command::Put(record, cas, tx)).await
    }

    /// Puts `value` as an immutable record; the outcome's `key` (the value's SHA-256) names it.
    pub async fn put_immutable(&self, value: Vec<u8>) -> Result<PutOutcome, DriverError> {
        self.put_record(Record::immutable(value), None).await
    }

    /// Puts `value` as the next version of this node's record named `name` (the salt), signed with its
    /// key. With `cas`, the version replaced must be `cas` (the new one is `cas + 1`); without, the newest
    /// version found (here or in the network) is replaced, and the first version is 1.
    pub async fn put_signed(&self, name: &[u8], value: Vec<u8>, cas: Option<u64>) -> Result<PutOutcome, DriverError> {
        let current = match cas {
            Some(seq) => Some(seq),
            None => self.get_signed(self.owner(), name).await?.and_then(|r| r.seq()),
        };
        let seq = match current {
            Some(seq) => seq.checked_add(1).ok_or(DriverError::LastVersion)?,
            None => 1,
        };
        if name.len() > MAX_SALT_LEN {
            return Err(RecordError::SaltTooLong(name.len()).into());
        }
        let signature = self.signer.sign(signing_buffer(name, seq, &value)).await.map_err(DriverError::Signing)?;
        let record = Record::signed_by(self.owner(), name, seq, value, signature)?;
        self.put_record(record, cas).await
    }

    /// The record under `key`, from here or the network: the first valid unsigned one, or the newest
    /// version of a signed one.
    pub async fn get(&self, key: Key) -> Result<Option<Record>, DriverError> {
        self.ask(|tx| Command::Get(key, tx)).await
    }

    /// The newest version of `owner`'s record named `name`.
    pub async fn get_signed(&self, owner: OwnerKey, name: &[u8]) -> Result<Option<Record>, DriverError> {
        let record = self.get(owner.record_key(name)).await?;
        Ok(record.filter(|r| r.owner() == Some(owner)))
    }

    /// The value of the immutable record named by `key` (its SHA-256).
    pub async fn get_immutable(&self, key: Key) -> Result<Option<Vec<u8>>, DriverError> {
        let record = self.get(key).await?;
        Ok(record.filter(|r| r.verify() == Ok(RecordKind::Immutable)).map(|r| r.value))
    }

    /// The record under `key` in this node's own store only (no network): what it holds for others.
    pub async fn get_local(&self, key: Key) -> Result<Option<Record>, DriverError> {
        self.ask(|tx| Command::GetLocal(key, tx)).await
    }

    /// The records this node put (the newest version of each it holds), from its own store.
    pub async fn own_records(&self) -> Result<Vec<Record>, DriverError> {
        self.ask(|tx| Command::OwnRecords(false, tx)).await
    }

    /// The signed records this node put (the newest version of each it holds): [`NodeHandle::own_records`]
    /// without reading the immutable ones (a file's chunks).
    pub async fn own_signed_records(&self) -> Result<Vec<Record>, DriverError> {
        self.ask(|tx| Command::OwnRecords(true, tx)).await
    }

    /// Whether this node has put the record under `key` (it keeps and republishes it).
    pub async fn is_published(&self, key: Key) -> Result<bool, DriverError> {
        self.ask(|tx| Command::IsPublished(key, tx)).await
    }

    /// The node's counters since it started (requests, timeouts, refusals by reason, ...).
    pub async fn stats(&self) -> Result<NodeStats, DriverError> {
        self.ask(Command::Stats).await
    }

    /// What the node relayed for its transport and for others (see [`crate::RelayPort`]).
    pub async fn relay_stats(&self) -> Result<crate::RelayStats, DriverError> {
        self.ask(Command::RelayStats).await
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
