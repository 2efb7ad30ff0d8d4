//! The server: one TCP port for WebSocket signaling and the static web page.
//!
//! Each connection is one tokio task. A registered peer's task owns its socket; other tasks reach it
//! through a bounded queue found by node id in the registry. Every limit ends only the connection that
//! broke it, with a close frame that says why.

use crate::http;
use crate::ice::IceConfig;
use crate::site::Site;
use admission::{Admission, Budgets, TokenBucket};
pub use admission::{Limits, Rate};
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use dht_core::NodeId;
use futures::StreamExt;
use rand_core::RngCore;
use signaling_protocol::{
    Challenge, ClientMsg, Hex32, PeerInfo, ServerMsg, MAX_MESSAGE, MAX_PEERS_REPLY, MAX_SIGNAL_DATA,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Limits and options of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Registered peers at once; a registration beyond it is refused.
    pub max_registrations: usize,
    /// Connections (WebSocket and HTTP) open at once in all, per address and per subnet (a /24 of IPv4, a
    /// /64 of IPv6), and opened a second per address and per subnet; beyond, they are refused at accept.
    /// A connection closed for cause costs its address [`CAUSE_COST`] admissions more.
    pub admission: Limits,
    /// A connection refused at accept (its address's admission rate or connection cap, or the server's) is
    /// held open, unread, this long before it is closed (a tarpit): a client that reconnects as soon as it
    /// is closed then waits instead of making the machine accept and close thousands of connections a
    /// second. Zero closes refused connections at once.
    pub refused_hold: Duration,
    /// Refused connections held at once per address; beyond, they are closed at once.
    pub max_held_per_ip: usize,
    /// Refused connections held at once in all.
    pub max_held: usize,
    /// Time from TCP accept to a completed registration (or a served HTTP request).
    pub handshake_timeout: Duration,
    /// A registered connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// A registered connection is closed after this long even when it answers every ping (it reconnects
    /// and registers again), so no one holds a place for ever.
    pub max_lifetime: Duration,
    /// The server pings registered connections this often (their pongs keep them alive).
    pub ping_interval: Duration,
    /// Messages per second a connection may send on average.
    pub rate_per_sec: u32,
    /// Messages a connection may send in a burst.
    pub rate_burst: u32,
    /// Messages waiting for one peer's socket; a signal to a peer whose queue is full is refused.
    pub queue_per_peer: usize,
    /// The ICE servers handed to pages at `GET /config` (TURN ones with time-limited credentials).
    pub ice: IceConfig,
    /// Bits of proof of work a registration must carry (0: none; at most
    /// [`signaling_protocol::MAX_WORK_BITS`]): each registration then costs its client about 2^bits hashes,
    /// which bounds how fast one machine can fill the registry with made-up ids.
    pub registration_work: u8,
    /// Bytes of files (the page, its scripts and wasm) one address may fetch: a second's worth, after a
    /// burst (several page loads); beyond, requests get `429` until the budget refills.
    pub http_bytes_per_addr: Rate,
    /// Bytes of `peers` answers one connection may receive: a second's worth, after a burst; a connection
    /// asking for more is closed.
    pub peers_bytes_per_conn: Rate,
    /// Origins (`https://example.org`) whose pages may open a WebSocket here; empty: any (for development).
    /// A browser always sends its page's origin on the upgrade; clients that send none (native nodes) are
    /// not browsers and are let in.
    pub allow_origins: Vec<String>,
    /// A reverse proxy in front of the server: connections from this address are counted by the client
    /// address the proxy names in `X-Forwarded-For` (its last entry), not as one address. The header is
    /// ignored on connections from anywhere else.
    pub trust_proxy: Option<IpAddr>,
    /// Directory served over HTTP (`/` is its `index.html`), read into memory when the server starts (see
    /// [`crate::site`]); `None` serves a placeholder page.
    pub web_dir: Option<PathBuf>,
    /// Serve HTTPS and WSS with this configuration (see [`crate::tls`]); `None` serves plain HTTP and WS
    /// (loopback development). The TLS handshake counts against `handshake_timeout`.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_registrations: 20_000,
            admission: Limits {
                total: 21_000,
                per_addr: 256,
                per_subnet: 1024,
                addr_rate: Rate { per_sec: 20, burst: 100 },
                subnet_rate: Rate { per_sec: 80, burst: 400 },
                remembered: MAX_REMEMBERED_IPS,
            },
            refused_hold: Duration::from_secs(5),
            max_held_per_ip: 256,
            max_held: 4096,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(3600),
            ping_interval: Duration::from_secs(20),
            rate_per_sec: 50,
            rate_burst: 200,
            queue_per_peer: 64,
            ice: IceConfig { credential_ttl: Duration::from_secs(24 * 3600), ..IceConfig::default() },
            registration_work: 0,
            http_bytes_per_addr: Rate { per_sec: 4 << 20, burst: 32 << 20 },
            peers_bytes_per_conn: Rate { per_sec: 64 << 10, burst: 256 << 10 },
            allow_origins: Vec::new(),
            trust_proxy: None,
            web_dir: None,
            tls: None,
        }
    }
}

