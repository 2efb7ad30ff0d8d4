//! Load benchmark of the signaling server, on loopback only and bounded in peers and time.
//!
//! Starts the `signaling-server` binary next to this one (or uses `--server`), registers `--peers`
//! WebSocket clients (each with its own key and proof), then has every peer relay `--rate` signals a second to
//! random other peers for `--secs` seconds. Reports peers held, relays per second and relay latency
//! (client send → addressee receive, both in this process). The last line is one JSON object.

use async_tungstenite::tungstenite::Message;
use clap::Parser;
use futures::StreamExt;
use rand_core::RngCore;
use signaling_protocol::{prove, ClientMsg, Hex32, ServerMsg};
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
    /// Abusive clients started after a first (unloaded) measurement, for a second one under abuse: each
    /// loops over one abuse — registrations with forged proofs (some for honest peers' keys), oversized
    /// messages, malformed messages, signals to unknown ids — as fast as the server lets it.
    #[arg(long, default_value_t = 0)]
    abusers: usize,
    /// Internal: run only the abusers against `--server` (the benchmark starts itself this way, in a
    /// separate process at the lowest CPU priority, so the abusers' own work does not slow the honest
    /// clients measured here: only the server's share of the abuse does).
    #[arg(long, hide = true)]
    abuse_only: bool,
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

