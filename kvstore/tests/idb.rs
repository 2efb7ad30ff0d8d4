//! The IndexedDB backend in a real browser (headless Chromium through `wasm-bindgen-test`; `cargo xtask
//! test` runs it): the shared contract, and eviction at the byte budget.
#![cfg(target_arch = "wasm32")]

use dht_core::{Instant, Key};
use kvstore::{contract, IdbStore, Store};
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn idb_store_meets_the_contract() {
    let name = "kvstore-contract";
    IdbStore::delete(name).await.unwrap();
    contract::run(|| async { IdbStore::open(name, 1 << 30).await.expect("IndexedDB opens") }).await.unwrap();
    IdbStore::delete(name).await.unwrap();
}

#[wasm_bindgen_test]
async fn the_budget_evicts_the_records_that_expire_first() {
    let name = "kvstore-budget";
    IdbStore::delete(name).await.unwrap();
    // Room for about ten 1000-byte records.
    let store = IdbStore::open(name, 10 * 1040).await.unwrap();
    let key = |n: u32| Key::from_name(&n.to_be_bytes());
    for n in 0..30u32 {
        store.put_record(key(n), vec![n as u8; 1000], Instant::from_millis(1_000 + n as u64)).await.unwrap();
        assert!(store.used() <= 10 * 1040, "put {n}: {} bytes used", store.used());
    }
    let evicted = store.evicted().get();
    let left = store.records().await.unwrap();
    assert_eq!(evicted as usize + left.len(), 30);
    assert!(evicted >= 20, "evicted {evicted}");
    // The newest record is always kept, and the survivors are the latest to expire.
    assert!(store.get_record(&key(29)).await.unwrap().is_some());
    let oldest_left = left.iter().map(|r| r.expires).min().unwrap();
    assert!(oldest_left >= Instant::from_millis(1_000 + evicted), "{oldest_left:?}");
    // A record larger than the whole budget is refused and nothing is lost for it.
    let before = store.records().await.unwrap().len();
    assert!(store.put_record(key(99), vec![0; 20_000], Instant::from_millis(9_999)).await.is_err());
    assert_eq!(store.records().await.unwrap().len(), before);
    // The usage is rebuilt on reopen.
    let used = store.used();
    drop(store);
    let store = IdbStore::open(name, 10 * 1040).await.unwrap();
    assert_eq!(store.used(), used);
    drop(store);
    IdbStore::delete(name).await.unwrap();
}

/// Writes in flight at once are committed in groups, and each is there afterwards, with deletes among them.
#[wasm_bindgen_test]
async fn concurrent_writes_commit_together_and_all_land() {
    let name = "kvstore-concurrent";
    IdbStore::delete(name).await.unwrap();
    let store = IdbStore::open(name, 1 << 30).await.unwrap();
    let key = |n: u32| Key::from_name(&n.to_be_bytes());
    let writes = (0..100u32).map(|n| store.put_record(key(n), vec![n as u8; 5000], Instant::from_millis(n as u64)));
    let results = futures::future::join_all(writes).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let gone: Vec<Key> = (0..100u32).step_by(2).map(key).collect();
    let removes = gone.iter().map(|k| store.remove_record(k));
    let puts = (100..110u32).map(|n| store.put_record(key(n), vec![1; 10], Instant::from_millis(1)));
    let (removed, put) = futures::join!(futures::future::join_all(removes), futures::future::join_all(puts));
    assert!(removed.iter().chain(&put).all(Result::is_ok));
    assert_eq!(store.records().await.unwrap().len(), 60);
    for n in [1u32, 51, 99, 105] {
        assert!(store.get_record(&key(n)).await.unwrap().is_some(), "record {n}");
    }
    assert!(store.get_record(&key(50)).await.unwrap().is_none());
    IdbStore::delete(name).await.unwrap();
}

/// A corrupt entry (an info entry that does not decode) costs that entry alone: the database still opens
/// (the tab starts), the other records are there, and the bad entry is gone.
#[wasm_bindgen_test]
async fn a_corrupt_entry_does_not_stop_the_store_from_opening() {
    use rexie::{ObjectStore, Rexie, TransactionMode};
    let name = "kvstore-corrupt";
    IdbStore::delete(name).await.unwrap();
    let key = |n: u32| Key::from_name(&n.to_be_bytes());
    {
        let store = IdbStore::open(name, 1 << 30).await.unwrap();
        for n in 0..3u32 {
            store.put_record(key(n), vec![n as u8; 100], Instant::from_millis(5_000)).await.unwrap();
        }
    }
    {
        let db = Rexie::builder(name)
            .version(2)
            .add_object_store(ObjectStore::new("records"))
            .add_object_store(ObjectStore::new("record_info"))
            .add_object_store(ObjectStore::new("meta"))
            .build()
            .await
            .unwrap();
        let tx = db.transaction(&["record_info", "records"], TransactionMode::ReadWrite).unwrap();
        let bytes = |b: &[u8]| wasm_bindgen::JsValue::from(js_sys::Uint8Array::from(b));
        tx.store("record_info").unwrap().put(&bytes(b"xy"), Some(&bytes(&[7; 32]))).await.unwrap();
        tx.store("records").unwrap().put(&bytes(b"junk"), Some(&bytes(&[7; 32]))).await.unwrap();
        tx.done().await.unwrap();
        db.close();
    }
    let store = IdbStore::open(name, 1 << 30).await.expect("opens despite the corrupt entry");
    let mut listed: Vec<Key> = store.records().await.unwrap().into_iter().map(|r| r.key).collect();
    listed.sort();
    let mut expect: Vec<Key> = (0..3).map(key).collect();
    expect.sort();
    assert_eq!(listed, expect);
    assert_eq!(store.get_record(&Key::from_bytes([7; 32])).await.unwrap(), None, "the corrupt entry is gone");
    drop(store);
    IdbStore::delete(name).await.unwrap();
}
