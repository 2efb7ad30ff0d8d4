//! Real `dht-node` processes on 127.0.0.1: a 20-node swarm, puts and gets across it, and nodes killed with
//! SIGKILL and restarted from their data directories.

mod common;

use common::{ctl, ctl_dir, spawn, Proc};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One control request; waits for the control socket to appear (bounded).
fn tcp_addr(p: &Proc) -> (String, String) {
    tcp_addr_dir(&p.dir)
}

fn tcp_addr_dir(dir: &Path) -> (String, String) {
    let id = ctl_dir(dir, "ID");
    let mut parts = id.split(' ').skip(1);
    let node_id = parts.next().unwrap().to_owned();
    let addr = parts.next().unwrap().strip_prefix("tcp:").unwrap().to_owned();
    (node_id, addr)
}

/// The key node `p` signs its records with (hex).
fn owner(p: &Proc) -> String {
    ctl(p, "OWNER").strip_prefix("OWNER ").expect("an OWNER answer").to_owned()
}

/// The number after `name=` in an answer.
fn field(answer: &str, name: &str) -> usize {
    let at = answer.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name}= in {answer}"));
    answer[at + name.len() + 1..].split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn twenty_processes_put_get_and_survive_kill_minus_nine() {
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..20).map(|i| root.path().join(format!("n{i}"))).collect();
    let mut procs = vec![spawn(&dirs[0], None)];
    let (_, seed_addr) = tcp_addr(&procs[0]);
    for dir in &dirs[1..] {
        procs.push(spawn(dir, Some(&seed_addr)));
    }
    for p in &procs {
        let peers = ctl(p, "PEERS");
        assert!(peers.starts_with("PEERS "), "{peers}");
    }
    // 100 signed puts from some nodes, gets (by owner and name) from others.
    let owners: Vec<String> = procs.iter().map(owner).collect();
    for i in 0..100 {
        let answer = ctl(&procs[i % 20], &format!("PUT key{i} value-{i}"));
        assert!(answer.starts_with("OK seq=1 acks="), "put {i}: {answer}");
        assert!(field(&answer, "acks") >= 10, "put {i}: {answer}");
        assert!(answer.ends_with(&format!("owner={}", owners[i % 20])), "put {i}: {answer}");
    }
    for i in 0..100 {
        let answer = ctl(&procs[(i + 7) % 20], &format!("GET key{i} {}", owners[i % 20]));
        assert_eq!(answer, format!("VALUE value-{i}"), "get {i}");
    }
    // kill -9 three nodes, restart them from their data directories.
    let ids_before: Vec<String> = [3, 9, 15].iter().map(|&i| tcp_addr(&procs[i]).0).collect();
    let held_before: Vec<Vec<usize>> = [3usize, 9, 15]
        .iter()
        .map(|&n| {
            (0..100)
                .filter(|i| ctl(&procs[n], &format!("LOCAL key{i} {}", owners[i % 20])).starts_with("VALUE"))
                .collect()
        })
        .collect();
    assert!(held_before.iter().all(|h| !h.is_empty()), "each victim held records: {held_before:?}");
    for &i in &[3usize, 9, 15] {
        procs[i].child.kill().unwrap();
        procs[i].child.wait().unwrap();
    }
    for (n, &i) in [3usize, 9, 15].iter().enumerate() {
        let restarted = spawn(&dirs[i], Some(&seed_addr));
        assert_eq!(tcp_addr(&restarted).0, ids_before[n], "same id after restart");
        // Everything it acknowledged storing is still in its own store.
        for k in &held_before[n] {
            let local = ctl(&restarted, &format!("LOCAL key{k} {}", owners[k % 20]));
            assert_eq!(local, format!("VALUE value-{k}"), "node {i} lost key{k}");
        }
        procs[i] = restarted;
    }
    // Every acknowledged record is still retrievable, from restarted nodes too.
    for i in 0..100 {
        let answer = ctl(&procs[[3usize, 9, 15][i % 3]], &format!("GET key{i} {}", owners[i % 20]));
        assert_eq!(answer, format!("VALUE value-{i}"), "get {i} after restarts");
    }
    assert!(ctl(&procs[0], "BOGUS").starts_with("ERR"));
}

#[test]
fn ctrl_c_shuts_down_cleanly_and_a_restart_keeps_the_routing_table() {
    let root = tempfile::tempdir().unwrap();
    let seed = spawn(&root.path().join("seed"), None);
    let (_, seed_addr) = tcp_addr(&seed);
    let others: Vec<Proc> = (0..4).map(|i| spawn(&root.path().join(format!("o{i}")), Some(&seed_addr))).collect();
    for p in &others {
        assert!(ctl(p, "PUT hello world").starts_with("OK"));
    }
    let hello = format!("GET hello {}", owner(&others[0]));
    let mut node = spawn(&root.path().join("node"), Some(&seed_addr));
    assert!(ctl(&node, &hello) == "VALUE world");
    let status = Command::new("kill").args(["-INT", &node.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit: {exit}");
    // Restarted without --bootstrap: it finds the swarm from its saved routing table.
    let again = spawn(&node.dir.clone(), None);
    assert_eq!(ctl(&again, &hello), "VALUE world");
    drop(others);
}

#[test]
fn bad_clients_are_closed_with_a_logged_reason() {
    use std::io::Read;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dht-node"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_, addr) = tcp_addr_dir(&dir);
    // Garbage, then an oversized frame header.
    let mut garbage = TcpStream::connect(&addr).unwrap();
    garbage.write_all(b"hello, is this HTTP?\r\n\r\n").unwrap();
    let mut big = TcpStream::connect(&addr).unwrap();
    big.write_all(&u32::MAX.to_be_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ctl_dir(&dir, "GET nothing"), "NOTFOUND", "the node still answers");
    child.kill().unwrap();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    child.wait().unwrap();
    let closes: Vec<&str> = log.lines().filter(|l| l.contains("inbound connection closed")).collect();
    assert!(closes.len() >= 2, "two closes logged, got:\n{log}");
    assert!(closes.iter().any(|l| l.contains("exceeds the limit")), "oversized frame reason logged:\n{log}");
}
