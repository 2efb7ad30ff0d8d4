//! Helpers shared by the process tests: a child process killed on drop, and one control-socket request.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
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

/// One control request to the node whose data directory is `dir`; waits (bounded) for its control socket.
pub fn ctl_dir(dir: &Path, request: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(addr) = std::fs::read_to_string(dir.join("control.addr")) {
            if let Ok(mut s) = TcpStream::connect(addr.trim()) {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                writeln!(s, "{request}").unwrap();
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line).unwrap();
                return line.trim_end().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "control socket of {} never came up", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}
