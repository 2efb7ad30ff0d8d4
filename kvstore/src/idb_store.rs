//! Browser storage in IndexedDB (through rexie): one object store for records (binary keys, values in the
//! same layout as sled), one for metadata and the routing table.
//!
//! A tab may not fill the disk: the store keeps a byte budget, and when a put would pass it — or the
//! browser refuses it with `QuotaExceededError` — it evicts the records that expire first (never the
//! one being written) and tries again. [`IdbStore::evicted`] counts them, so the page can say so.

use crate::{check_name, decode_record, encode_record, record_info, RecordInfo, Store, StoreError, StoredRecord};
use dht_core::{decode_contacts, encode_contacts, Contact, Instant, Key};
use rexie::{ObjectStore, Rexie, TransactionMode};
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};

const RECORDS: &str = "records";
const META: &str = "meta";
const CONTACTS_KEY: &str = "\0routing-table";

/// Eviction rounds a put may go through before it gives up.
const MAX_EVICTION_ROUNDS: usize = 8;

/// A store in the IndexedDB database of that name.
pub struct IdbStore {
    db: Option<Rexie>,
    budget: u64,
    /// Bytes of stored records (values plus headers), kept current by every write.
    used: Cell<u64>,
    evicted: Rc<Cell<u64>>,
}

impl std::fmt::Debug for IdbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdbStore").field("budget", &self.budget).field("used", &self.used.get()).finish()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A backend error, keeping the browser's words (`QuotaExceededError` included).
fn idb(e: rexie::Error) -> StoreError {
    StoreError::Backend(format!("{e} ({e:?})"))
}

fn is_quota(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(text) if text.contains("QuotaExceeded"))
}

fn bytes(b: &[u8]) -> JsValue {
    js_sys::Uint8Array::from(b).into()
}

fn to_vec(v: &JsValue, entry: &str) -> Result<Vec<u8>, StoreError> {
    if let Some(a) = v.dyn_ref::<js_sys::Uint8Array>() {
        return Ok(a.to_vec());
    }
    if let Some(b) = v.dyn_ref::<js_sys::ArrayBuffer>() {
        return Ok(js_sys::Uint8Array::new(b).to_vec());
    }
    Err(StoreError::Corrupt { entry: entry.to_owned(), what: "not binary".into() })
}

/// The stored size of a record: what the budget counts.
fn cost(value_len: usize) -> u64 {
    8 + 32 + value_len as u64
}

impl IdbStore {
    /// Opens (creating if needed) the database `name`, allowing at most `budget` bytes of records.
    pub async fn open(name: &str, budget: u64) -> Result<Self, StoreError> {
        let db = Rexie::builder(name)
            .version(1)
            .add_object_store(ObjectStore::new(RECORDS))
            .add_object_store(ObjectStore::new(META))
            .build()
            .await
            .map_err(idb)?;
        let store = IdbStore { db: Some(db), budget, used: Cell::new(0), evicted: Rc::new(Cell::new(0)) };
        let used = store.records().await?.iter().map(|r| cost(r.size)).sum();
        store.used.set(used);
        Ok(store)
    }

    /// Deletes the database `name` (every record, the routing table and the identity key).
    pub async fn delete(name: &str) -> Result<(), StoreError> {
        Rexie::delete(name).await.map_err(idb)
    }

    /// Records evicted so far to stay within the budget or the browser's quota (shared with clones of
    /// the counter, so a UI can watch it after the store moved into a node).
    pub fn evicted(&self) -> Rc<Cell<u64>> {
        self.evicted.clone()
    }

    /// Bytes of records stored now.
    pub fn used(&self) -> u64 {
        self.used.get()
    }

