//! The signaling client, shared by both backends: registration (challenge → proof of key possession), a
//! reconnecting loop, and bounded queues both ways. The socket itself is a backend's [`SignalSocket`].

use crate::rt;
use dht_core::{Address, Contact, NodeId};
use dht_driver::{timeout, Clock, SharedClock};
use dht_link::Identity;
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, StreamExt};
use signaling_protocol::{prove, solve_work, ClientMsg, Hex32, PeerInfo, ServerMsg, MAX_WORK_BITS};
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A WebSocket carrying text messages: async-tungstenite natively, the browser's `WebSocket` in wasm.
///
/// `recv` must be cancel-safe: the client drops a pending `recv` whenever a request is ready to send.
#[allow(async_fn_in_trait)] // single-threaded by design: no Send bound is wanted
pub trait SignalSocket: Sized + 'static {
    /// Opens a connection to `url` (`ws://` or `wss://`); for `wss://`, `tls_roots` (DER certificates) are
    /// trusted besides the system's (natively; a browser has its own trust).
    async fn connect(url: &str, tls_roots: &[Vec<u8>]) -> Result<Self, String>;
    /// Sends one text message.
    async fn send(&mut self, text: String) -> Result<(), String>;
    /// The next text message (other kinds are skipped); an error once the connection is gone.
    async fn recv(&mut self) -> Result<String, String>;
    /// Closes the connection politely.
    async fn close(self);
}

pub(crate) enum Cmd {
    Send { to: NodeId, data: String },
    Peers { max: usize, reply: oneshot::Sender<Vec<PeerInfo>> },
}

/// What the signaling connection reports.
#[derive(Debug)]
pub(crate) enum SigEvent {
    Signal {
        from: NodeId,
        data: String,
    },
    Undeliverable {
        to: NodeId,
        reason: String,
    },
    /// The connection to the server broke: what was sent through it will not be answered.
    Lost,
}

/// Requests waiting for the signaling socket, and signals waiting for the transport: both bounded, so a slow
/// socket or a flood of offers makes requests fail (or stops reading) instead of queueing without end.
pub(crate) const SIGNALING_QUEUE: usize = 256;

/// How long connecting and registering may take.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// A registered connection to a signaling server, reconnecting by itself when it drops.
#[derive(Clone)]
pub struct SignalingClient {
    cmd: mpsc::Sender<Cmd>,
    clock: SharedClock,
    /// Registered now (not between a lost connection and the next registration).
    connected: Rc<Cell<bool>>,
    /// Which of the servers we are registered on (or were last).
    current: Rc<Cell<usize>>,
    registration: Rc<Registration>,
}

async fn recv_msg<S: SignalSocket>(ws: &mut S) -> Result<ServerMsg, String> {
    let text = ws.recv().await?;
    ServerMsg::decode(&text).map_err(|e| format!("bad server message: {e}"))
}

async fn send_msg<S: SignalSocket>(ws: &mut S, msg: &ClientMsg) -> Result<(), String> {
    ws.send(msg.encode()).await
}

/// Who a signaling connection registers, and where: what every (re)connection needs.
struct Registration {
    /// The servers, in the order given: the node registers on one at a time.
    urls: Vec<String>,
    tls_roots: Arc<[Vec<u8>]>,
    identity: Identity,
    /// Our addresses besides the `rtc:` one, which names the server we register on.
    advertised: Vec<Address>,
    clock: SharedClock,
}

impl Registration {
    /// Connects to the server at `url` and registers the identity there, with the `rtc:` address of that
    /// server and the other addresses.
    async fn register<S: SignalSocket>(&self, url: &str) -> Result<S, String> {
        let Registration { tls_roots, identity, clock, .. } = self;
        let steps = async {
            let mut ws = S::connect(url, tls_roots).await.map_err(|e| format!("{url}: {e}"))?;
            let ServerMsg::Challenge { nonce, key, work } = recv_msg(&mut ws).await? else {
                return Err("the server did not open with a challenge".to_string());
            };
            let (public_key, proof) = prove(identity.private_bytes(), &nonce, &key).map_err(|e| e.to_string())?;
            // The proof of work the server may ask for (a few thousand hashes to a few million, at most
            // MAX_WORK_BITS): a moment's CPU before the registration.
            let work = solve_work(&nonce, &public_key, work).ok_or_else(|| {
                format!("{url}: the server asks for {work} bits of registration work, more than {MAX_WORK_BITS}")
            })?;
            let addrs = self.addrs(url).iter().map(|a| a.as_str().to_owned()).collect();
            send_msg(&mut ws, &ClientMsg::Register { public_key, proof, addrs, work }).await?;
            match recv_msg(&mut ws).await? {
                ServerMsg::Registered { id } if NodeId::from(id) == identity.node_id() => Ok(ws),
                other => Err(format!("registration failed: {other:?}")),
            }
        };
        timeout(clock, REGISTER_TIMEOUT, steps).await.map_err(|_| format!("{url}: registration timed out"))?
    }

