//! Load benchmark of the signaling server, on loopback only and bounded in peers and time.
//!
//! Starts the `signaling-server` binary next to this one (or uses `--server`), registers `--peers`
//! WebSocket clients (each with its own key and proof), then has every peer relay `--rate` signals a second to
//! random other peers for `--secs` seconds. Reports peers held, relays per second and relay latency
//! (client send → addressee receive, both in this process). The last line is one JSON object.

use async_tungstenite::tokio::connect_async;
use async_tungstenite::tungstenite::Message;
use clap::Parser;
use futures::StreamExt;
use rand_core::RngCore;
use signaling_server::protocol::{prove, ClientMsg, Hex32, ServerMsg};
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Signaling server load benchmark (loopback only).
#[derive(Parser, Debug)]
struct Args {
    /// Concurrent registered peers.
    #[arg(long, default_value_t = 10_000)]
    peers: usize,
    /// Seconds of relaying measured (after every peer registered).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Signals each peer sends per second.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Bytes of payload per signal (an SDP offer is a few hundred to a few thousand).
    #[arg(long, default_value_t = 400)]
    size: usize,
    /// A running server's address (host:port) instead of starting one.
    #[arg(long)]
    server: Option<String>,
    /// Registrations in flight at once while connecting.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
}

struct Shared {
    start: Instant,
    ids: Vec<Hex32>,
    measuring: AtomicBool,
    stop: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.peers < 2 || args.peers > 15_000 || args.secs == 0 || args.secs > 120 || args.rate <= 0.0 {
        eprintln!("error: need 2 <= --peers <= 15000, 1 <= --secs <= 120 and --rate > 0 (a bounded benchmark)");
        return std::process::ExitCode::from(2);
    }
    let (addr, mut child) = match &args.server {
        Some(a) => (a.clone(), None),
        None => match start_server(args.peers) {
            Ok((a, c)) => (a, Some(c)),
            Err(e) => {
                eprintln!("error: cannot start signaling-server: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let result = rt.block_on(run(&args, &addr));
    if let Some(c) = child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Starts the server binary built next to this one on an ephemeral loopback port.
fn start_server(peers: usize) -> Result<(String, std::process::Child), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name(format!("signaling-server{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        return Err(format!("{} not found: cargo build --release -p signaling-server", bin.display()));
    }
    let limit = (peers + 100).to_string();
    let mut child = std::process::Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--max-registrations", &limit, "--max-per-ip", &limit])
        .args(["--rate", "1000", "--burst", "1000", "--idle-secs", "120"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
    let addr = line.trim().strip_prefix("listening ").ok_or_else(|| format!("unexpected first line {line:?}"))?;
    Ok((addr.to_string(), child))
}

fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut k);
    k
}

type Ws = async_tungstenite::WebSocketStream<async_tungstenite::tokio::TokioAdapter<tokio::net::TcpStream>>;

async fn recv(ws: &mut Ws) -> Result<ServerMsg, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).map_err(|e| e.to_string()),
            Some(Ok(Message::Close(f))) => return Err(format!("closed: {f:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        }
    }
}

async fn connect_one(addr: &str, key: [u8; 32]) -> Result<Ws, String> {
    let (mut ws, _) = connect_async(format!("ws://{addr}/ws")).await.map_err(|e| e.to_string())?;
    let ServerMsg::Challenge { nonce, key: server_key } = recv(&mut ws).await? else {
        return Err("no challenge".into());
    };
    let (public_key, proof) = prove(&key, &nonce, &server_key).map_err(|e| e.to_string())?;
    let reg = ClientMsg::Register { public_key, proof, addrs: vec![] };
    ws.send(Message::text(serde_json::to_string(&reg).expect("serializes"))).await.map_err(|e| e.to_string())?;
    match recv(&mut ws).await? {
        ServerMsg::Registered { .. } => Ok(ws),
        other => Err(format!("not registered: {other:?}")),
    }
}

async fn run(args: &Args, addr: &str) -> Result<(), String> {
    let keys: Vec<[u8; 32]> = (0..args.peers).map(|_| random_key()).collect();
    let ids: Vec<Hex32> =
        keys.iter().map(|k| Hex32(*dht_core::NodeId::from_public_key(&public_of(k)).as_bytes())).collect();

    let t0 = Instant::now();
    let mut sockets: Vec<Option<Ws>> = Vec::with_capacity(args.peers);
    let mut failed = 0usize;
    for chunk in keys.chunks(args.connect_concurrency.max(1)) {
        let attempts = chunk.iter().map(|k| connect_one(addr, *k));
        for r in futures::future::join_all(attempts).await {
            match r {
                Ok(ws) => sockets.push(Some(ws)),
                Err(e) => {
                    if failed == 0 {
                        eprintln!("first registration failure: {e}");
                    }
                    failed += 1;
                    sockets.push(None);
                }
            }
        }
    }
    let register_s = t0.elapsed().as_secs_f64();
    let held = sockets.iter().filter(|s| s.is_some()).count();
    eprintln!("registered {held} of {} peers in {register_s:.1} s ({failed} failed)", args.peers);

    let shared = Arc::new(Shared {
        start: Instant::now(),
        ids,
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
    });
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let mut tasks = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let Some(ws) = ws else { continue };
        let shared = shared.clone();
        let size = args.size;
        tasks.push(tokio::spawn(peer(i, ws, shared, period, size)));
    }
    // Warm up one period, then measure.
    tokio::time::sleep(period.max(Duration::from_secs(1))).await;
    let sent0 = shared.sent.load(Ordering::Relaxed);
    shared.measuring.store(true, Ordering::Relaxed);
    let m0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let window = m0.elapsed().as_secs_f64();
    let sent = shared.sent.load(Ordering::Relaxed) - sent0;
    let stats = server_stats(addr).await.unwrap_or_default();
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }

    let mut lat = std::mem::take(&mut *shared.latencies_us.lock().expect("no panics while locked"));
    lat.sort_unstable();
    let q = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    let received = lat.len();
    let relays_per_s = received as f64 / window;
    let peers_held = stats.get("registered").and_then(|v| v.as_u64()).unwrap_or(held as u64);
    println!("peers held by the server: {peers_held} (registration of {held} took {register_s:.1} s)");
    println!(
        "relays: {received} received of {sent} sent in {window:.1} s = {relays_per_s:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        q(0.5) as f64 / 1000.0,
        q(0.99) as f64 / 1000.0,
        lat.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    let json = serde_json::json!({
        "peers": args.peers,
        "peers_held": peers_held,
        "register_s": register_s,
        "relays_sent": sent,
        "relays_received": received,
        "relays_per_s": relays_per_s,
        "relay_ms_p50": q(0.5) as f64 / 1000.0,
        "relay_ms_p99": q(0.99) as f64 / 1000.0,
        "relay_ms_max": lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        "errors": shared.errors.load(Ordering::Relaxed),
        "registration_failures": failed,
    });
    println!("{json}");
    Ok(())
}

fn public_of(private: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*private)).to_bytes()
}

async fn server_stats(addr: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.ok()?.ok()?;
    let text = String::from_utf8(out).ok()?;
    serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
}

async fn peer(me: usize, ws: Ws, shared: Arc<Shared>, period: Duration, size: usize) {
    let (mut tx, mut rx) = ws.split();
    let n = shared.ids.len();
    // Spread the first sends over one period.
    let offset = period.mul_f64((me as f64 * 0.618_034) % 1.0);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let pad = "x".repeat(size);
    let mut rng = rand_core::OsRng;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {
                let mut to = (rng.next_u64() % n as u64) as usize;
                if to == me {
                    to = (to + 1) % n;
                }
                let sent_us = shared.start.elapsed().as_micros() as u64;
                let data = format!("{sent_us} {pad}");
                let msg = ClientMsg::Signal { to: shared.ids[to], data };
                if tx.send(Message::text(serde_json::to_string(&msg).expect("serializes"))).await.is_err() {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                shared.sent.fetch_add(1, Ordering::Relaxed);
            }
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerMsg>(t.as_str()) {
                    Ok(ServerMsg::Signal { data, .. }) => {
                        let now = shared.start.elapsed().as_micros() as u64;
                        let sent: u64 = data.split(' ').next().and_then(|s| s.parse().ok()).unwrap_or(now);
                        shared.received.fetch_add(1, Ordering::Relaxed);
                        if shared.measuring.load(Ordering::Relaxed) {
                            let us = now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32;
                            shared.latencies_us.lock().expect("no panics while locked").push(us);
                        }
                    }
                    // A registration that failed leaves a hole in `ids`: signals to it come back as errors.
                    Ok(_) => {}
                    Err(_) => { shared.errors.fetch_add(1, Ordering::Relaxed); }
                },
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}