/// Counters, readable while the server runs (and served as JSON at `/stats`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Peers registered now.
    pub registered: AtomicUsize,
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Registrations accepted since start.
    pub registrations: AtomicU64,
    /// Registrations refused (bad proof, weak key, server full, bad addresses).
    pub refused_registrations: AtomicU64,
    /// Signals delivered to the addressee's queue.
    pub relayed: AtomicU64,
    /// Signals refused (unknown addressee or its queue full).
    pub undeliverable: AtomicU64,
    /// Connections closed for breaking a rule (malformed, oversized, rate, timeout).
    pub closed_for_cause: AtomicU64,
    /// Connections refused at accept (connection or per-IP cap).
    pub refused_connections: AtomicU64,
    /// Refused connections held open before closing ([`ServerConfig::refused_hold`]), in all.
    pub held_connections: AtomicU64,
    /// Refused connections held open right now.
    pub holding: AtomicUsize,
    /// HTTP requests answered.
    pub http_requests: AtomicU64,
}

impl Stats {
    /// The counters as a JSON object.
    pub fn to_json(&self) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "registered": self.registered.load(Ordering::Relaxed),
            "connections": self.connections.load(Ordering::Relaxed),
            "registrations": l(&self.registrations),
            "refused_registrations": l(&self.refused_registrations),
            "relayed": l(&self.relayed),
            "undeliverable": l(&self.undeliverable),
            "closed_for_cause": l(&self.closed_for_cause),
            "refused_connections": l(&self.refused_connections),
            "held_connections": l(&self.held_connections),
            "http_requests": l(&self.http_requests),
        })
        .to_string()
    }
}

/// What a connection task is handed by others.
#[derive(Debug)]
enum Out {
    /// A protocol message, already serialized.
    Text(String),
    /// Close with this reason (the registration was taken over).
    Close(&'static str),
}

struct Registered {
    tx: mpsc::Sender<Out>,
    addrs: Vec<String>,
    conn: u64,
    slot: usize,
}

#[derive(Default)]
struct Registry {
    peers: HashMap<NodeId, Registered>,
    /// The registered ids, for random picks.
    ids: Vec<NodeId>,
}

impl Registry {
    fn insert(&mut self, id: NodeId, tx: mpsc::Sender<Out>, addrs: Vec<String>, conn: u64) -> Option<Registered> {
        if let Some(old) = self.peers.get_mut(&id) {
            let slot = old.slot;
            return Some(std::mem::replace(old, Registered { tx, addrs, conn, slot }));
        }
        self.peers.insert(id, Registered { tx, addrs, conn, slot: self.ids.len() });
        self.ids.push(id);
        None
    }

    /// Removes `id` if it is still registered by connection `conn`.
    fn remove(&mut self, id: &NodeId, conn: u64) -> bool {
        if self.peers.get(id).is_none_or(|r| r.conn != conn) {
            return false;
        }
        let r = self.peers.remove(id).expect("checked just above");
        self.ids.swap_remove(r.slot);
        if let Some(moved) = self.ids.get(r.slot) {
            self.peers.get_mut(moved).expect("ids and peers agree").slot = r.slot;
        }
        true
    }

