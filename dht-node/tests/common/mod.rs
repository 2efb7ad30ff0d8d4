//! Helpers shared by the process tests: a child process killed on drop, and one control-socket request.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running process and its data directory; killed and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub dir: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dht-node` on a free 127.0.0.1 port with data in `dir`, joining through `bootstrap` if given.
// Each test binary compiles this module; webrtc_swarm starts its nodes with its own flags.
#[allow(dead_code)]
pub fn spawn(dir: &Path, bootstrap: Option<&str>) -> Proc {
    spawn_with(dir, bootstrap, &[])
}

/// [`spawn`] with more flags.
#[allow(dead_code)]
pub fn spawn_with(dir: &Path, bootstrap: Option<&str>, flags: &[&str]) -> Proc {
    let _ = std::fs::remove_file(dir.join("control.addr"));
    let _ = std::fs::remove_file(dir.join("control.token"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dht-node"));
    cmd.args(flags);
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(dir).env("RUST_LOG", "warn");
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("dht-node starts");
    Proc { child, dir: dir.to_owned() }
}

/// Where a running node's control socket is, and the token its requests start with.
#[derive(Debug, Clone)]
pub struct Control {
    pub addr: String,
    pub token: String,
}

/// The control socket of the node whose data directory is `dir`, once it has written both files.
pub fn control(dir: &Path) -> Option<Control> {
    let addr = std::fs::read_to_string(dir.join("control.addr")).ok()?;
    let token = std::fs::read_to_string(dir.join("control.token")).ok()?;
    Some(Control { addr: addr.trim().to_owned(), token: token.trim().to_owned() })
}

/// One control request to the node whose data directory is `dir`; waits (bounded) for its control socket.
/// `PROGRESS` lines before the answer are skipped (each must come within 30 s).
pub fn ctl_dir(dir: &Path, request: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = control(dir) {
            if let Ok(mut s) = TcpStream::connect(&c.addr) {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                writeln!(s, "{} {request}", c.token).unwrap();
                let mut reader = BufReader::new(s);
                let mut line = String::new();
                while line.is_empty() || line.starts_with("PROGRESS ") {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    assert!(!line.is_empty(), "the control socket closed without an answer");
                }
                return line.trim_end().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "control socket of {} never came up", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One control request to node `p` (see [`ctl_dir`]).
#[allow(dead_code)]
pub fn ctl(p: &Proc, request: &str) -> String {
    ctl_dir(&p.dir, request)
}

/// Waits (at most 30 s) until node `p` has links to `n` peers.
#[allow(dead_code)]
pub fn wait_for_peers(p: &Proc, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let peers = ctl(p, "PEERS");
        if peers.split(' ').nth(1).and_then(|c| c.parse::<usize>().ok()).is_some_and(|c| c >= n) {
            return;
        }
        assert!(Instant::now() < deadline, "{} has no {n} peers: {peers}", p.dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A signaling server in this process, on a thread and runtime of its own; returns its address and what
/// stops it when dropped. Started after a test moved into a network namespace, it listens there (a thread
/// inherits the namespace of the thread that spawns it).
#[allow(dead_code)]
pub fn signaling_server(
    config: signaling_server::server::ServerConfig,
) -> (std::net::SocketAddr, futures::channel::oneshot::Sender<()>) {
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        rt.block_on(async move {
            let bind = signaling_server::server::Server::bind("127.0.0.1:0".parse().unwrap(), config);
            let server = bind.await.expect("binds");
            addr_tx.send(server.local_addr().unwrap()).unwrap();
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    (addr_rx.recv().expect("the signaling server starts"), stop)
}
