//! Files between real processes over TCP on loopback: node A publishes a file (B holds it too), node C
//! joins afterwards and fetches it whole from them; a one-byte edit re-sends only the chunks around it;
//! bad requests get one clear error line. Size: `WEBDHT_FILE_MIB` (default 8; `cargo xtask bench` runs
//! 64 in release and reports the rates this prints as its last line); `WEBDHT_PEER_RATE` sets the nodes'
//! `--peer-rate` (the per-link message budget: a chunk costs a lookup and a store on the one link there is).

mod common;

use common::{ctl, spawn_with, wait_for_peers};
use std::time::{Duration, Instant};

/// The value of `name=` in an `OK …` answer.
fn field<'a>(answer: &'a str, name: &str) -> &'a str {
    answer
        .split(' ')
        .find_map(|w| w.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name}= in {answer:?}"))
}

fn num(answer: &str, name: &str) -> u64 {
    field(answer, name).parse().unwrap_or_else(|_| panic!("{name} is not a number in {answer:?}"))
}

/// Random-looking bytes (xorshift), so chunks do not repeat.
fn file_bytes(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

#[test]
fn a_file_goes_from_one_node_to_another_and_an_edit_sends_little() {
    let mib: usize = std::env::var("WEBDHT_FILE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let rate = std::env::var("WEBDHT_PEER_RATE").unwrap_or_else(|_| "1000".into());
    let flags = ["--peer-rate", rate.as_str()];
    let root = tempfile::tempdir().unwrap();
    let spawn = |name: &str, seed: Option<&str>| spawn_with(&root.path().join(name), seed, &flags);
    let a = spawn("a", None);
    let seed = field(&ctl(&a, "ID").replace("ID ", "ID=").replace(" tcp:", " tcp="), "tcp").to_owned();
    let b = spawn("b", Some(&seed));
    wait_for_peers(&a, 1);
    wait_for_peers(&b, 1);

    let data = file_bytes(mib << 20);
    let src = root.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let started = Instant::now();
    let published = ctl(&a, &format!("PUBLISH {}", src.display()));
    let publish_took = started.elapsed();
    assert!(published.starts_with("OK hash="), "{published}");
    assert_eq!(num(&published, "bytes"), data.len() as u64);
    assert_eq!(num(&published, "sent"), num(&published, "chunks"));
    assert_eq!(num(&published, "unacked"), 0, "B acknowledged every block: {published}");
    let hash = field(&published, "hash").to_owned();

    // C joins after the publish, so it holds none of the file: every chunk comes over TCP.
    let c = spawn("c", Some(&seed));
    wait_for_peers(&c, 2);
    let out = root.path().join("out.bin");
    let started = Instant::now();
    let fetched = ctl(&c, &format!("FETCH {hash} {}", out.display()));
    let fetch_took = started.elapsed();
    assert!(fetched.starts_with("OK bytes="), "{fetched}");
    assert_eq!(num(&fetched, "resumed"), 0);
    assert!(std::fs::read(&out).unwrap() == data, "the fetched file is the published one");

    // One byte inserted in the middle: only the chunks around it and the manifest go out again.
    let mut edited = data.clone();
    edited.insert(data.len() / 2, b'!');
    std::fs::write(&src, &edited).unwrap();
    let republished = ctl(&a, &format!("PUBLISH {}", src.display()));
    assert!(republished.starts_with("OK hash="), "{republished}");
    let (sent, chunks) = (num(&republished, "sent"), num(&republished, "chunks"));
    assert!((1..=3).contains(&sent), "{sent} of {chunks} chunks sent again: {republished}");

    // Bad requests: one clear line each, and the node goes on.
    let chunk_hash = ctl(&a, "PUT-IMMUTABLE not-a-manifest");
    let chunk_hash = field(&chunk_hash, "hash");
    let not_manifest = ctl(&c, &format!("FETCH {chunk_hash} {}", root.path().join("x").display()));
    assert!(not_manifest.starts_with("ERR") && not_manifest.contains("not a file manifest"), "{not_manifest}");
    let unknown = ctl(&c, &format!("FETCH {} {}", "ab".repeat(32), root.path().join("y").display()));
    assert!(unknown.starts_with("ERR") && unknown.contains("not found"), "{unknown}");
    let missing = ctl(&a, &format!("PUBLISH {}", root.path().join("nothing-here").display()));
    assert!(missing.starts_with("ERR") && missing.contains("nothing-here"), "{missing}");
    assert!(ctl(&a, "FETCH zz").starts_with("ERR FETCH needs a hash and a path"));
    assert!(ctl(&c, "PEERS").starts_with("PEERS 2"), "C still runs");

    println!(
        "{{\"file_mib\":{mib},\"peer_rate\":{rate},\"publish_mb_s\":{:.1},\"fetch_mb_s\":{:.1},\"chunks\":{chunks},\"edit_sent\":{sent}}}",
        mb_per_s(data.len(), publish_took),
        mb_per_s(data.len(), fetch_took)
    );
}
