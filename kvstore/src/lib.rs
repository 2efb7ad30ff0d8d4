//! # kvstore
//!
//! Where a webdht node keeps what must survive it: the records it holds, its routing table and small
//! metadata (its identity key). One [`Store`] trait, async and without `Send` bounds (a browser tab has one
//! thread), with backends that all pass the same [`contract`] suite:
//! - [`MemoryStore`]: in-process maps, for tests and the simulator;
//! - [`SledStore`] (native): sled trees, flushed before a put is acknowledged;
//! - [`IdbStore`] (browser): IndexedDB through rexie, with a byte budget and eviction of the records that
//!   expire first when the budget or the browser's quota is reached.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod contract;
#[cfg(target_arch = "wasm32")]
mod idb_store;
mod memory;
#[cfg(not(target_arch = "wasm32"))]
mod sled_store;

#[cfg(target_arch = "wasm32")]
pub use idb_store::IdbStore;
pub use memory::MemoryStore;
#[cfg(not(target_arch = "wasm32"))]
pub use sled_store::SledStore;

use dht_core::{Contact, Instant, Key, ID_LEN};

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The value.
    pub value: Vec<u8>,
    /// When it may be forgotten.
    pub expires: Instant,
}

/// What a store knows of a record without reading its value: enough to rebuild the node's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// The key.
    pub key: Key,
    /// When it expires.
    pub expires: Instant,
    /// Bytes of the value.
    pub size: usize,
}

/// Why a storage operation failed. Nothing is assumed stored after an error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (disk, database, quota).
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// An entry could not be read back.
    #[error("corrupt entry {entry}: {what}")]
    Corrupt {
        /// Which entry.
        entry: String,
        /// What is wrong with it.
        what: String,
    },
    /// A metadata name that is empty or too long.
    #[error("invalid metadata name {0:?}")]
    BadName(String),
}

/// Stored value layout of the persistent backends: 8 bytes of expiry (ms, big-endian), then the value.
pub(crate) fn encode_record(value: &[u8], expires: Instant) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&expires.as_millis().to_be_bytes());
    out.extend_from_slice(value);
    out
}

pub(crate) fn decode_record(key: &[u8], bytes: &[u8]) -> Result<StoredRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt { entry: format!("record {}", hex(key)), what: what.to_owned() };
    if bytes.len() < 8 {
        return Err(corrupt("shorter than its 8-byte header"));
    }
    let (head, value) = bytes.split_at(8);
    let millis = u64::from_be_bytes(head.try_into().map_err(|_| corrupt("bad header"))?);
    Ok(StoredRecord { value: value.to_vec(), expires: Instant::from_millis(millis) })
}

/// What the persistent backends list for an entry: its key, expiry and value size.
pub(crate) fn record_info(key: &[u8], bytes: &[u8]) -> Result<RecordInfo, StoreError> {
    let record = decode_record(key, bytes)?;
    Ok(RecordInfo { key: decode_key(key)?, expires: record.expires, size: record.value.len() })
}

pub(crate) fn decode_key(bytes: &[u8]) -> Result<Key, StoreError> {
    let arr: [u8; ID_LEN] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt { entry: format!("key {}", hex(bytes)), what: "not 32 bytes".into() })?;
    Ok(Key::from_bytes(arr))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Longest metadata name accepted.
pub const MAX_META_NAME: usize = 64;

fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_META_NAME {
        return Err(StoreError::BadName(name.chars().take(80).collect()));
    }
    Ok(())
}

/// Storage for one node. Every method is async and may be awaited on any executor; implementations make a
/// successful `put_record` durable before returning.
// `async fn` without `Send` bounds is the point: the browser backend's futures are not `Send`.
#[allow(async_fn_in_trait)]
pub trait Store {
    /// Stores `value` under `key` until `expires`, replacing an older value. Durable when it returns `Ok`.
    async fn put_record(&self, key: Key, value: Vec<u8>, expires: Instant) -> Result<(), StoreError>;
    /// The record under `key`, if any (expired records may still be returned until removed).
    async fn get_record(&self, key: &Key) -> Result<Option<StoredRecord>, StoreError>;
    /// Forgets `key`; absent keys are fine.
    async fn remove_record(&self, key: &Key) -> Result<(), StoreError>;
    /// Every record's key, expiry and size, in key order.
    async fn records(&self) -> Result<Vec<RecordInfo>, StoreError>;
    /// Forgets every record that expired at or before `now`; returns how many.
    async fn remove_expired(&self, now: Instant) -> Result<usize, StoreError>;
    /// Replaces the persisted routing table.
    async fn save_contacts(&self, contacts: &[Contact]) -> Result<(), StoreError>;
    /// The persisted routing table (empty if none was saved).
    async fn load_contacts(&self) -> Result<Vec<Contact>, StoreError>;
    /// Stores a small named blob (the identity key, settings). Durable when it returns `Ok`.
    async fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Reads a named blob.
    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
}
