//! Browser storage in IndexedDB (through rexie): one object store for records (binary keys, values in the
//! same layout as sled), one for what is known of each record without its value (expiry and size, 12
//! bytes), one for metadata and the routing table.
//!
//! A tab may not fill the disk: the store keeps a byte budget, and when a put would pass it — or the
//! browser refuses it with `QuotaExceededError` — it evicts the records that expire first (never the
//! one being written) and tries again. [`IdbStore::evicted`] counts them, so the page can say so. Listing
//! and evicting read the small entries only (kept in memory as an index since opening), never values.
//!
//! Record writes are committed in groups: IndexedDB runs read-write transactions over the same stores one at
//! a time, and each commit costs tens of milliseconds in a loaded browser, so a write that finds another
//! in progress waits for it and then commits every write queued meanwhile in one transaction (a file's
//! chunks, or a peer's stores, arrive dozens at once).

use crate::{check_name, decode_record, encode_record, record_info, RecordInfo, Store, StoreError, StoredRecord};
use dht_core::{decode_contacts, encode_contacts, Contact, Instant, Key};
use futures::channel::oneshot;
use rexie::{ObjectStore, Rexie, TransactionMode};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};

const RECORDS: &str = "records";
/// Per record: expiry (8 bytes, ms) and value size (4 bytes), big-endian.
const INFO: &str = "record_info";
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
    /// Every record's expiry and value size, and the records by expiry: what eviction reads.
    index: RefCell<Index>,
    /// Record writes waiting for the next commit, and the turn to commit.
    queued: RefCell<Vec<QueuedWrite>>,
    committing: futures::lock::Mutex<()>,
}

/// A record write waiting for a commit: the key, the record and its info (or `None`: delete), and where
/// the commit's result goes.
type QueuedWrite = (Key, Option<(JsValue, JsValue)>, oneshot::Sender<Result<(), StoreError>>);

#[derive(Default)]
struct Index {
    info: BTreeMap<Key, (Instant, usize)>,
    by_expiry: BTreeSet<(Instant, Key)>,
}

impl Index {
    fn insert(&mut self, key: Key, expires: Instant, size: usize) {
        if let Some((old, _)) = self.info.insert(key, (expires, size)) {
            self.by_expiry.remove(&(old, key));
        }
        self.by_expiry.insert((expires, key));
    }

    fn remove(&mut self, key: &Key) -> Option<(Instant, usize)> {
        let old = self.info.remove(key)?;
        self.by_expiry.remove(&(old.0, *key));
        Some(old)
    }
}

fn encode_info(expires: Instant, size: usize) -> Vec<u8> {
    let mut out = expires.as_millis().to_be_bytes().to_vec();
    out.extend_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_be_bytes());
    out
}

