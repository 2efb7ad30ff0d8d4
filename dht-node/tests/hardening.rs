//! Attacks one hostile peer or address can mount on a native node, each performed against real processes
//! on loopback, with the defence that stops it.

mod common;

use common::{ctl, ctl_dir, spawn, wait_for_peers, Proc};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A node's id (hex) and TCP address, from its control socket.
fn id_and_addr(dir: &Path) -> (String, String) {
    let answer = ctl_dir(dir, "ID");
    let mut parts = answer.split(' ').skip(1);
    let id = parts.next().expect("an id").to_owned();
    let addr = parts.next().and_then(|a| a.strip_prefix("tcp:")).expect("a tcp address").to_owned();
    (id, addr)
}

/// The ids `p` holds links to.
fn peers(p: &Proc) -> Vec<String> {
    ctl(p, "PEERS").split(' ').skip(2).map(str::to_owned).collect()
}

/// Bootstrap pinning: a node told to join through `ID@ADDR` refuses whoever answers at ADDR with another
/// key (an attacker who took the address over, or sits on the path), and joins the real one when it is
/// there. A bare ADDR is trusted on first use, which is what the attacker gets without the pin.
#[test]
fn a_pinned_bootstrap_node_cannot_be_impersonated() {
    let root = tempfile::tempdir().unwrap();
    let honest = spawn(&root.path().join("honest"), None);
    let impostor = spawn(&root.path().join("impostor"), None);
    let (honest_id, honest_addr) = id_and_addr(&honest.dir);
    let (impostor_id, impostor_addr) = id_and_addr(&impostor.dir);

    // Without the pin, the newcomer joins through whoever answers: the impostor.
    let trusting = spawn(&root.path().join("trusting"), Some(&impostor_addr));
    wait_for_peers(&trusting, 1);
    assert_eq!(peers(&trusting), vec![impostor_id.clone()], "trusted on first use");

    // Pinned to the honest id, at the impostor's address: refused, and tried again without success.
    let pinned = spawn(&root.path().join("pinned"), Some(&format!("{honest_id}@{impostor_addr}")));
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        assert!(peers(&pinned).is_empty(), "a link to the impostor: {:?}", peers(&pinned));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(peers(&impostor).iter().all(|id| *id != id_and_addr(&pinned.dir).0), "no link either way");

    // Pinned at the honest address: joins.
    let joined = spawn(&root.path().join("joined"), Some(&format!("{honest_id}@{honest_addr}")));
    wait_for_peers(&joined, 1);
    assert!(peers(&joined).contains(&honest_id));
}

/// A malformed pin is one clear error line at start, not a node that runs unpinned.
#[test]
fn a_malformed_pin_stops_the_node_with_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    for (arg, expect) in [("zz@127.0.0.1:4000", "the id before '@'"), ("127.0.0.1", "is not a TCP address")] {
        let out = Command::new(env!("CARGO_BIN_EXE_dht-node"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(root.path().join("n"))
            .args(["--bootstrap", arg])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expect), "{arg}: {stderr}");
    }
}

