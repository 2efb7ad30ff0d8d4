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

#[test]
fn corrupt_sled_entries_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = sled::open(&path).unwrap();
        let tree = db.open_tree("records").unwrap();
        tree.insert(b"short key", b"xy".to_vec()).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(&path).unwrap();
    let err = block_on(store.records()).unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
}
