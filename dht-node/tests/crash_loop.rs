//! Crash loop: a node taking puts is killed with SIGKILL at 50 pseudo-random moments and restarted from its
//! data directory each time; every put it acknowledged before a kill is still in its store afterwards.

mod common;

use common::{control, ctl_dir, spawn, Control, Proc};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROUNDS: u64 = 50;

/// One control request that may fail (the node may die under it).
fn try_ctl(c: &Control, request: &str) -> Option<String> {
    let mut s = TcpStream::connect(&c.addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    writeln!(s, "{} {request}", c.token).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    (!line.is_empty()).then(|| line.trim_end().to_owned())
}

/// A deterministic sequence of kill delays (splitmix64), 10–400 ms.
fn delay_ms(round: u64) -> u64 {
    let mut x = round.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    10 + (x ^ (x >> 31)) % 391
}

#[test]
fn acknowledged_puts_survive_fifty_kill_minus_nine() {
    let root = tempfile::tempdir().unwrap();
    // Three steady peers, so the victim's puts also go out to a swarm.
    let first = spawn(&root.path().join("peer0"), None);
    let id0 = ctl_dir(&first.dir, "ID");
    let seed = id0.split(' ').nth(2).unwrap().strip_prefix("tcp:").unwrap().to_owned();
    let _peers: Vec<Proc> = std::iter::once(first)
        .chain((1..3).map(|i| spawn(&root.path().join(format!("peer{i}")), Some(&seed))))
        .collect();
    let victim_dir = root.path().join("victim");
    let mut acknowledged: Vec<String> = Vec::new();
    let t0 = Instant::now();
    for round in 0..ROUNDS {
        let mut victim = spawn(&victim_dir, Some(&seed));
        ctl_dir(&victim_dir, "ID"); // up and answering
                                    // Everything acknowledged before this start is still there.
        let addr = control(&victim_dir).expect("the node's control files");
        let recent = acknowledged.iter().rev().take(200);
        for name in recent {
            let got = try_ctl(&addr, &format!("LOCAL {name}")).expect("the restarted node answers");
            assert_eq!(got, format!("VALUE v-{name}"), "round {round}: acknowledged put {name} lost");
        }
        // Puts until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (stop, acked, addr) = (stop.clone(), acked.clone(), addr.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("r{round}-{n}");
                    n += 1;
                    match try_ctl(&addr, &format!("PUT {name} v-{name}")) {
                        Some(reply) if reply.starts_with("OK ") => acked.lock().unwrap().push(name),
                        Some(reply) => panic!("put refused: {reply}"),
                        None => return, // killed mid-request: not acknowledged
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(delay_ms(round)));
        victim.child.kill().unwrap();
        victim.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        acknowledged.extend(acked.lock().unwrap().drain(..));
    }
    // A last restart: every put acknowledged over all rounds is there.
    let _victim = spawn(&victim_dir, Some(&seed));
    ctl_dir(&victim_dir, "ID");
    let addr = control(&victim_dir).expect("the node's control files");
    for name in &acknowledged {
        assert_eq!(try_ctl(&addr, &format!("LOCAL {name}")), Some(format!("VALUE v-{name}")), "{name} lost");
    }
    assert!(
        acknowledged.len() >= ROUNDS as usize,
        "too few puts acknowledged to mean anything: {}",
        acknowledged.len()
    );
    eprintln!(
        "{ROUNDS} kills, {} acknowledged puts, none lost ({:.1} s)",
        acknowledged.len(),
        t0.elapsed().as_secs_f64()
    );
}