    fn sample(&self, except: &NodeId, max: usize) -> Vec<PeerInfo> {
        let n = self.ids.len();
        let want = max.min(MAX_PEERS_REPLY).min(n.saturating_sub(1));
        let mut picked: Vec<usize> = Vec::with_capacity(want);
        let mut rng = rand_core::OsRng;
        // Few picks from many ids: draw and skip repeats, bounded in tries.
        for _ in 0..want * 4 + 8 {
            if picked.len() >= want {
                break;
            }
            let i = (rng.next_u64() % n as u64) as usize;
            if &self.ids[i] != except && !picked.contains(&i) {
                picked.push(i);
            }
        }
        picked
            .into_iter()
            .map(|i| {
                let id = self.ids[i];
                PeerInfo { id: id.into(), addrs: self.peers[&id].addrs.clone() }
            })
            .collect()
    }
}

struct State {
    config: ServerConfig,
    registry: Mutex<Registry>,
    /// The web page, read at start.
    site: Site,
    admission: Mutex<Admission>,
    /// Each address's budget of file bytes ([`ServerConfig::http_bytes_per_addr`]).
    http_budget: Mutex<Budgets>,
    /// Refused connections held open per address ([`ServerConfig::refused_hold`]).
    held: Mutex<HashMap<IpAddr, usize>>,
    /// Where the admission state's milliseconds start.
    epoch: Instant,
    stats: Arc<Stats>,
    next_conn: AtomicU64,
}

/// A bound server; [`Server::run`] serves until the shutdown future completes.
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
}

impl Server {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr, config: ServerConfig) -> std::io::Result<Server> {
        let mut admission = Admission::new(config.admission.clone());
        let http_budget = Budgets::new(config.http_bytes_per_addr, MAX_REMEMBERED_IPS);
        if let Some(proxy) = config.trust_proxy {
            // Admitted per client once its request head names the client (`SlotGuard::transfer`).
            admission.exempt(proxy);
        }
        let site = match &config.web_dir {
            Some(dir) => Site::load(dir).map_err(std::io::Error::other)?,
            None => Site::placeholder(),
        };
        let listener = TcpListener::bind(addr).await?;
        let state = Arc::new(State {
            config,
            registry: Mutex::new(Registry::default()),
            site,
            admission: Mutex::new(admission),
            http_budget: Mutex::new(http_budget),
            held: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            stats: Arc::new(Stats::default()),
            next_conn: AtomicU64::new(1),
        });
        Ok(Server { listener, state })
    }

    /// The address bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.state.stats.clone()
    }

    /// Accepts and serves connections until `shutdown` completes. Needs a tokio runtime (tasks are spawned
    /// with `tokio::spawn`).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(guard) = SlotGuard::admit(&self.state, peer.ip()) else {
                self.state.stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                if let Some(hold) = SlotGuard::hold(&self.state, peer.ip()) {
                    let wait = self.state.config.refused_hold;
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        drop(stream);
                        drop(hold);
                    });
                }
                continue;
            };
            let state = self.state.clone();
            let deadline = Instant::now() + state.config.handshake_timeout;
            match &state.config.tls {
                None => {
                    tokio::spawn(handle(Box::new(stream), peer, state, guard, deadline));
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => handle(Box::new(stream), peer, state, guard, deadline).await,
                            // A client that does not trust the certificate, or speaks plain HTTP here.
                            Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                            Err(_) => {
                                tracing::debug!(%peer, "no TLS handshake before the deadline");
                                state.for_cause(peer.ip());
                            }
                        }
                    });
                }
            }
        }
        tracing::info!("signaling server stopped accepting");
    }
}

/// Connection tokens a connection closed for cause costs its address (on top of the one it took).
pub const CAUSE_COST: f64 = 10.0;

/// Addresses (and subnets) the admission state remembers before idle ones are forgotten.
const MAX_REMEMBERED_IPS: usize = 50_000;