    fn db(&self) -> Result<&Rexie, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Backend("database closed".into()))
    }

    /// Puts (or with `None` deletes) one entry and waits for the transaction to commit.
    async fn write(&self, store: &str, key: JsValue, value: Option<JsValue>) -> Result<(), StoreError> {
        let tx = self.db()?.transaction(&[store], TransactionMode::ReadWrite).map_err(idb)?;
        let s = tx.store(store).map_err(idb)?;
        match value {
            Some(v) => {
                s.put(&v, Some(&key)).await.map_err(idb)?;
            }
            None => s.delete(key).await.map_err(idb)?,
        }
        tx.done().await.map_err(idb)?;
        Ok(())
    }

    async fn read(&self, store: &str, key: JsValue) -> Result<Option<JsValue>, StoreError> {
        let tx = self.db()?.transaction(&[store], TransactionMode::ReadOnly).map_err(idb)?;
        let v = tx.store(store).map_err(idb)?.get(key).await.map_err(idb)?;
        Ok(v.filter(|v| !v.is_undefined()))
    }

    /// Evicts about a quarter of the records (at least one), those that expire first, never `keep`.
    async fn evict(&self, keep: &Key) -> Result<usize, StoreError> {
        let mut infos: Vec<RecordInfo> = self.records().await?.into_iter().filter(|r| r.key != *keep).collect();
        infos.sort_by_key(|r| (r.expires, r.key));
        let n = infos.len().div_ceil(4);
        for info in &infos[..n] {
            self.remove_record(&info.key).await?;
        }
        self.evicted.set(self.evicted.get() + n as u64);
        Ok(n)
    }
}

impl Drop for IdbStore {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            db.close();
        }
    }
}

impl Store for IdbStore {
    async fn put_record(&self, key: Key, value: Vec<u8>, expires: Instant) -> Result<(), StoreError> {
        let new_cost = cost(value.len());
        if new_cost > self.budget {
            return Err(StoreError::Backend(format!("record of {} bytes exceeds the storage budget", value.len())));
        }
        let old_cost = self.get_record(&key).await?.map(|r| cost(r.value.len())).unwrap_or(0);
        let encoded = bytes(&encode_record(&value, expires));
        for _ in 0..MAX_EVICTION_ROUNDS {
            let over_budget = self.used.get().saturating_sub(old_cost) + new_cost > self.budget;
            if !over_budget {
                match self.write(RECORDS, bytes(key.as_bytes()), Some(encoded.clone())).await {
                    Ok(()) => {
                        self.used.set(self.used.get().saturating_sub(old_cost) + new_cost);
                        return Ok(());
                    }
                    Err(e) if is_quota(&e) => tracing::warn!("the browser's storage quota is reached: evicting"),
                    Err(e) => return Err(e),
                }
            }
            if self.evict(&key).await? == 0 {
                break;
            }
        }
        Err(StoreError::Backend("storage full: nothing left to evict".into()))
    }

    async fn get_record(&self, key: &Key) -> Result<Option<StoredRecord>, StoreError> {
        match self.read(RECORDS, bytes(key.as_bytes())).await? {
            Some(v) => decode_record(key.as_bytes(), &to_vec(&v, "record")?).map(Some),
            None => Ok(None),
        }
    }

    async fn remove_record(&self, key: &Key) -> Result<(), StoreError> {
        let old = self.get_record(key).await?;
        self.write(RECORDS, bytes(key.as_bytes()), None).await?;
        if let Some(r) = old {
            self.used.set(self.used.get().saturating_sub(cost(r.value.len())));
        }
        Ok(())
    }

    async fn records(&self) -> Result<Vec<RecordInfo>, StoreError> {
        let tx = self.db()?.transaction(&[RECORDS], TransactionMode::ReadOnly).map_err(idb)?;
        let all = tx.store(RECORDS).map_err(idb)?.scan(None, None, None, None).await.map_err(idb)?;
        let mut out = Vec::with_capacity(all.len());
        for (k, v) in all {
            out.push(record_info(&to_vec(&k, "record key")?, &to_vec(&v, "record")?)?);
        }
        Ok(out)
    }

    async fn remove_expired(&self, now: Instant) -> Result<usize, StoreError> {
        let mut removed = 0;
        for info in self.records().await? {
            if info.expires <= now {
                self.remove_record(&info.key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn save_contacts(&self, contacts: &[Contact]) -> Result<(), StoreError> {
        let encoded = encode_contacts(contacts).map_err(backend)?;
        self.write(META, CONTACTS_KEY.into(), Some(bytes(&encoded))).await
    }

    async fn load_contacts(&self) -> Result<Vec<Contact>, StoreError> {
        match self.read(META, CONTACTS_KEY.into()).await? {
            Some(v) => decode_contacts(&to_vec(&v, "routing table")?)
                .map_err(|e| StoreError::Corrupt { entry: "routing table".into(), what: e.to_string() }),
            None => Ok(Vec::new()),
        }
    }

    async fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        check_name(name)?;
        self.write(META, name.into(), Some(bytes(value))).await
    }

    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_name(name)?;
        match self.read(META, name.into()).await? {
            Some(v) => to_vec(&v, name).map(Some),
            None => Ok(None),
        }
    }
}
