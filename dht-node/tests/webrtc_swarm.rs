//! Native nodes over WebRTC through a real signaling server (the `signaling-server` library, in this
//! process): ten `dht-node` processes, some TCP-only, some WebRTC-only, some both; every put and get across
//! them succeeds.
//!
//! Runs in a fresh network namespace holding only a loopback interface when the test may create one (root),
//! so nothing can leave the machine; otherwise on the host's loopback, and says so.

mod common;

use common::{ctl_dir as ctl, signaling_server, Proc};
use signaling_server::server::ServerConfig;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Moves this thread (and the processes it spawns) into a new network namespace with loopback up.
fn isolate() -> bool {
    // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's network namespace; no memory is shared.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        return false;
    }
    let up = Command::new("ip").args(["link", "set", "lo", "up"]).status();
    matches!(up, Ok(s) if s.success())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Tcp,
    Rtc,
    Both,
}

fn spawn(dir: &Path, kind: Kind, signaling: &str, bootstrap: Option<&str>) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dht-node"));
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(dir).env("RUST_LOG", "warn");
    if kind != Kind::Tcp {
        cmd.args(["--signaling", signaling]);
    }
    if kind == Kind::Rtc {
        cmd.arg("--no-tcp");
    }
    if let (Some(b), true) = (bootstrap, kind != Kind::Rtc) {
        cmd.args(["--bootstrap", b]);
    }
    let log = std::fs::File::create(dir.with_extension("log")).unwrap();
    let child = cmd.stdout(Stdio::null()).stderr(log).spawn().expect("dht-node starts");
    Proc { child, dir: dir.to_owned() }
}

#[test]
fn tcp_webrtc_and_mixed_nodes_put_and_get_across_each_other() {
    let isolated = isolate();
    if isolated {
        eprintln!("running in a fresh network namespace (loopback only)");
    } else {
        eprintln!("cannot create a network namespace (not root?): running on the host's loopback");
    }
    let (addr, _server) = signaling_server(ServerConfig::default());
    let url = format!("ws://{addr}/ws");

    let root = tempfile::tempdir().unwrap();
    let kinds = [
        Kind::Both,
        Kind::Tcp,
        Kind::Tcp,
        Kind::Tcp,
        Kind::Rtc,
        Kind::Rtc,
        Kind::Rtc,
        Kind::Both,
        Kind::Both,
        Kind::Both,
    ];
    let dirs: Vec<PathBuf> = (0..kinds.len()).map(|i| root.path().join(format!("n{i}"))).collect();
    let mut procs = vec![spawn(&dirs[0], kinds[0], &url, None)];
    let id0 = ctl(&dirs[0], "ID");
    let seed_tcp = id0.split(' ').find_map(|a| a.strip_prefix("tcp:")).expect("node 0 has TCP").to_owned();
    for (dir, kind) in dirs.iter().zip(kinds).skip(1) {
        procs.push(spawn(dir, kind, &url, Some(&seed_tcp)));
        // Each node registers (or listens) before the next asks the server for peers.
        let _ = ctl(dir, "ID");
    }
    for (p, kind) in procs.iter().zip(kinds) {
        let dir = &p.dir;
        let id = ctl(dir, "ID");
        assert_eq!(id.contains(" tcp:"), kind != Kind::Rtc, "{kind:?}: {id}");
        assert_eq!(id.contains(" rtc:ws://"), kind != Kind::Tcp, "{kind:?}: {id}");
        let peers = ctl(dir, "PEERS");
        let n: usize = peers.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(n >= 1, "{kind:?} node knows nobody: {peers}");
    }
    // Three puts from every node; every key read back from every other node.
    let started = Instant::now();
    let mut keys = Vec::new();
    for (i, dir) in procs.iter().map(|p| &p.dir).enumerate() {
        for j in 0..3 {
            let name = format!("k{i}-{j}");
            let answer = ctl(dir, &format!("PUT {name} v-{i}-{j}"));
            assert!(answer.starts_with("OK seq=1 acks="), "put {name} from {:?}: {answer}", kinds[i]);
            let owner = answer.rsplit_once("owner=").expect("the put names its owner").1.to_owned();
            keys.push((name, format!("v-{i}-{j}"), i, owner));
        }
    }
    let mut gets = 0;
    for (name, value, from, owner) in &keys {
        for (i, dir) in procs.iter().map(|p| &p.dir).enumerate() {
            if i == *from {
                continue;
            }
            let answer = ctl(dir, &format!("GET {name} {owner}"));
            assert_eq!(answer, format!("VALUE {value}"), "get {name} (put by {:?}) from {:?}", kinds[*from], kinds[i]);
            gets += 1;
        }
    }
    eprintln!("{} puts and {gets} gets across TCP/WebRTC/mixed nodes in {:?}", keys.len(), started.elapsed());
}