impl State {
    /// Now, as the admission state counts time.
    fn now(&self) -> dht_core::Instant {
        dht_core::Instant::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Takes `bytes` from `ip`'s file budget; `false` (nothing taken) when it has not that many.
    fn spend_http_bytes(&self, ip: IpAddr, bytes: usize) -> bool {
        let burst = f64::from(self.config.http_bytes_per_addr.burst);
        // A file larger than the burst costs the whole burst (it could never be served otherwise).
        let cost = (bytes as f64).min(burst);
        self.http_budget.lock().expect("no panics while locked").take(ip, cost, self.now())
    }

    /// Counts a connection closed for cause, and charges its address.
    fn for_cause(&self, ip: IpAddr) {
        self.stats.closed_for_cause.fetch_add(1, Ordering::Relaxed);
        self.admission.lock().expect("no panics while locked").charge(ip, CAUSE_COST, self.now());
    }
}

/// What a [`SlotGuard`] counts.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// An admitted connection (`Stats::connections`, `IpState::open`).
    Open,
    /// A refused connection held open ([`ServerConfig::refused_hold`]; `Stats::holding`, `IpState::held`).
    Held,
}

/// Counts a connection against the server-wide and per-IP caps of its [`Slot`] while it lives.
struct SlotGuard {
    state: Arc<State>,
    ip: IpAddr,
    slot: Slot,
}

impl SlotGuard {
    /// The same connection counted against `client` instead (a trusted proxy named the client it carries):
    /// `None`, and the connection's slot given back, when the rules do not admit one more from `client`.
    fn transfer(self, client: IpAddr) -> Option<SlotGuard> {
        let state = self.state.clone();
        drop(self);
        SlotGuard::admit(&state, client)
    }

    /// An admitted connection from `ip`, if the admission rules allow one.
    fn admit(state: &Arc<State>, ip: IpAddr) -> Option<SlotGuard> {
        let now = state.now();
        if let Err(why) = state.admission.lock().expect("no panics while locked").admit(ip, now) {
            tracing::debug!(%ip, "connection refused: {why}");
            return None;
        }
        state.stats.connections.fetch_add(1, Ordering::Relaxed);
        Some(SlotGuard { state: state.clone(), ip, slot: Slot::Open })
    }

    /// A hold for a connection refused to `ip`, if the caps allow one.
    fn hold(state: &Arc<State>, ip: IpAddr) -> Option<SlotGuard> {
        let c = &state.config;
        if c.refused_hold.is_zero() || state.stats.holding.load(Ordering::Relaxed) >= c.max_held {
            return None;
        }
        let mut held = state.held.lock().expect("no panics while locked");
        if held.len() >= MAX_REMEMBERED_IPS && !held.contains_key(&ip) {
            return None;
        }
        let mine = held.entry(ip).or_insert(0);
        if *mine >= c.max_held_per_ip {
            return None;
        }
        *mine += 1;
        state.stats.holding.fetch_add(1, Ordering::Relaxed);
        state.stats.held_connections.fetch_add(1, Ordering::Relaxed);
        Some(SlotGuard { state: state.clone(), ip, slot: Slot::Held })
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let stats = &self.state.stats;
        match self.slot {
            Slot::Open => {
                stats.connections.fetch_sub(1, Ordering::Relaxed);
                self.state.admission.lock().expect("no panics while locked").release(self.ip);
            }
            Slot::Held => {
                stats.holding.fetch_sub(1, Ordering::Relaxed);
                let mut held = self.state.held.lock().expect("no panics while locked");
                if let Some(n) = held.get_mut(&self.ip) {
                    *n -= 1;
                    if *n == 0 {
                        held.remove(&self.ip);
                    }
                }
            }
        }
    }
}

/// Why a connection was closed by us.
#[derive(Debug)]
struct Violation {
    code: CloseCode,
    reason: String,
}

impl Violation {
    fn policy(reason: impl Into<String>) -> Self {
        Violation { code: CloseCode::Policy, reason: reason.into() }
    }
}

/// A client's byte stream: TCP, or TLS over it.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn for S {}

