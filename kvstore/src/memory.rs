//! In-process storage: maps behind a shared cell.

use crate::{check_name, RecordInfo, Store, StoreError, StoredRecord};
use dht_core::{Contact, Instant, Key, MemoryRecords};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Debug, Default)]
struct Inner {
    records: MemoryRecords<Vec<u8>>,
    contacts: Vec<Contact>,
    meta: BTreeMap<String, Vec<u8>>,
}

/// A store in memory. Clones share the same data, so a clone stands for "reopening" the store within
/// one process; nothing survives the process.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Rc<RefCell<Inner>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    async fn put_record(&self, key: Key, value: Vec<u8>, expires: Instant) -> Result<(), StoreError> {
        self.inner.borrow_mut().records.put(key, value, expires);
        Ok(())
    }

    async fn get_record(&self, key: &Key) -> Result<Option<StoredRecord>, StoreError> {
        Ok(self.inner.borrow().records.get(key).map(|(value, expires)| StoredRecord { value: value.clone(), expires }))
    }

    async fn remove_record(&self, key: &Key) -> Result<(), StoreError> {
        self.inner.borrow_mut().records.remove(key);
        Ok(())
    }

    async fn records(&self) -> Result<Vec<RecordInfo>, StoreError> {
        let inner = self.inner.borrow();
        Ok(inner.records.iter().map(|(k, v, expires)| RecordInfo { key: *k, expires, size: v.len() }).collect())
    }

    async fn remove_expired(&self, now: Instant) -> Result<usize, StoreError> {
        Ok(self.inner.borrow_mut().records.remove_expired(now))
    }

    async fn save_contacts(&self, contacts: &[Contact]) -> Result<(), StoreError> {
        self.inner.borrow_mut().contacts = contacts.to_vec();
        Ok(())
    }

    async fn load_contacts(&self) -> Result<Vec<Contact>, StoreError> {
        Ok(self.inner.borrow().contacts.clone())
    }

    async fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        check_name(name)?;
        self.inner.borrow_mut().meta.insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_name(name)?;
        Ok(self.inner.borrow().meta.get(name).cloned())
    }
}