fn decode_info(key: &[u8], bytes: &[u8]) -> Result<RecordInfo, StoreError> {
    let corrupt = || StoreError::Corrupt { entry: "record info".into(), what: "not 12 bytes".into() };
    let (head, size) = bytes.split_at_checked(8).ok_or_else(corrupt)?;
    let expires = Instant::from_millis(u64::from_be_bytes(head.try_into().map_err(|_| corrupt())?));
    let size = u32::from_be_bytes(size.try_into().map_err(|_| corrupt())?) as usize;
    Ok(RecordInfo { key: crate::decode_key(key)?, expires, size })
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
            .version(2)
            .add_object_store(ObjectStore::new(RECORDS))
            .add_object_store(ObjectStore::new(INFO))
            .add_object_store(ObjectStore::new(META))
            .build()
            .await
            .map_err(idb)?;
        let store = IdbStore {
            db: Some(db),
            budget,
            used: Cell::new(0),
            evicted: Rc::new(Cell::new(0)),
            index: RefCell::new(Index::default()),
            queued: RefCell::new(Vec::new()),
            committing: futures::lock::Mutex::new(()),
        };
        let mut infos = store.scan_info().await?;
        if infos.is_empty() {
            // A database of the first version has records but no record info: made once from the values.
            infos = store.index_values().await?;
        }
        let mut index = store.index.borrow_mut();
        for r in infos {
            store.used.set(store.used.get() + cost(r.size));
            index.insert(r.key, r.expires, r.size);
        }
        drop(index);
        Ok(store)
    }

    /// The record info entries.
    async fn scan_info(&self) -> Result<Vec<RecordInfo>, StoreError> {
        let tx = self.db()?.transaction(&[INFO], TransactionMode::ReadOnly).map_err(idb)?;
        let all = tx.store(INFO).map_err(idb)?.scan(None, None, None, None).await.map_err(idb)?;
        drop(tx);
        let decode = |k: &JsValue, v: &JsValue| decode_info(&to_vec(k, "record key")?, &to_vec(v, "record info")?);
        let mut out = Vec::with_capacity(all.len());
        for (k, v) in all {
            match decode(&k, &v) {
                Ok(info) => out.push(info),
                Err(e) => self.drop_corrupt(k, e).await?,
            }
        }
        Ok(out)
    }

    /// An entry that does not decode: reported and removed with its record, so that it costs that entry
    /// and not the others (nor the tab's start).
    async fn drop_corrupt(&self, key: JsValue, e: StoreError) -> Result<(), StoreError> {
        tracing::warn!("{e}: skipped and removed");
        self.write(RECORDS, key.clone(), None).await?;
        self.write(INFO, key, None).await
    }

    /// Reads every record once to write its info entry (a database from before record info existed).
    async fn index_values(&self) -> Result<Vec<RecordInfo>, StoreError> {
        let tx = self.db()?.transaction(&[RECORDS], TransactionMode::ReadOnly).map_err(idb)?;
        let all = tx.store(RECORDS).map_err(idb)?.scan(None, None, None, None).await.map_err(idb)?;
        drop(tx);
        let mut out = Vec::with_capacity(all.len());
        for (k, v) in all {
            match to_vec(&k, "record key").and_then(|key| record_info(&key, &to_vec(&v, "record")?)) {
                Ok(info) => out.push(info),
                Err(e) => self.drop_corrupt(k, e).await?,
            }
        }
        for r in &out {
            self.write(INFO, bytes(r.key.as_bytes()), Some(bytes(&encode_info(r.expires, r.size)))).await?;
        }
        Ok(out)
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

    /// Puts (or deletes) a record and its info entry in one transaction, and waits for it to commit.
    /// Writes (or with `None` deletes) a record and its info, and waits for the commit: the write is
    /// queued, and whoever holds the turn commits everything queued in one transaction.
    async fn write_record(&self, key: &Key, value: Option<(JsValue, JsValue)>) -> Result<(), StoreError> {
        let (tx, mut rx) = oneshot::channel();
        self.queued.borrow_mut().push((*key, value, tx));
        let _turn = self.committing.lock().await;
        let abandoned = || StoreError::Backend("the commit carrying this write was abandoned".into());
        match rx.try_recv() {
            Ok(Some(done)) => return done, // committed by the turn before ours
            Ok(None) => {}
            Err(_) => return Err(abandoned()),
        }
        let batch = std::mem::take(&mut *self.queued.borrow_mut());
        let (writes, waiting): (Vec<_>, Vec<_>) = batch.into_iter().map(|(k, v, tx)| ((k, v), tx)).unzip();
        let result = self.commit(&writes).await;
        for w in waiting {
            let _ = w.send(result.clone());
        }
        // Our own write was queued, so it was in this batch.
        rx.try_recv().ok().flatten().unwrap_or_else(|| Err(abandoned()))
    }

    /// One read-write transaction over the records and their info.
    async fn commit(&self, writes: &[(Key, Option<(JsValue, JsValue)>)]) -> Result<(), StoreError> {
        let tx = self.db()?.transaction(&[RECORDS, INFO], TransactionMode::ReadWrite).map_err(idb)?;
        let (records, info) = (tx.store(RECORDS).map_err(idb)?, tx.store(INFO).map_err(idb)?);
        if writes.iter().all(|(_, v)| v.is_some()) {
            // Puts only (the usual case): every request of both stores goes out at once, and a failed one
            // aborts the transaction, which `done` reports; waiting on each in turn cost a round trip per
            // record, and waiting on the records before the info one more per commit (under a file's load
            // in the e2e a round trip to the browser's storage takes ~10 ms: commits 30 → 25 ms).
            let key = |k: &Key| Some(bytes(k.as_bytes()));
            let puts = || writes.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v)));
            let (records_put, info_put) = futures::join!(
                records.put_all(puts().map(|(k, (record, _))| (record.clone(), key(k)))),
                info.put_all(puts().map(|(k, (_, head))| (head.clone(), key(k))))
            );
            records_put.map_err(idb)?;
            info_put.map_err(idb)?;
            tx.done().await.map_err(idb)?;
            return Ok(());
        }
        for (key, value) in writes {
            match value {
                Some((record, head)) => {
                    records.put(record, Some(&bytes(key.as_bytes()))).await.map_err(idb)?;
                    info.put(head, Some(&bytes(key.as_bytes()))).await.map_err(idb)?;
                }
                None => {
                    records.delete(bytes(key.as_bytes())).await.map_err(idb)?;
                    info.delete(bytes(key.as_bytes())).await.map_err(idb)?;
                }
            }
        }
        tx.done().await.map_err(idb)?;
        Ok(())
    }

    /// Keeps a JavaScript value that IndexedDB can store as it is, but that has no bytes to give: a
    /// non-extractable `CryptoKey`, which the browser stores without ever handing out its secret.
    pub async fn put_meta_value(&self, name: &str, value: &JsValue) -> Result<(), StoreError> {
        check_name(name)?;
        self.write(META, name.into(), Some(value.clone())).await
    }

    /// The value kept by [`IdbStore::put_meta_value`].
    pub async fn get_meta_value(&self, name: &str) -> Result<Option<JsValue>, StoreError> {
        check_name(name)?;
        self.read(META, name.into()).await
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

    /// Evicts about a quarter of the records (at least one), those that expire first, never `keep`: chosen
    /// from the index, no value read.
    async fn evict(&self, keep: &Key) -> Result<usize, StoreError> {
        let victims: Vec<Key> = {
            let index = self.index.borrow();
            let n = index.info.len().saturating_sub(usize::from(index.info.contains_key(keep))).div_ceil(4);
            index.by_expiry.iter().map(|(_, k)| *k).filter(|k| k != keep).take(n).collect()
        };
        for key in &victims {
            self.remove_record(key).await?;
        }
        self.evicted.set(self.evicted.get() + victims.len() as u64);
        Ok(victims.len())
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
        let encoded = bytes(&encode_record(&value, expires));
        let head = bytes(&encode_info(expires, value.len()));
        for _ in 0..MAX_EVICTION_ROUNDS {
            let old_cost = self.index.borrow().info.get(&key).map_or(0, |(_, size)| cost(*size));
            let over_budget = self.used.get().saturating_sub(old_cost) + new_cost > self.budget;
            if !over_budget {
                match self.write_record(&key, Some((encoded.clone(), head.clone()))).await {
                    Ok(()) => {
                        self.used.set(self.used.get().saturating_sub(old_cost) + new_cost);
                        self.index.borrow_mut().insert(key, expires, value.len());
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
        self.write_record(key, None).await?;
        if let Some((_, size)) = self.index.borrow_mut().remove(key) {
            self.used.set(self.used.get().saturating_sub(cost(size)));
        }
        Ok(())
    }

    async fn records(&self) -> Result<Vec<RecordInfo>, StoreError> {
        let index = self.index.borrow();
        Ok(index
            .info
            .iter()
            .map(|(key, (expires, size))| RecordInfo { key: *key, expires: *expires, size: *size })
            .collect())
    }

    async fn remove_expired(&self, now: Instant) -> Result<usize, StoreError> {
        let expired: Vec<Key> =
            self.index.borrow().by_expiry.iter().take_while(|(e, _)| *e <= now).map(|(_, k)| *k).collect();
        for key in &expired {
            self.remove_record(key).await?;
        }
        Ok(expired.len())
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