async fn handle(mut stream: Box<dyn Conn>, peer: SocketAddr, state: Arc<State>, guard: SlotGuard, deadline: Instant) {
    let head = match tokio::time::timeout_at(deadline, http::read_head(&mut stream)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "bad request: {e}");
            let bad = ("400 Bad Request", "text/plain");
            let _ = http::respond(&mut stream, bad, e.to_string().as_bytes(), false, state.site.csp()).await;
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no request head before the deadline");
            state.for_cause(peer.ip());
            return;
        }
    };
    let (head, leftover) = head;
    let csp = state.site.csp();
    // Behind the trusted proxy, the client it names is who is counted and charged from here on.
    let (peer, _guard) = if state.config.trust_proxy == Some(peer.ip()) {
        let Some(client) = head.forwarded_client() else {
            let bad = ("400 Bad Request", "text/plain");
            let _ = http::respond(&mut stream, bad, b"no client address in X-Forwarded-For\n", false, csp).await;
            return;
        };
        let Some(guard) = guard.transfer(client) else {
            state.stats.refused_connections.fetch_add(1, Ordering::Relaxed);
            let busy = ("429 Too Many Requests", "text/plain");
            let _ = http::respond(&mut stream, busy, b"too many connections from your address\n", false, csp).await;
            return;
        };
        (SocketAddr::new(client, peer.port()), guard)
    } else {
        (peer, guard)
    };
    let allowed = &state.config.allow_origins;
    let checked = head.websocket_key.is_some() && !allowed.is_empty();
    if let Some(origin) = head.origin.as_deref().filter(|_| checked) {
        if !allowed.iter().any(|a| a == origin) {
            tracing::info!(%peer, origin, "WebSocket from a page of another origin refused");
            let forbidden = ("403 Forbidden", "text/plain");
            let _ = http::respond(&mut stream, forbidden, b"this origin may not use this server\n", false, csp).await;
            return;
        }
    }
    let Some(key) = head.websocket_key.clone() else {
        state.stats.http_requests.fetch_add(1, Ordering::Relaxed);
        let _ = tokio::time::timeout_at(deadline, serve_http(&mut stream, &head, &state, peer.ip())).await;
        return;
    };
    if http::accept_upgrade(&mut stream, &key).await.is_err() {
        return;
    }
    let mut ws_config = WebSocketConfig::default();
    ws_config.max_message_size = Some(MAX_MESSAGE);
    ws_config.max_frame_size = Some(MAX_MESSAGE);
    let ws =
        WebSocketStream::from_partially_read(TokioAdapter::new(stream), leftover, Role::Server, Some(ws_config)).await;
    session(ws, peer, state, deadline).await;
}

async fn serve_http(stream: &mut Box<dyn Conn>, head: &http::Head, state: &State, ip: IpAddr) {
    let head_only = head.method == "HEAD";
    let csp = state.site.csp();
    if head.method != "GET" && !head_only {
        let status = ("405 Method Not Allowed", "text/plain");
        let _ = http::respond(stream, status, b"GET or HEAD only\n", false, csp).await;
        return;
    }
    if head.path == "/config" || head.path.starts_with("/config?") {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let id = format!("{:016x}", rand_core::OsRng.next_u64());
        let body = state.config.ice.document(now, &id);
        let _ = http::respond(stream, ("200 OK", "application/json"), body.as_bytes(), head_only, csp).await;
        return;
    }
    if head.path == "/stats" {
        let body = state.stats.to_json();
        let _ = http::respond(stream, ("200 OK", "application/json"), body.as_bytes(), head_only, csp).await;
        return;
    }
    match state.site.get(&head.path) {
        Some(file) if !head_only && !state.spend_http_bytes(ip, file.body.len()) => {
            let busy = ("429 Too Many Requests", "text/plain");
            let _ = http::respond(stream, busy, b"this address fetched too much: try again later\n", false, csp).await;
        }
        Some(file) => {
            let _ = http::respond(stream, ("200 OK", file.content_type), &file.body, head_only, csp).await;
        }
        None => {
            let _ = http::respond(stream, ("404 Not Found", "text/plain"), b"not found\n", head_only, csp).await;
        }
    }
}

type Ws = WebSocketStream<TokioAdapter<Box<dyn Conn>>>;

fn text(msg: &ServerMsg) -> Message {
    Message::text(msg.encode())
}

async fn close(ws: &mut Ws, v: &Violation) {
    let frame = CloseFrame { code: v.code, reason: v.reason.clone().into() };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
}