/// One raw line to a control socket at `addr`, and everything it answers until it closes.
fn raw_control(addr: &str, text: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The control socket: any process of the machine can reach a loopback port, so a request must carry the
/// token the node keeps in its data directory (readable by its owner only). Without it, nothing is done;
/// with it, one request is answered and the connection closes.
#[test]
fn the_control_socket_takes_requests_only_with_the_token() {
    let root = tempfile::tempdir().unwrap();
    let node = spawn(&root.path().join("n"), None);
    assert!(ctl(&node, "PUT name mine").starts_with("OK seq=1"));
    let c = common::control(&node.dir).expect("control files");
    assert_eq!(c.token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(node.dir.join("control.token")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the token is its owner's alone");
    }
    // Another local process, without the token or with a wrong one: refused, the record unchanged.
    let wrong = "0".repeat(64);
    for line in ["PUT name forged\n".to_owned(), format!("{wrong} PUT name forged\n"), "\n".to_owned()] {
        let answer = raw_control(&c.addr, &line);
        assert!(answer.starts_with("ERR unauthorized"), "{line:?} → {answer:?}");
    }
    assert_eq!(ctl(&node, "GET name"), "VALUE mine");
    // One request a connection: a second line on it is not read.
    let two = raw_control(&c.addr, &format!("{0} PUT name second\n{0} PUT name third\n", c.token));
    assert_eq!(two.lines().count(), 1, "{two:?}");
    assert_eq!(ctl(&node, "GET name"), "VALUE second");
    // A restart makes a new token: one read before stops working.
    drop(node);
    let again = spawn(&root.path().join("n"), None);
    let fresh = common::control(&again.dir).map(|c| c.token);
    assert!(ctl(&again, "ID").starts_with("ID "));
    assert_ne!(fresh.as_deref(), Some(c.token.as_str()));
    let stale = common::control(&again.dir).unwrap();
    assert!(raw_control(&stale.addr, &format!("{} ID\n", c.token)).starts_with("ERR unauthorized"));
}

/// An attacker on loopback source addresses `sources` that keeps up to `target` idle TCP connections open
/// to `victim` (reopening those the victim closes) until dropped; counts what it managed.
struct SlotHolder {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl SlotHolder {
    fn start(victim: std::net::SocketAddr, sources: Vec<std::net::Ipv4Addr>, target: usize) -> Self {
        use socket2::{Domain, Socket, Type};
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held: Vec<std::net::TcpStream> = Vec::new();
            let mut opened = 0usize;
            let mut next = 0usize;
            while !stopping.load(Ordering::Relaxed) {
                // Drop what the victim closed (a read of 0 bytes or an error; an idle open one would block).
                held.retain(|s| {
                    s.set_nonblocking(true).unwrap();
                    let mut b = [0u8; 1];
                    matches!(std::io::Read::read(&mut &*s, &mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                });
                while held.len() < target && !stopping.load(Ordering::Relaxed) {
                    let source = sources[next % sources.len()];
                    next += 1;
                    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    socket.bind(&std::net::SocketAddr::from((source, 0)).into()).unwrap();
                    match socket.connect_timeout(&victim.into(), Duration::from_millis(200)) {
                        Ok(()) => {
                            opened += 1;
                            held.push(socket.into());
                        }
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            opened
        });
        SlotHolder { stop, thread: Some(thread) }
    }

    /// Stops and returns how many connections were opened in all.
    fn stop(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Inbound slots held by one address, then by one /24: ~330 idle TCP connections (more than the node's 256
/// inbound slots plus its backlog), reopened as soon as they are closed. An honest newcomer from another
/// address must still join through the victim within 10 s.
fn a_newcomer_joins_while_slots_are_held(sources: Vec<std::net::Ipv4Addr>) {
    let root = tempfile::tempdir().unwrap();
    let victim = spawn(&root.path().join("victim"), None);
    let (_, victim_addr) = id_and_addr(&victim.dir);
    // A peer already in the swarm, for the newcomer to learn of.
    let member = spawn(&root.path().join("member"), Some(&victim_addr));
    wait_for_peers(&member, 1);

    let attacker = SlotHolder::start(victim_addr.parse().unwrap(), sources, 330);
    std::thread::sleep(Duration::from_secs(3));
    let newcomer = spawn(&root.path().join("newcomer"), Some(&victim_addr));
    let started = Instant::now();
    let mut joined = None;
    while started.elapsed() < Duration::from_secs(10) {
        if peers(&newcomer).len() >= 2 {
            joined = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let opened = attacker.stop();
    println!("attacker opened {opened} connections; newcomer joined after {joined:?}: {}", ctl(&newcomer, "PEERS"));
    assert!(joined.is_some(), "the newcomer never joined: {}", ctl(&newcomer, "PEERS"));
}

#[test]
fn one_address_holding_inbound_slots_does_not_keep_a_newcomer_out() {
    a_newcomer_joins_while_slots_are_held(vec![std::net::Ipv4Addr::new(127, 0, 9, 1)]);
}

#[test]
fn one_subnet_holding_inbound_slots_does_not_keep_a_newcomer_out() {
    a_newcomer_joins_while_slots_are_held((1..=32).map(|d| std::net::Ipv4Addr::new(127, 0, 9, d)).collect());
}

/// A bare bootstrap address that does not answer at start (down, or its slots taken) is probed again with
/// backoff, and the node joins once it answers (before, the node gave up at once and stayed alone).
#[test]
fn a_bootstrap_address_that_answers_late_is_joined() {
    let root = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let newcomer = spawn(&root.path().join("newcomer"), Some(&addr.to_string()));
    std::thread::sleep(Duration::from_secs(2));
    assert!(peers(&newcomer).is_empty());
    let dir = root.path().join("late");
    let child = Command::new(env!("CARGO_BIN_EXE_dht-node"))
        .args(["--listen", &addr.to_string(), "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let late = Proc { child, dir };
    let started = Instant::now();
    wait_for_peers(&newcomer, 1);
    println!("joined {:?} after the bootstrap node started", started.elapsed());
    assert_eq!(peers(&newcomer), vec![id_and_addr(&late.dir).0]);
}
