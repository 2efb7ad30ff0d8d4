//! Where a file's blocks (chunks and manifests) are put and got.

use crate::FileError;
use dht_core::{Key, Record, RecordKind};
use dht_driver::NodeHandle;
use std::future::Future;

/// What a put of one block achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PutReport {
    /// Peers that acknowledged storing it.
    pub acks: usize,
    /// Peers it was sent to.
    pub attempted: usize,
}

/// Immutable records by key: a running node, or a map in tests. Values returned by `get` and `get_local`
/// are checked by the caller against their key, so an implementation may hand out whatever it holds.
pub trait Blocks {
    /// Stores `value` under `key` (its SHA-256) here and in the swarm, as one of this node's own records.
    fn put(&self, key: Key, value: Vec<u8>) -> impl Future<Output = Result<PutReport, FileError>>;
    /// The value under `key`, from here or the swarm.
    fn get(&self, key: Key) -> impl Future<Output = Result<Option<Vec<u8>>, FileError>>;
    /// The value under `key` in this node's own store only.
    fn get_local(&self, key: Key) -> impl Future<Output = Result<Option<Vec<u8>>, FileError>>;
    /// Whether this node has already put `key` (it keeps it and republishes it, so it need not be sent again).
    fn is_published(&self, key: Key) -> impl Future<Output = Result<bool, FileError>>;
}

fn node_error(e: dht_driver::DriverError) -> FileError {
    FileError::Node(e.to_string())
}

impl Blocks for NodeHandle {
    async fn put(&self, key: Key, value: Vec<u8>) -> Result<PutReport, FileError> {
        let outcome = self.put_record(Record::unchecked(key, value), None).await.map_err(node_error)?;
        match outcome.refusal {
            Some(refusal) => Err(FileError::Node(format!("block {key:#} refused: {refusal:?}"))),
            None => Ok(PutReport { acks: outcome.acks, attempted: outcome.attempted }),
        }
    }

    async fn get(&self, key: Key) -> Result<Option<Vec<u8>>, FileError> {
        self.get_immutable(key).await.map_err(node_error)
    }

    async fn get_local(&self, key: Key) -> Result<Option<Vec<u8>>, FileError> {
        let record = NodeHandle::get_local(self, key).await.map_err(node_error)?;
        Ok(record.filter(|r| r.verify() == Ok(RecordKind::Immutable)).map(|r| r.value))
    }

    async fn is_published(&self, key: Key) -> Result<bool, FileError> {
        NodeHandle::is_published(self, key).await.map_err(node_error)
    }
}

#[cfg(test)]
pub(crate) mod memory {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::{BTreeSet, HashMap};
    use std::rc::Rc;

    /// A swarm in a map; counts puts and gets; `local` is what "this node" holds.
    #[derive(Clone, Default)]
    pub struct MapBlocks {
        pub swarm: Rc<RefCell<HashMap<Key, Vec<u8>>>>,
        pub local: Rc<RefCell<HashMap<Key, Vec<u8>>>>,
        pub published: Rc<RefCell<BTreeSet<Key>>>,
        pub puts: Rc<Cell<usize>>,
        pub gets: Rc<Cell<usize>>,
    }

    impl Blocks for MapBlocks {
        async fn put(&self, key: Key, value: Vec<u8>) -> Result<PutReport, FileError> {
            self.puts.set(self.puts.get() + 1);
            self.published.borrow_mut().insert(key);
            self.local.borrow_mut().insert(key, value.clone());
            self.swarm.borrow_mut().insert(key, value);
            Ok(PutReport { acks: 1, attempted: 1 })
        }
        async fn get(&self, key: Key) -> Result<Option<Vec<u8>>, FileError> {
            self.gets.set(self.gets.get() + 1);
            Ok(self.swarm.borrow().get(&key).cloned())
        }
        async fn get_local(&self, key: Key) -> Result<Option<Vec<u8>>, FileError> {
            Ok(self.local.borrow().get(&key).cloned())
        }
        async fn is_published(&self, key: Key) -> Result<bool, FileError> {
            Ok(self.published.borrow().contains(&key))
        }
    }
}