async fn session(mut ws: Ws, peer: SocketAddr, state: Arc<State>, deadline: Instant) {
    let challenge = Challenge::with_work(state.config.registration_work);
    if ws.send(text(&challenge.message())).await.is_err() {
        return;
    }
    let registered = match tokio::time::timeout_at(deadline, register(&mut ws, &challenge, &state)).await {
        Ok(Ok(r)) => r,
        Ok(Err(v)) => {
            if v.code != CloseCode::Normal {
                tracing::debug!(%peer, reason = %v.reason, "registration refused");
                state.stats.refused_registrations.fetch_add(1, Ordering::Relaxed);
                if v.code == CloseCode::Policy {
                    state.for_cause(peer.ip());
                }
                close(&mut ws, &v).await;
            }
            return;
        }
        Err(_) => {
            state.for_cause(peer.ip());
            close(&mut ws, &Violation::policy("no registration before the deadline")).await;
            return;
        }
    };
    let (id, conn, rx) = registered;
    tracing::debug!(%peer, %id, "registered");
    let outcome = serve_registered(&mut ws, id, rx, &state).await;
    {
        let mut reg = state.registry.lock().expect("no panics while locked");
        if reg.remove(&id, conn) {
            state.stats.registered.fetch_sub(1, Ordering::Relaxed);
        }
    }
    if let Err(v) = outcome {
        tracing::debug!(%peer, %id, reason = %v.reason, "closing");
        if v.code != CloseCode::Normal {
            state.for_cause(peer.ip());
        }
        close(&mut ws, &v).await;
    }
}

type Registration = (NodeId, u64, mpsc::Receiver<Out>);

async fn register(ws: &mut Ws, challenge: &Challenge, state: &State) -> Result<Registration, Violation> {
    let msg = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => break t,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => return Err(Violation::policy("expected a register message")),
            Some(Err(e)) => return Err(ws_violation(&e)),
            None => return Err(Violation { code: CloseCode::Normal, reason: "closed".into() }),
        }
    };
    // Decoding refuses what breaks the protocol's limits (too many or too long addresses included).
    let (public_key, proof, addrs, work) = match ClientMsg::decode(msg.as_str()) {
        Ok(ClientMsg::Register { public_key, proof, addrs, work }) => (public_key, proof, addrs, work),
        Ok(_) => return Err(Violation::policy("register first")),
        Err(e) => return Err(Violation::policy(e.to_string())),
    };
    let id = challenge
        .verify(&public_key, &proof, work)
        .map_err(|e| Violation::policy(format!("registration refused: {e}")))?;
    let (tx, rx) = mpsc::channel(state.config.queue_per_peer.max(1));
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let replaced = {
        let mut reg = state.registry.lock().expect("no panics while locked");
        if !reg.peers.contains_key(&id) && reg.peers.len() >= state.config.max_registrations {
            return Err(Violation { code: CloseCode::Again, reason: "server full".into() });
        }
        let replaced = reg.insert(id, tx, addrs, conn);
        if replaced.is_none() {
            state.stats.registered.fetch_add(1, Ordering::Relaxed);
        }
        replaced
    };
    if let Some(old) = replaced {
        let _ = old.tx.try_send(Out::Close("replaced by a newer registration of the same id"));
    }
    state.stats.registrations.fetch_add(1, Ordering::Relaxed);
    ws.send(text(&ServerMsg::Registered { id: Hex32::from(id) }))
        .await
        .map_err(|_| Violation { code: CloseCode::Normal, reason: "gone".into() })?;
    Ok((id, conn, rx))
}

fn ws_violation(e: &async_tungstenite::tungstenite::Error) -> Violation {
    use async_tungstenite::tungstenite::error::{CapacityError, Error};
    match e {
        Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            Violation { code: CloseCode::Size, reason: format!("message of {size} bytes exceeds {max_size}") }
        }
        Error::Capacity(c) => Violation { code: CloseCode::Size, reason: c.to_string() },
        Error::Protocol(async_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            Violation { code: CloseCode::Normal, reason: "gone".into() }
        }
        Error::Protocol(p) => Violation { code: CloseCode::Protocol, reason: p.to_string() },
        Error::Utf8(_) => Violation { code: CloseCode::Invalid, reason: "invalid UTF-8".into() },
        other => Violation { code: CloseCode::Normal, reason: other.to_string() },
    }
}

/// Rate-limit tokens an undeliverable signal costs beyond the message itself.
const UNDELIVERABLE_COST: f64 = 9.0;