impl Shared {
    fn new(ids: Vec<Hex32>) -> Arc<Self> {
        Arc::new(Shared {
            start: Instant::now(),
            ids,
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latencies_us: Mutex::new(Vec::new()),
        })
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.peers < 2
        || args.peers > 15_000
        || args.secs == 0
        || args.secs > 120
        || args.rate <= 0.0
        || args.abusers > 2_000
    {
        eprintln!(
            "error: need 2 <= --peers <= 15000, 1 <= --secs <= 120, --rate > 0 and --abusers <= 2000 (a bounded benchmark)"
        );
        return std::process::ExitCode::from(2);
    }
    let (addr, mut child) = match &args.server {
        Some(a) => (a.clone(), None),
        None => match start_server(args.peers + args.abusers, args.abusers == 0) {
            Ok((a, c)) => (a, Some(c)),
            Err(e) => {
                eprintln!("error: cannot start signaling-server: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let result = if args.abuse_only { rt.block_on(abuse_only(&args, &addr)) } else { rt.block_on(run(&args, &addr)) };
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

/// Starts the server binary built next to this one on an ephemeral loopback port. `generous`: a per-connection
/// rate limit high enough for any honest load; otherwise the server's defaults (what abusers meet).
fn start_server(peers: usize, generous: bool) -> Result<(String, std::process::Child), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name(format!("signaling-server{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        return Err(format!("{} not found: cargo build --release -p signaling-server", bin.display()));
    }
    let limit = (peers + 100).to_string();
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["--listen", "127.0.0.1:0", "--max-registrations", &limit]);
    if generous {
        cmd.args(["--rate", "1000", "--burst", "1000"]);
    }
    let mut child = cmd
        .args(["--idle-secs", "120"])
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
            Some(Ok(Message::Text(t))) => return ServerMsg::decode(t.as_str()).map_err(|e| e.to_string()),
            Some(Ok(Message::Close(f))) => return Err(format!("closed: {f:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        }
    }
}

/// Honest peers per loopback source address (the server limits new connections per address).
const PEERS_PER_ADDRESS: usize = 50;

/// The loopback source address of honest peer `i`: 127.x.y.1, 50 peers each, each address in a /24 of its
/// own (the server also limits connections and their rate per /24).
fn honest_source(i: usize) -> [u8; 4] {
    let n = i / PEERS_PER_ADDRESS;
    [127, 1 + (n / 250) as u8, (n % 250 + 1) as u8, 1]
}

/// The loopback source address of abuser `i`: four addresses, 127.0.0.2–5.
fn abuser_source(i: usize) -> [u8; 4] {
    [127, 0, 0, 2 + (i % 4) as u8]
}

/// Opens a WebSocket to the server from the loopback address `source`.
async fn open_ws(addr: &str, source: [u8; 4]) -> Result<Ws, String> {
    let server: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.bind(std::net::SocketAddr::from((source, 0))).map_err(|e| e.to_string())?;
    let stream = socket.connect(server).await.map_err(|e| e.to_string())?;
    let (ws, _) =
        async_tungstenite::tokio::client_async(format!("ws://{addr}/ws"), stream).await.map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn connect_one(addr: &str, key: [u8; 32], source: [u8; 4]) -> Result<Ws, String> {
    let mut ws = open_ws(addr, source).await?;
    let ServerMsg::Challenge { nonce, key: server_key, .. } = recv(&mut ws).await? else {
        return Err("no challenge".into());
    };
    let (public_key, proof) = prove(&key, &nonce, &server_key).map_err(|e| e.to_string())?;
    let reg = ClientMsg::Register { public_key, proof, addrs: vec![], work: 0 };
    ws.send(Message::text(reg.encode())).await.map_err(|e| e.to_string())?;
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
    let (sockets, failed) = register_all(args, addr, &keys).await;
    let register_s = t0.elapsed().as_secs_f64();
    let held = sockets.iter().filter(|s| s.is_some()).count();
    eprintln!("registered {held} of {} peers in {register_s:.1} s ({failed} failed)", args.peers);

    let shared = Shared::new(ids);
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let mut tasks = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let Some(ws) = ws else { continue };
        tasks.push(tokio::spawn(peer(i, ws, shared.clone(), period, args.size)));
    }
    // Warm up one period, then measure.
    tokio::time::sleep(period.max(Duration::from_secs(1))).await;
    let quiet = measure(&shared, args.secs).await;
    let abused = if args.abusers > 0 { Some(measure_under_abuse(args, addr, &shared).await?) } else { None };
    let stats = server_stats(addr).await.unwrap_or_default();
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let peers_held = stats.get("registered").and_then(|v| v.as_u64()).unwrap_or(held as u64);
    println!("peers held by the server: {peers_held} (registration of {held} took {register_s:.1} s)");
    quiet.print("unloaded");
    let mut json = serde_json::json!({
        "peers": args.peers,
        "peers_held": peers_held,
        "register_s": register_s,
        "relays_sent": quiet.sent,
        "relays_received": quiet.received(),
        "relays_per_s": quiet.per_s(),
        "relay_ms_p50": quiet.ms(0.5),
        "relay_ms_p99": quiet.ms(0.99),
        "relay_ms_max": quiet.ms(1.0),
        "errors": shared.errors.load(Ordering::Relaxed),
        "registration_failures": failed,
    });
    if let Some(abused) = abused {
        let extra = abuse_report(args, &abused, &quiet, stats);
        json.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
    }
    println!("{json}");
    Ok(())
}

/// Registers one peer per key, `connect_concurrency` at a time; the sockets (`None` where registration
/// failed) and the failure count.
async fn register_all(args: &Args, addr: &str, keys: &[[u8; 32]]) -> (Vec<Option<Ws>>, usize) {
    let mut sockets: Vec<Option<Ws>> = Vec::with_capacity(keys.len());
    let mut failed = 0usize;
    let concurrency = args.connect_concurrency.max(1);
    for (c, chunk) in keys.chunks(concurrency).enumerate() {
        let attempts = chunk.iter().enumerate().map(|(j, k)| connect_one(addr, *k, honest_source(c * concurrency + j)));
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
    (sockets, failed)
}

/// Starts the abusive clients in a process of their own (at the lowest priority) and measures the honest
/// peers' relays while they run.
async fn measure_under_abuse(args: &Args, addr: &str, shared: &Shared) -> Result<Window, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut abusers = std::process::Command::new("nice")
        .args(["-n", "19"])
        .arg(exe)
        .args(["--abuse-only", "--server", addr, "--abusers", &args.abusers.to_string()])
        .args(["--secs", &(args.secs + 5).to_string(), "--peers", &args.peers.to_string()])
        .spawn()
        .map_err(|e| format!("abusers: {e}"))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let w = measure(shared, args.secs).await;
    let _ = abusers.kill();
    let _ = abusers.wait();
    Ok(w)
}

/// Prints the figures under abuse and returns them as JSON fields.
fn abuse_report(
    args: &Args,
    abused: &Window,
    quiet: &Window,
    stats: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    abused.print("under abuse");
    let attempts = stats.get("closed_for_cause").and_then(|v| v.as_u64()).unwrap_or(0);
    println!("connections closed for cause: {attempts}, by {} abusive clients; server stats: {stats:?}", args.abusers);
    serde_json::json!({
        "abusers": args.abusers,
        "closed_for_cause": attempts,
        "abuse_relays_per_s": abused.per_s(),
        "abuse_relay_ms_p50": abused.ms(0.5),
        "abuse_relay_ms_p99": abused.ms(0.99),
        "abuse_p99_ratio": abused.ms(0.99) / quiet.ms(0.99).max(1e-3),
        "server_stats": stats,
    })
}

/// Relay latencies of honest peers over one measured window.
struct Window {
    sent: u64,
    secs: f64,
    lat_us: Vec<u32>,
}

impl Window {
    fn received(&self) -> usize {
        self.lat_us.len()
    }
    fn per_s(&self) -> f64 {
        self.received() as f64 / self.secs
    }
    fn ms(&self, p: f64) -> f64 {
        let i = ((self.lat_us.len() as f64 * p) as usize).min(self.lat_us.len().saturating_sub(1));
        self.lat_us.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }
    fn print(&self, what: &str) {
        println!(
            "relays {what}: {} received of {} sent in {:.1} s = {:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.received(),
            self.sent,
            self.secs,
            self.per_s(),
            self.ms(0.5),
            self.ms(0.99),
            self.ms(1.0)
        );
    }
}

async fn measure(shared: &Shared, secs: u64) -> Window {
    shared.latencies_us.lock().expect("no panics while locked").clear();
    let sent0 = shared.sent.load(Ordering::Relaxed);
    shared.measuring.store(true, Ordering::Relaxed);
    let m0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let secs = m0.elapsed().as_secs_f64();
    let sent = shared.sent.load(Ordering::Relaxed) - sent0;
    let mut lat_us = std::mem::take(&mut *shared.latencies_us.lock().expect("no panics while locked"));
    lat_us.sort_unstable();
    Window { sent, secs, lat_us }
}

/// The abusers alone, for `--secs` seconds (they do not know the honest peers' keys: forged registrations
/// use random keys).
async fn abuse_only(args: &Args, addr: &str) -> Result<(), String> {
    let shared = Shared::new(Vec::new());
    let tasks: Vec<_> = (0..args.abusers).map(|i| tokio::spawn(abuser(i, addr.to_string(), shared.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}

/// One abusive client, looping over its kind of abuse until the run stops.
async fn abuser(i: usize, addr: String, shared: Arc<Shared>) {
    let mut rng = rand_core::OsRng;
    while !shared.stop.load(Ordering::Relaxed) {
        let attempt = async {
            match i % 4 {
                // A registration with a forged proof.
                0 => {
                    let mut ws = open_ws(&addr, abuser_source(i)).await?;
                    let _ = recv(&mut ws).await?;
                    let mut public_key = [0u8; 32];
                    rng.fill_bytes(&mut public_key);
                    let reg = ClientMsg::Register {
                        public_key: Hex32(public_key),
                        proof: Hex32(random_key()),
                        addrs: vec![],
                        work: 0,
                    };
                    ws.send(Message::text(reg.encode())).await.map_err(|e| e.to_string())?;
                    drain(&mut ws).await;
                }
                // Oversized messages.
                1 => {
                    let mut ws = connect_one(&addr, random_key(), abuser_source(i)).await?;
                    ws.send(Message::text("x".repeat(64 * 1024))).await.map_err(|e| e.to_string())?;
                    drain(&mut ws).await;
                }
                // Malformed messages.
                2 => {
                    let mut ws = connect_one(&addr, random_key(), abuser_source(i)).await?;
                    ws.send(Message::text("{\"type\":\"signal\",\"to\":")).await.map_err(|e| e.to_string())?;
                    drain(&mut ws).await;
                }
                // Signals to ids nobody registered, as fast as the rate limit allows (then it closes us).
                _ => {
                    let mut ws = connect_one(&addr, random_key(), abuser_source(i)).await?;
                    for _ in 0..10_000 {
                        let msg = ClientMsg::Signal { to: Hex32(random_key()), data: "offer".into() };
                        if ws.send(Message::text(msg.encode())).await.is_err() {
                            break;
                        }
                        if shared.stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    drain(&mut ws).await;
                }
            }
            Ok::<(), String>(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), attempt).await;
    }
}

/// Reads until the server closes the connection (bounded).
async fn drain(ws: &mut Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = ws.next().await {} }).await;
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
                if tx.send(Message::text(msg.encode())).await.is_err() {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                shared.sent.fetch_add(1, Ordering::Relaxed);
            }
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) => match ServerMsg::decode(t.as_str()) {
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