    /// Our addresses while registered on the server at `url`: its `rtc:` address first.
    fn addrs(&self, url: &str) -> Vec<Address> {
        std::iter::once(crate::address(url)).chain(self.advertised.iter().cloned()).collect()
    }
}

impl SignalingClient {
    /// Registers on the first of `urls` that answers, in order; returns the client and the signals
    /// addressed to us, or why none answered. When that server goes away the client registers again, on it
    /// if it is back in a moment, else on the next of `urls` that answers (in turn). Waits and deadlines are
    /// on `clock`.
    pub(crate) async fn connect<S: SignalSocket>(
        urls: Vec<String>,
        tls_roots: Arc<[Vec<u8>]>,
        identity: Identity,
        advertised: Vec<Address>,
        clock: SharedClock,
    ) -> Result<(SignalingClient, mpsc::Receiver<SigEvent>), String> {
        let registration = Rc::new(Registration { urls, tls_roots, identity, advertised, clock: clock.clone() });
        let mut failures = Vec::new();
        for (at, url) in registration.urls.iter().enumerate() {
            match registration.register::<S>(url).await {
                Ok(ws) => {
                    let (cmd_tx, cmd_rx) = mpsc::channel(SIGNALING_QUEUE);
                    let (ev_tx, ev_rx) = mpsc::channel(SIGNALING_QUEUE);
                    let (connected, current) = (Rc::new(Cell::new(true)), Rc::new(Cell::new(at)));
                    let client = SignalingClient {
                        cmd: cmd_tx,
                        clock,
                        connected: connected.clone(),
                        current: current.clone(),
                        registration: registration.clone(),
                    };
                    rt::spawn(signaling_loop(ws, registration, cmd_rx, ev_tx, connected, current));
                    return Ok((client, ev_rx));
                }
                Err(e) => {
                    tracing::info!(%url, "signaling server not answering: {e}");
                    failures.push(e);
                }
            }
        }
        Err(failures.join("; "))
    }

    /// The server we are registered on (or were last, while the client reconnects).
    pub fn url(&self) -> &str {
        &self.registration.urls[self.current.get()]
    }

    /// Our addresses on the server we are registered on (its `rtc:` address first).
    pub fn addrs(&self) -> Vec<Address> {
        self.registration.addrs(self.url())
    }

    /// Whether the client is registered now (false while the server is away and the client reconnects).
    pub fn is_connected(&self) -> bool {
        self.connected.get()
    }

    /// Queues `signal` for `to`; false when the queue is full or the client is gone.
    pub(crate) fn send(&self, to: NodeId, signal: &crate::Signal) -> bool {
        let data = serde_json::to_string(signal).expect("signals serialize");
        self.cmd.clone().try_send(Cmd::Send { to, data }).is_ok()
    }

    /// Up to `max` random peers registered on the server (empty while disconnected).
    pub async fn peers(&self, max: usize) -> Vec<PeerInfo> {
        let (reply, rx) = oneshot::channel();
        if self.cmd.clone().try_send(Cmd::Peers { max, reply }).is_err() {
            return Vec::new();
        }
        timeout(&self.clock, REGISTER_TIMEOUT, rx).await.ok().and_then(Result::ok).unwrap_or_default()
    }

    /// Up to `max` random peers registered on the server, as contacts to join through (their ids are the
    /// ones they proved to the server; links to them prove them again).
    pub async fn seeds(&self, max: usize) -> Vec<Contact> {
        self.peers(max).await.into_iter().map(Contact::from).collect()
    }
}

/// What woke the signaling loop.
enum Next {
    Cmd(Option<Cmd>),
    Msg(Result<ServerMsg, String>),
}

/// How a registered connection's turn ended.
enum Served {
    /// The connection broke (why); the loop reconnects.
    Lost(String),
    /// The client or the transport is gone; the loop ends.
    Done,
}

