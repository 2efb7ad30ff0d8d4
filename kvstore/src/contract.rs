//! The contract every [`Store`] backend must meet, as one async function each backend's tests run.

use crate::{Store, StoreError};
use dht_core::{Address, Contact, Instant, Key, NodeId};
use std::future::Future;

fn key(n: u8) -> Key {
    Key::from_name(&[n])
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn check(cond: bool, what: &str) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what.to_owned())
    }
}

fn ok<T>(r: Result<T, StoreError>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Runs the whole contract. `open` must return a handle to the *same* underlying storage each time it is
/// called (reopening it where the backend is persistent); the storage must start empty. Opening is async
/// because it is in the browser.
pub async fn run<S: Store, F: Future<Output = S>>(mut open: impl FnMut() -> F) -> Result<(), String> {
    let store = open().await;
    check(ok(store.records().await, "records")?.is_empty(), "a new store is empty")?;
    check(ok(store.get_record(&key(1)).await, "get")?.is_none(), "absent key reads as None")?;
    check(ok(store.load_contacts().await, "load_contacts")?.is_empty(), "no contacts yet")?;

    // Put, get, overwrite.
    ok(store.put_record(key(1), b"one".to_vec(), at(1_000)).await, "put 1")?;
    ok(store.put_record(key(2), vec![], at(2_000)).await, "put 2 (empty value)")?;
    ok(store.put_record(key(3), vec![7; 70_000], at(3_000)).await, "put 3 (large value)")?;
    let r1 = ok(store.get_record(&key(1)).await, "get 1")?.ok_or("record 1 missing")?;
    check(r1.value == b"one" && r1.expires == at(1_000), "record 1 reads back as written")?;
    ok(store.put_record(key(1), b"uno".to_vec(), at(1_500)).await, "overwrite 1")?;
    let r1 = ok(store.get_record(&key(1)).await, "get 1 again")?.ok_or("record 1 missing after overwrite")?;
    check(r1.value == b"uno" && r1.expires == at(1_500), "an overwrite replaces value and expiry")?;
    let r3 = ok(store.get_record(&key(3)).await, "get 3")?.ok_or("record 3 missing")?;
    check(r3.value.len() == 70_000, "a large value reads back whole")?;

    // Iteration: key order, sizes.
    let infos = ok(store.records().await, "records")?;
    let mut keys: Vec<Key> = vec![key(1), key(2), key(3)];
    keys.sort();
    check(infos.iter().map(|i| i.key).collect::<Vec<_>>() == keys, "records() lists every key in order")?;
    let size_of = |k: Key| infos.iter().find(|i| i.key == k).map(|i| i.size);
    check(size_of(key(2)) == Some(0) && size_of(key(3)) == Some(70_000), "records() reports sizes")?;

    // Delete.
    ok(store.remove_record(&key(2)).await, "remove 2")?;
    ok(store.remove_record(&key(99)).await, "remove of an absent key")?;
    check(ok(store.get_record(&key(2)).await, "get 2")?.is_none(), "a removed record is gone")?;

    // Expiry: at or before `now` goes.
    let removed = ok(store.remove_expired(at(1_500)).await, "remove_expired")?;
    check(removed == 1, "remove_expired removes exactly the expired records")?;
    check(ok(store.get_record(&key(1)).await, "get 1")?.is_none(), "the expired record is gone")?;
    check(ok(store.get_record(&key(3)).await, "get 3")?.is_some(), "the live record stays")?;

    // Routing table and metadata.
    let contacts = vec![
        Contact { id: NodeId::from_public_key(&[1; 32]), addrs: vec![Address::new("tcp:127.0.0.1:4000")] },
        Contact::bare(NodeId::from_public_key(&[2; 32])),
    ];
    ok(store.save_contacts(&contacts).await, "save_contacts")?;
    check(ok(store.load_contacts().await, "load_contacts")? == contacts, "contacts read back")?;
    ok(store.save_contacts(&contacts[1..]).await, "save_contacts again")?;
    check(ok(store.load_contacts().await, "load_contacts")? == contacts[1..], "a save replaces the table")?;
    ok(store.put_meta("identity", &[9; 32]).await, "put_meta")?;
    check(ok(store.get_meta("identity").await, "get_meta")? == Some(vec![9; 32]), "metadata reads back")?;
    check(ok(store.get_meta("other").await, "get_meta")?.is_none(), "absent metadata is None")?;
    check(store.put_meta("", b"x").await.is_err(), "an empty metadata name is refused")?;
    check(store.get_meta(&"n".repeat(65)).await.is_err(), "a too long metadata name is refused")?;
    drop(store);

    // Reopen keeps everything.
    let store = open().await;
    let r3 = ok(store.get_record(&key(3)).await, "get 3 after reopen")?.ok_or("record 3 lost on reopen")?;
    check(r3.value == vec![7; 70_000] && r3.expires == at(3_000), "records survive a reopen")?;
    check(ok(store.records().await, "records after reopen")?.len() == 1, "nothing else survives")?;
    check(ok(store.load_contacts().await, "contacts after reopen")? == contacts[1..], "contacts survive a reopen")?;
    check(ok(store.get_meta("identity").await, "meta after reopen")? == Some(vec![9; 32]), "metadata survives")?;
    Ok(())
}
