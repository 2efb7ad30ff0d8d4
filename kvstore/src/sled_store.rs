//! Native storage in sled. sled flushes on its own only every 500 ms, so every write that is acknowledged
//! (a record put, the identity key) is flushed first.
//!
//! Flushes go through one thread of the store's own ([`Flusher`]): sled 0.34's `flush_async` deadlocks
//! when several are in flight at once (its issue 1308, fixed only after that release; a node storing a
//! file's chunks has dozens in flight), and a blocking flush on the node's thread would stall its links.
//! The thread takes every request waiting, flushes once and answers them all (a group commit).
//!
//! On Linux sled's flush writes with `sync_file_range`, which survives a crash of the process but not a
//! power loss: it neither flushes the disk's cache nor records the file's new length. So each group commit
//! also `fdatasync`s sled's data file before anyone is answered: an acknowledged write is on the disk (as
//! far as the disk tells the truth about its cache).

use crate::{check_name, decode_record, encode_record, record_info, RecordInfo, Store, StoreError, StoredRecord};
use dht_core::{decode_contacts, encode_contacts, Contact, Instant, Key};
use futures::channel::oneshot;
use std::path::Path;

const RECORDS: &str = "records";
const META: &str = "meta";
const CONTACTS_KEY: &[u8] = b"\0routing-table";

/// A store in a sled database directory.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    /// sled's data file, opened for `fdatasync`.
    data_file: std::sync::Arc<std::fs::File>,
    records: sled::Tree,
    meta: sled::Tree,
    flusher: Flusher,
}

/// A flush request: the database to flush and its data file to sync (the thread holds them only while
/// flushing, so a store dropped and opened again finds it unlocked) and where to answer.
type FlushRequest = (sled::Db, std::sync::Arc<std::fs::File>, oneshot::Sender<Result<(), String>>);

/// Where flush requests go: each is answered once a flush that began after it was asked for has ended.
#[derive(Debug, Clone)]
struct Flusher(std::sync::mpsc::Sender<FlushRequest>);

impl Flusher {
    /// Starts the flushing thread; it ends when the last store holding this flusher is dropped.
    fn start() -> Result<Self, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<FlushRequest>();
        std::thread::Builder::new()
            .name("sled-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let batch: Vec<FlushRequest> = std::iter::once(first).chain(rx.try_iter()).collect();
                    let (db, file) = (&batch[0].0, &batch[0].1);
                    let result = db
                        .flush()
                        .map_err(|e| e.to_string())
                        .and_then(|_| file.sync_data().map_err(|e| format!("fdatasync: {e}")));
                    let waiting: Vec<_> = batch.into_iter().map(|(_, _, w)| w).collect();
                    for w in waiting {
                        let _ = w.send(result.clone());
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the flushing thread: {e}")))?;
        Ok(Flusher(tx))
    }

    async fn flush(&self, db: &sled::Db, file: &std::sync::Arc<std::fs::File>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || StoreError::Backend("the flushing thread has stopped".into());
        self.0.send((db.clone(), file.clone(), tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(StoreError::Backend)
    }
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SledStore {
    /// Opens (creating if needed) the database in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        // The lock of a store just dropped in this process may outlive it by a moment (sled's own
        // background flusher lets go of the database on its next round): wait a little for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let db = loop {
            match sled::open(path.as_ref()) {
                // sled reports it as an I/O error of kind `Other` whose text says so.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.map_err(backend)?,
            }
        };
        let records = db.open_tree(RECORDS).map_err(backend)?;
        let meta = db.open_tree(META).map_err(backend)?;
        let data_path = path.as_ref().join("db");
        let data_file = std::fs::File::open(&data_path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", data_path.display())))?;
        Ok(SledStore { db, data_file: std::sync::Arc::new(data_file), records, meta, flusher: Flusher::start()? })
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.flusher.flush(&self.db, &self.data_file).await
    }
}

impl Store for SledStore {
    async fn put_record(&self, key: Key, value: Vec<u8>, expires: Instant) -> Result<(), StoreError> {
        self.records.insert(key.as_bytes(), encode_record(&value, expires)).map_err(backend)?;
        self.flush().await
    }

    async fn get_record(&self, key: &Key) -> Result<Option<StoredRecord>, StoreError> {
        match self.records.get(key.as_bytes()).map_err(backend)? {
            Some(bytes) => decode_record(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn remove_record(&self, key: &Key) -> Result<(), StoreError> {
        self.records.remove(key.as_bytes()).map_err(backend)?;
        Ok(())
    }

    async fn records(&self) -> Result<Vec<RecordInfo>, StoreError> {
        let mut out = Vec::new();
        let mut corrupt = Vec::new();
        for item in self.records.iter() {
            let (k, v) = item.map_err(backend)?;
            match record_info(&k, &v) {
                Ok(info) => out.push(info),
                Err(e) => {
                    // One bad entry costs that entry, not the others.
                    tracing::warn!("{e}: skipped and removed");
                    corrupt.push(k);
                }
            }
        }
        for k in corrupt {
            self.records.remove(k).map_err(backend)?;
        }
        Ok(out)
    }

    async fn remove_expired(&self, now: Instant) -> Result<usize, StoreError> {
        let mut removed = 0;
        for info in self.records().await? {
            if info.expires <= now {
                self.records.remove(info.key.as_bytes()).map_err(backend)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn save_contacts(&self, contacts: &[Contact]) -> Result<(), StoreError> {
        let bytes = encode_contacts(contacts).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.meta.insert(CONTACTS_KEY, bytes).map_err(backend)?;
        self.flush().await
    }

    async fn load_contacts(&self) -> Result<Vec<Contact>, StoreError> {
        match self.meta.get(CONTACTS_KEY).map_err(backend)? {
            Some(bytes) => decode_contacts(&bytes)
                .map_err(|e| StoreError::Corrupt { entry: "routing table".into(), what: e.to_string() }),
            None => Ok(Vec::new()),
        }
    }

    async fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        check_name(name)?;
        self.meta.insert(name.as_bytes(), value).map_err(backend)?;
        self.flush().await
    }

    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_name(name)?;
        Ok(self.meta.get(name.as_bytes()).map_err(backend)?.map(|v| v.to_vec()))
    }
}