async fn signaling_loop<S: SignalSocket>(
    ws: S,
    registration: Rc<Registration>,
    mut cmds: mpsc::Receiver<Cmd>,
    mut events: mpsc::Sender<SigEvent>,
    connected: Rc<Cell<bool>>,
    current: Rc<Cell<usize>>,
) {
    let mut ws = Some(ws);
    let mut backoff = Duration::from_millis(500);
    // The server tried next: the one we were on first (it may be back in a moment), then the others in turn.
    let mut next = current.get();
    loop {
        let Some(conn) = ws.take() else {
            registration.clock.sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            let url = &registration.urls[next];
            match registration.register::<S>(url).await {
                Ok(c) => {
                    tracing::info!(%url, "signaling reconnected");
                    current.set(next);
                    connected.set(true);
                    backoff = Duration::from_millis(500);
                    ws = Some(c);
                }
                Err(e) => {
                    tracing::info!(%url, "signaling reconnect failed: {e}");
                    next = (next + 1) % registration.urls.len();
                }
            }
            if !fail_queued(&mut cmds, &mut events) {
                return;
            }
            continue;
        };
        let served = serve(conn, &mut cmds, &mut events).await;
        connected.set(false);
        match served {
            Served::Lost(reason) => {
                let url = &registration.urls[current.get()];
                tracing::info!(%url, "signaling connection lost: {reason}");
                let _ = events.try_send(SigEvent::Lost);
            }
            Served::Done => return,
        }
    }
}

/// While disconnected, requests fail at once instead of piling up. False once the client is gone.
fn fail_queued(cmds: &mut mpsc::Receiver<Cmd>, events: &mut mpsc::Sender<SigEvent>) -> bool {
    loop {
        match cmds.try_recv() {
            Ok(Cmd::Peers { reply, .. }) => {
                let _ = reply.send(Vec::new());
            }
            Ok(Cmd::Send { to, .. }) => {
                let reason = "signaling disconnected".to_string();
                let _ = events.try_send(SigEvent::Undeliverable { to, reason });
            }
            Err(mpsc::TryRecvError::Closed) => return false,
            Err(_) => return true,
        }
    }
}

/// Carries requests and server messages over one registered connection until it breaks or we are done.
async fn serve<S: SignalSocket>(
    mut conn: S,
    cmds: &mut mpsc::Receiver<Cmd>,
    events: &mut mpsc::Sender<SigEvent>,
) -> Served {
    use futures::SinkExt;
    let mut waiting_peers: VecDeque<oneshot::Sender<Vec<PeerInfo>>> = VecDeque::new();
    loop {
        let next = {
            let mut recv = std::pin::pin!(recv_msg(&mut conn).fuse());
            futures::select! {
                cmd = cmds.next() => Next::Cmd(cmd),
                msg = recv => Next::Msg(msg),
            }
        };
        match next {
            Next::Cmd(None) => {
                conn.close().await;
                return Served::Done;
            }
            Next::Cmd(Some(Cmd::Send { to, data })) => {
                if let Err(e) = send_msg(&mut conn, &ClientMsg::Signal { to: Hex32::from(to), data }).await {
                    let _ = events.try_send(SigEvent::Undeliverable { to, reason: e.clone() });
                    return Served::Lost(e);
                }
            }
            Next::Cmd(Some(Cmd::Peers { max, reply })) => {
                if let Err(e) = send_msg(&mut conn, &ClientMsg::Peers { max }).await {
                    return Served::Lost(e);
                }
                waiting_peers.push_back(reply);
            }
            Next::Msg(Ok(ServerMsg::Signal { from, data })) => {
                // Waiting here stops reading the socket while the transport is behind.
                if events.send(SigEvent::Signal { from: from.into(), data }).await.is_err() {
                    return Served::Done;
                }
            }
            Next::Msg(Ok(ServerMsg::Peers { peers })) => {
                if let Some(r) = waiting_peers.pop_front() {
                    let _ = r.send(peers);
                }
            }
            Next::Msg(Ok(ServerMsg::Error { reason, to: Some(to) })) => {
                if events.send(SigEvent::Undeliverable { to: to.into(), reason }).await.is_err() {
                    return Served::Done;
                }
            }
            Next::Msg(Ok(other)) => tracing::debug!("unexpected signaling message {other:?}"),
            Next::Msg(Err(e)) => return Served::Lost(e),
        }
    }
}