/// The links of `dir`'s node whose setup signals went over the DHT: `(peer id, relays)`.
fn relayed_links(dir: &Path) -> Vec<(String, u8)> {
    let paths = ctl(dir, "PATHS");
    paths
        .split(' ')
        .skip(2)
        .filter_map(|entry| {
            let (id, fields) = entry.split_once('=')?;
            let relays: u8 = fields.rsplit(',').next()?.parse().ok()?;
            (relays > 0).then(|| (id.to_owned(), relays))
        })
        .collect()
}

fn id_of(dir: &Path) -> String {
    ctl(dir, "ID").split(' ').nth(1).expect("ID <id> ...").to_owned()
}

#[test]
fn nodes_on_different_signaling_servers_reach_each_other_through_the_dht() {
    let isolated = isolate();
    eprintln!("{}", if isolated { "in a fresh network namespace" } else { "on the host's loopback" });
    let (addr1, _server1) = signaling_server(ServerConfig::default());
    let (addr2, _server2) = signaling_server(ServerConfig::default());
    let (url1, url2) = (format!("ws://{addr1}/ws"), format!("ws://{addr2}/ws"));
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| root.path().join(name);
    // Two native nodes, one registered on each server, linked over TCP; a WebRTC-only node on each server.
    let n1 = spawn(&dir("n1"), Kind::Both, &url1, None);
    let seed_tcp = ctl(&n1.dir, "ID").split(' ').find_map(|a| a.strip_prefix("tcp:")).unwrap().to_owned();
    let n2 = spawn(&dir("n2"), Kind::Both, &url2, Some(&seed_tcp));
    let _ = ctl(&n2.dir, "ID");
    let a = spawn(&dir("a"), Kind::Rtc, &url1, None);
    let _ = ctl(&a.dir, "ID");
    let c = spawn(&dir("c"), Kind::Rtc, &url2, None);
    let (id_a, id_c) = (id_of(&a.dir), id_of(&c.dir));

    // A's record reaches all three others (C and N2 only through relayed signals: A has no TCP and is not on
    // their server), and C reads it; then the other way round.
    let started = Instant::now();
    let put = ctl(&a.dir, "PUT from-a 1");
    assert!(put.starts_with("OK seq=1 acks=3 "), "{put}");
    let owner_a = put.rsplit_once("owner=").unwrap().1.to_owned();
    assert_eq!(ctl(&c.dir, &format!("GET from-a {owner_a}")), "VALUE 1");
    let put = ctl(&c.dir, "PUT from-c 2");
    assert!(put.starts_with("OK seq=1 acks=3 "), "{put}");
    let owner_c = put.rsplit_once("owner=").unwrap().1.to_owned();
    assert_eq!(ctl(&a.dir, &format!("GET from-c {owner_c}")), "VALUE 2");

    // A and C hold a WebRTC link set up through the native nodes, and the natives relayed for them.
    let (from_a, from_c) = (relayed_links(&a.dir), relayed_links(&c.dir));
    let a_c = from_a.iter().find(|(id, _)| *id == id_c).or_else(|| from_c.iter().find(|(id, _)| *id == id_a));
    assert!(a_c.is_some(), "no relayed link between A and C: {from_a:?} / {from_c:?}");
    let forwarded = |p: &Proc| -> u64 {
        let stats = ctl(&p.dir, "RELAYED");
        stats.split(' ').find_map(|f| f.strip_prefix("forwarded=")).unwrap().parse().unwrap()
    };
    let (f1, f2) = (forwarded(&n1), forwarded(&n2));
    assert!(f1 > 0 && f2 > 0, "both natives relay: {f1} / {f2}");
    eprintln!(
        "across two signaling servers in {:?}: A's relayed links {from_a:?}, C's {from_c:?}; signals forwarded by N1 {f1}, N2 {f2}",
        started.elapsed()
    );
}
