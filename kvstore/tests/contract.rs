#![cfg(not(target_arch = "wasm32"))]
//! Every native backend passes the shared contract (the browser's is in `idb.rs`).

use futures::executor::block_on;
use kvstore::{contract, MemoryStore, SledStore, Store};

#[test]
fn memory_store_meets_the_contract() {
    let store = MemoryStore::new();
    block_on(contract::run(|| std::future::ready(store.clone()))).unwrap();
}

#[test]
fn sled_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    block_on(contract::run(|| std::future::ready(SledStore::open(&path).expect("sled opens")))).unwrap();
}

/// A corrupt entry (a bad key, a value that does not decode) costs that entry alone: the others are
/// listed, the bad ones are dropped (and logged), a read of one is an error, not a panic.
#[test]
fn corrupt_sled_entries_are_skipped_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let good = |n: u8| dht_core::Key::from_name(&[n]);
    {
        let store = SledStore::open(&path).unwrap();
        for n in 0..3u8 {
            block_on(store.put_record(good(n), vec![n; 10], dht_core::Instant::from_millis(1_000))).unwrap();
        }
    }
    let bad_value = dht_core::Key::from_name(b"bad");
    {
        let db = sled::open(&path).unwrap();
        let tree = db.open_tree("records").unwrap();
        tree.insert(b"short key", b"xy".to_vec()).unwrap();
        tree.insert(bad_value.as_bytes(), b"xy".to_vec()).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(&path).unwrap();
    assert!(block_on(store.get_record(&bad_value)).is_err(), "a corrupt value reads as an error");
    let mut listed: Vec<_> = block_on(store.records()).unwrap().into_iter().map(|r| r.key).collect();
    listed.sort();
    let mut expect: Vec<_> = (0..3).map(good).collect();
    expect.sort();
    assert_eq!(listed, expect, "the good records, and only them");
    assert_eq!(block_on(store.get_record(&bad_value)).unwrap(), None, "the corrupt entry is gone");
    assert_eq!(block_on(store.get_record(&good(1))).unwrap().map(|r| r.value), Some(vec![1; 10]));
}

/// Many acknowledged writes in flight at once all finish (sled 0.34's own `flush_async` deadlocks here),
/// and what they wrote is there.
#[test]
fn concurrent_sled_writes_all_finish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let store = SledStore::open(&path).unwrap();
        let writes = (0..200u32).map(|i| {
            let key = dht_core::Key::from_name(&i.to_be_bytes());
            let store = &store;
            async move { store.put_record(key, vec![i as u8; 20_000], dht_core::Instant::from_millis(1)).await }
        });
        let results = block_on(futures::future::join_all(writes));
        let held = block_on(store.records()).unwrap().len();
        let _ = tx.send((results.into_iter().filter(|r| r.is_err()).count(), held));
    });
    let done = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("200 concurrent writes finish within 60 s");
    assert_eq!(done, (0, 200), "(failed writes, records held)");
}

/// A store opened while another instance of it is still being let go of waits for it (a restart in the
/// same process, or sled's flusher finishing its round) instead of failing at once.
#[test]
fn opening_waits_for_a_store_being_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let first = SledStore::open(&path).unwrap();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(first);
    });
    let second = SledStore::open(&path);
    closer.join().unwrap();
    assert!(second.is_ok(), "{:?}", second.err());
}