async fn serve_registered(
    ws: &mut Ws,
    id: NodeId,
    mut rx: mpsc::Receiver<Out>,
    state: &State,
) -> Result<(), Violation> {
    let c = &state.config;
    let mut limit = TokenBucket::new(Rate { per_sec: c.rate_per_sec, burst: c.rate_burst }, state.now());
    let mut peers_bytes = TokenBucket::new(c.peers_bytes_per_conn, state.now());
    let mut last_heard = Instant::now();
    let end_of_life = last_heard + c.max_lifetime;
    let mut ping = tokio::time::interval(c.ping_interval);
    ping.tick().await;
    let me = Hex32::from(id);
    loop {
        let idle_at = last_heard + c.idle_timeout;
        tokio::select! {
            incoming = ws.next() => {
                let msg = match incoming {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(ws_violation(&e)),
                    None => return Ok(()),
                };
                let now = Instant::now();
                last_heard = now;
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                    Message::Close(_) => return Ok(()),
                    Message::Binary(_) => return Err(Violation::policy("binary messages are not part of the protocol")),
                };
                if !limit.allow(state.now()) {
                    return Err(Violation::policy("rate limit exceeded"));
                }
                let reply = match ClientMsg::decode(text.as_str()) {
                    Ok(ClientMsg::Signal { to, data }) => {
                        let reply = relay(state, me, to, data);
                        if reply.is_some() {
                            // Signals nobody can take (unknown ids, full queues) cost more: a client probing
                            // ids is cut off after a few of them, an honest one rarely meets this.
                            limit.charge(UNDELIVERABLE_COST, state.now());
                        }
                        reply
                    }
                    Ok(ClientMsg::Peers { max }) => {
                        let peers = state.registry.lock().expect("no panics while locked").sample(&id, max);
                        let reply = ServerMsg::Peers { peers }.encode();
                        if !peers_bytes.take(reply.len() as f64, state.now()) {
                            return Err(Violation::policy("peers answers over their byte budget"));
                        }
                        ws.send(Message::text(reply)).await.map_err(|e| ws_violation(&e))?;
                        None
                    }
                    Ok(ClientMsg::Register { .. }) => return Err(Violation::policy("already registered")),
                    Err(e) => return Err(Violation::policy(e.to_string())),
                };
                if let Some(reply) = reply {
                    ws.send(self::text(&reply)).await.map_err(|e| ws_violation(&e))?;
                }
            }
            out = rx.recv() => match out {
                Some(Out::Text(t)) => ws.send(Message::text(t)).await.map_err(|e| ws_violation(&e))?,
                Some(Out::Close(reason)) => {
                    return Err(Violation { code: CloseCode::Normal, reason: reason.into() });
                }
                None => return Ok(()),
            },
            _ = ping.tick() => {
                ws.send(Message::Ping(Vec::new().into())).await.map_err(|e| ws_violation(&e))?;
            }
            _ = tokio::time::sleep_until(idle_at) => {
                return Err(Violation { code: CloseCode::Away, reason: "idle timeout".into() });
            }
            _ = tokio::time::sleep_until(end_of_life) => {
                return Err(Violation { code: CloseCode::Away, reason: "connection lifetime over: reconnect".into() });
            }
        }
    }
}

/// Queues `data` for `to`; returns the error to send back when that fails.
fn relay(state: &State, from: Hex32, to: Hex32, data: String) -> Option<ServerMsg> {
    if data.len() > MAX_SIGNAL_DATA {
        state.stats.undeliverable.fetch_add(1, Ordering::Relaxed);
        return Some(ServerMsg::Error { reason: format!("signal data over {MAX_SIGNAL_DATA} bytes"), to: Some(to) });
    }
    let tx = state.registry.lock().expect("no panics while locked").peers.get(&NodeId::from(to)).map(|r| r.tx.clone());
    let Some(tx) = tx else {
        state.stats.undeliverable.fetch_add(1, Ordering::Relaxed);
        return Some(ServerMsg::Error { reason: "unknown peer".into(), to: Some(to) });
    };
    let msg = ServerMsg::Signal { from, data }.encode();
    match tx.try_send(Out::Text(msg)) {
        Ok(()) => {
            state.stats.relayed.fetch_add(1, Ordering::Relaxed);
            None
        }
        Err(_) => {
            state.stats.undeliverable.fetch_add(1, Ordering::Relaxed);
            Some(ServerMsg::Error { reason: "peer busy".into(), to: Some(to) })
        }
    }
}
