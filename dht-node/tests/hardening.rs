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
