//! The native backend: webrtc-rs peer connections and an async-tungstenite signaling client, on tokio.
//! Link tasks are spawned with `tokio::task::spawn_local`: run the node inside a `tokio::task::LocalSet`.

use crate::{prologue, run_link, Pipe, RtcConfig, Signal, SCHEME};
use async_tungstenite::tungstenite::Message as WsMessage;
use dht_core::{Address, Contact, Instant, NodeId};
use dht_driver::{PeerLink, Transport, TransportError};
use dht_link::{Identity, Link};
use futures::channel::{mpsc, oneshot};
use futures::future::LocalBoxFuture;
use futures::stream::LocalBoxStream;
use futures::{FutureExt, SinkExt, StreamExt};
use signaling_server::protocol::{prove, ClientMsg, Hex32, PeerInfo, ServerMsg};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit, RTCDataChannelState};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCIceServer, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

fn now_ms() -> Instant {
    dht_driver::Clock::now(&dht_driver::SystemClock)
}

/// A session id: it only pairs an answer with its offer (the link's handshake decides who is who).
fn random_u64() -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64()
}

// ---------------------------------------------------------------------------------------------------------
// Signaling client

enum Cmd {
    Send { to: NodeId, data: String },
    Peers { max: usize, reply: oneshot::Sender<Vec<PeerInfo>> },
}

/// What the signaling connection reports.
#[derive(Debug)]
enum SigEvent {
    Signal { from: NodeId, data: String },
    Undeliverable { to: NodeId, reason: String },
}

/// A registered connection to a signaling server, reconnecting by itself when it drops.
#[derive(Clone)]
pub struct SignalingClient {
    cmd: mpsc::Sender<Cmd>,
}

/// Requests waiting for the signaling socket, and signals waiting for the transport: both bounded, so a slow
/// socket or a flood of offers makes requests fail (or stops reading) instead of queueing without end.
const SIGNALING_QUEUE: usize = 256;

type Ws = async_tungstenite::WebSocketStream<async_tungstenite::tokio::TokioAdapter<tokio::net::TcpStream>>;

async fn ws_recv(ws: &mut Ws) -> Result<ServerMsg, String> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) => {
                return serde_json::from_str(t.as_str()).map_err(|e| format!("bad server message: {e}"))
            }
            Some(Ok(WsMessage::Close(f))) => {
                return Err(format!("closed by the server: {}", f.map(|f| f.reason.to_string()).unwrap_or_default()))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        }
    }
}

async fn ws_send(ws: &mut Ws, msg: &ClientMsg) -> Result<(), String> {
    ws.send(WsMessage::text(serde_json::to_string(msg).expect("client messages serialize")))
        .await
        .map_err(|e| e.to_string())
}

/// Connects to `url` and registers `identity` with `addrs`.
async fn register(url: &str, identity: &Identity, addrs: &[Address]) -> Result<Ws, String> {
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(10), async_tungstenite::tokio::connect_async(url))
        .await
        .map_err(|_| format!("{url}: connect timed out"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let ServerMsg::Challenge { nonce, key } = ws_recv(&mut ws).await? else {
        return Err("the server did not open with a challenge".into());
    };
    let (public_key, proof) = prove(identity.private_bytes(), &nonce, &key).map_err(|e| e.to_string())?;
    let addrs = addrs.iter().map(|a| a.0.clone()).collect();
    ws_send(&mut ws, &ClientMsg::Register { public_key, proof, addrs }).await?;
    match ws_recv(&mut ws).await? {
        ServerMsg::Registered { id } if NodeId::from(id) == identity.node_id() => Ok(ws),
        other => Err(format!("registration failed: {other:?}")),
    }
}

impl SignalingClient {
    /// Registers with the server at `url`; returns the client and the signals addressed to us.
    async fn connect(
        url: String,
        identity: Identity,
        addrs: Vec<Address>,
    ) -> Result<(SignalingClient, mpsc::Receiver<SigEvent>), String> {
        let ws = register(&url, &identity, &addrs).await?;
        let (cmd_tx, cmd_rx) = mpsc::channel(SIGNALING_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel(SIGNALING_QUEUE);
        tokio::task::spawn_local(signaling_loop(ws, url, identity, addrs, cmd_rx, ev_tx));
        Ok((SignalingClient { cmd: cmd_tx }, ev_rx))
    }

    /// Queues `signal` for `to`; false when the queue is full or the client is gone.
    fn send(&self, to: NodeId, signal: &Signal) -> bool {
        let data = serde_json::to_string(signal).expect("signals serialize");
        self.cmd.clone().try_send(Cmd::Send { to, data }).is_ok()
    }

    /// Up to `max` random peers registered on the server (empty while disconnected).
    pub async fn peers(&self, max: usize) -> Vec<PeerInfo> {
        let (reply, rx) = oneshot::channel();
        if self.cmd.clone().try_send(Cmd::Peers { max, reply }).is_err() {
            return Vec::new();
        }
        tokio::time::timeout(Duration::from_secs(10), rx).await.ok().and_then(Result::ok).unwrap_or_default()
    }
}

async fn signaling_loop(
    ws: Ws,
    url: String,
    identity: Identity,
    addrs: Vec<Address>,
    mut cmds: mpsc::Receiver<Cmd>,
    mut events: mpsc::Sender<SigEvent>,
) {
    let mut ws = Some(ws);
    let mut backoff = Duration::from_millis(500);
    loop {
        let Some(mut conn) = ws.take() else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            match register(&url, &identity, &addrs).await {
                Ok(c) => {
                    tracing::info!(%url, "signaling reconnected");
                    backoff = Duration::from_millis(500);
                    ws = Some(c);
                }
                Err(e) => tracing::info!(%url, "signaling reconnect failed: {e}"),
            }
            // While disconnected, requests fail at once instead of piling up.
            loop {
                match cmds.try_recv() {
                    Ok(Cmd::Peers { reply, .. }) => {
                        let _ = reply.send(Vec::new());
                    }
                    Ok(Cmd::Send { to, .. }) => {
                        let reason = "signaling disconnected".to_string();
                        let _ = events.try_send(SigEvent::Undeliverable { to, reason });
                    }
                    Err(mpsc::TryRecvError::Closed) => return,
                    Err(_) => break,
                }
            }
            continue;
        };
        let mut waiting_peers: std::collections::VecDeque<oneshot::Sender<Vec<PeerInfo>>> = Default::default();
        let reason = loop {
            tokio::select! {
                cmd = cmds.next() => match cmd {
                    None => {
                        let _ = conn.close(None).await;
                        return;
                    }
                    Some(Cmd::Send { to, data }) => {
                        if let Err(e) = ws_send(&mut conn, &ClientMsg::Signal { to: Hex32::from(to), data }).await {
                            let _ = events.try_send(SigEvent::Undeliverable { to, reason: e.clone() });
                            break e;
                        }
                    }
                    Some(Cmd::Peers { max, reply }) => {
                        if let Err(e) = ws_send(&mut conn, &ClientMsg::Peers { max }).await {
                            break e;
                        }
                        waiting_peers.push_back(reply);
                    }
                },
                msg = ws_recv(&mut conn) => match msg {
                    Ok(ServerMsg::Signal { from, data }) => {
                        // Waiting here stops reading the socket while the transport is behind.
                        if events.send(SigEvent::Signal { from: from.into(), data }).await.is_err() {
                            return;
                        }
                    }
                    Ok(ServerMsg::Peers { peers }) => {
                        if let Some(r) = waiting_peers.pop_front() {
                            let _ = r.send(peers);
                        }
                    }
                    Ok(ServerMsg::Error { reason, to: Some(to) }) => {
                        if events.send(SigEvent::Undeliverable { to: to.into(), reason }).await.is_err() {
                            return;
                        }
                    }
                    Ok(other) => tracing::debug!("unexpected signaling message {other:?}"),
                    Err(e) => break e,
                },
            }
        };
        tracing::info!(%url, "signaling connection lost: {reason}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Peer connections

/// Reports gathering completion, failure and the peer's data channel of one peer connection.
struct Handler {
    gathered: mpsc::Sender<()>,
    failed: mpsc::Sender<()>,
    channel: mpsc::Sender<Arc<dyn DataChannel>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.clone().try_send(());
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.channel.clone().try_send(dc);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
            let _ = self.failed.clone().try_send(());
        }
    }
}

struct Setup<P> {
    pc: P,
    /// Ours (dialer) or the peer's once announced (answerer).
    dc: Option<Arc<dyn DataChannel>>,
    announced: mpsc::Receiver<Arc<dyn DataChannel>>,
    gathered: mpsc::Receiver<()>,
    failed: mpsc::Receiver<()>,
}

/// A peer connection; the dialer (`create_channel`) also creates the link's data channel, which reaches
/// the answerer through `on_data_channel`.
async fn new_connection(config: &RtcConfig, create_channel: bool) -> Result<Setup<impl PeerConnection>, String> {
    let (gathered_tx, gathered) = mpsc::channel(1);
    let (failed_tx, failed) = mpsc::channel(1);
    let (channel_tx, announced) = mpsc::channel(1);
    let setting = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_ice_connection_attempts(Some(Duration::from_millis(50)), None)
        .build();
    let ice_servers = if config.ice_servers.is_empty() {
        Vec::new()
    } else {
        vec![RTCIceServer { urls: config.ice_servers.clone(), ..Default::default() }]
    };
    let rtc_config = RTCConfigurationBuilder::new().with_ice_servers(ice_servers).build();
    let mut builder = PeerConnectionBuilder::new()
        .with_configuration(rtc_config)
        .with_setting_engine(setting)
        .with_handler(Arc::new(Handler { gathered: gathered_tx, failed: failed_tx, channel: channel_tx }))
        .with_data_channel_send_buffer_limit(config.send_buffer_limit);
    if !config.udp_addrs.is_empty() {
        builder = builder.with_udp_addrs(config.udp_addrs.clone());
    }
    let pc = builder.build().await.map_err(|e| format!("peer connection: {e}"))?;
    let dc = if create_channel {
        let init = RTCDataChannelInit { ordered: true, ..Default::default() };
        Some(pc.create_data_channel("webdht", Some(init)).await.map_err(|e| format!("data channel: {e}"))?)
    } else {
        None
    };
    Ok(Setup { pc, dc, announced, gathered, failed })
}

/// Waits (bounded) for ICE gathering, then returns the local SDP with its candidates.
async fn local_sdp<P: PeerConnection>(pc: &P, gathered: &mut mpsc::Receiver<()>) -> Result<String, String> {
    let _ = tokio::time::timeout(Duration::from_secs(5), gathered.next()).await;
    pc.local_description().await.map(|d| d.sdp).ok_or_else(|| "no local description".into())
}

/// Plumbs a data channel into a [`Pipe`]: a reader task forwards messages into a bounded queue (so a slow
/// link stops reading), a writer task sends chunks once the channel is open, each send waiting while the
/// channel's buffer is over its limit.
fn pipe_for(dc: Arc<dyn DataChannel>, queue: usize) -> Pipe {
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(queue);
    let (mut inc_tx, inc_rx) = mpsc::channel::<Vec<u8>>(queue);
    let (open_tx, open_rx) = oneshot::channel::<()>();
    let reader = dc.clone();
    tokio::spawn(async move {
        let mut open_tx = Some(open_tx);
        while let Some(ev) = reader.poll().await {
            match ev {
                DataChannelEvent::OnOpen => {
                    if let Some(tx) = open_tx.take() {
                        let _ = tx.send(());
                    }
                }
                DataChannelEvent::OnMessage(m) if inc_tx.send(m.data.to_vec()).await.is_err() => break,
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
    tokio::spawn(async move {
        // The answerer may learn of the channel once it is already open.
        let open = matches!(dc.ready_state().await, Ok(RTCDataChannelState::Open)) || open_rx.await.is_ok();
        if open {
            while let Some(chunk) = out_rx.next().await {
                if dc.send(bytes::BytesMut::from(&chunk[..])).await.is_err() {
                    break;
                }
            }
        }
        let _ = dc.close().await;
    });
    Pipe { out: out_tx, inc: inc_rx }
}

// ---------------------------------------------------------------------------------------------------------
// The transport

type AnswerWait = (NodeId, oneshot::Sender<Result<String, String>>);

struct Inner {
    identity: Identity,
    local_addrs: Vec<Address>,
    config: RtcConfig,
    signaling: SignalingClient,
    /// Our offers waiting for an answer, by session.
    pending: RefCell<HashMap<u64, AnswerWait>>,
    /// Offers from others being answered now.
    answering: Cell<usize>,
    incoming: mpsc::Sender<PeerLink>,
}

impl Inner {
    /// Completes our offer `session` with the reply of `from`; a reply from anyone but the peer the offer
    /// went to is ignored.
    fn settle(&self, session: u64, from: NodeId, reply: Result<String, String>) {
        let mut pending = self.pending.borrow_mut();
        if pending.get(&session).is_some_and(|(peer, _)| *peer == from) {
            if let Some((_, tx)) = pending.remove(&session) {
                let _ = tx.send(reply);
            }
        }
    }
}

/// WebRTC links to peers registered on one signaling server.
pub struct WebRtcTransport {
    inner: Rc<Inner>,
    incoming: Option<mpsc::Receiver<PeerLink>>,
}

impl WebRtcTransport {
    /// Registers `identity` with the signaling server of `config` and starts answering offers.
    /// `advertised`: the node's other addresses (e.g. TCP), handed out by the server with its id; the
    /// node's own `rtc:` address is [`WebRtcTransport::local_address`]. Call inside a tokio `LocalSet`.
    pub async fn start(
        identity: Identity,
        advertised: Vec<Address>,
        config: RtcConfig,
    ) -> Result<Self, TransportError> {
        Self::start_split(identity.clone(), identity, advertised, config).await
    }

    /// Registers as `signaling_identity` but authenticates links as `identity`: what an impostor does.
    /// For tests that peers refuse such links; a real node uses [`WebRtcTransport::start`].
    #[doc(hidden)]
    pub async fn start_split(
        signaling_identity: Identity,
        identity: Identity,
        advertised: Vec<Address>,
        config: RtcConfig,
    ) -> Result<Self, TransportError> {
        let own = crate::address(&config.signaling_url);
        let mut local_addrs = vec![own];
        local_addrs.extend(advertised);
        let (signaling, events) =
            SignalingClient::connect(config.signaling_url.clone(), signaling_identity, local_addrs.clone())
                .await
                .map_err(TransportError::Connect)?;
        let (incoming_tx, incoming_rx) = mpsc::channel(config.queue);
        let inner = Rc::new(Inner {
            identity,
            local_addrs,
            config,
            signaling,
            pending: RefCell::new(HashMap::new()),
            answering: Cell::new(0),
            incoming: incoming_tx,
        });
        tokio::task::spawn_local(event_loop(Rc::downgrade(&inner), events));
        Ok(WebRtcTransport { inner, incoming: Some(incoming_rx) })
    }

    /// Our WebRTC address (`rtc:` + the signaling URL).
    pub fn local_address(&self) -> Address {
        crate::address(&self.inner.config.signaling_url)
    }

    /// All addresses this transport advertises (the `rtc:` one first).
    pub fn local_addrs(&self) -> &[Address] {
        &self.inner.local_addrs
    }

    /// The signaling connection (e.g. to ask for peers to bootstrap from).
    pub fn signaling(&self) -> &SignalingClient {
        &self.inner.signaling
    }
}

async fn event_loop(inner: Weak<Inner>, mut events: mpsc::Receiver<SigEvent>) {
    while let Some(ev) = events.next().await {
        let Some(inner) = inner.upgrade() else { return };
        match ev {
            SigEvent::Signal { from, data } => match serde_json::from_str::<Signal>(&data) {
                Ok(Signal::Offer { session, sdp }) => {
                    if inner.answering.get() >= inner.config.max_pending {
                        let reason = "too many links being set up".to_string();
                        let _ = inner.signaling.send(from, &Signal::Reject { session, reason });
                        continue;
                    }
                    inner.answering.set(inner.answering.get() + 1);
                    let i = inner.clone();
                    tokio::task::spawn_local(async move {
                        if let Err(e) = answer(&i, from, session, sdp).await {
                            tracing::info!(peer = %from, "inbound WebRTC link failed: {e}");
                        }
                        i.answering.set(i.answering.get() - 1);
                    });
                }
                Ok(Signal::Answer { session, sdp }) => inner.settle(session, from, Ok(sdp)),
                Ok(Signal::Reject { session, reason }) => {
                    inner.settle(session, from, Err(format!("refused: {reason}")))
                }
                Err(e) => tracing::debug!(peer = %from, "bad signal: {e}"),
            },
            SigEvent::Undeliverable { to, reason } => {
                let mut pending = inner.pending.borrow_mut();
                let sessions: Vec<u64> = pending.iter().filter(|(_, (p, _))| *p == to).map(|(s, _)| *s).collect();
                for s in sessions {
                    if let Some((_, tx)) = pending.remove(&s) {
                        let _ = tx.send(Err(format!("signaling: {reason}")));
                    }
                }
            }
        }
    }
}

/// Runs the link over an established setup; returns the open link.
async fn finish<P: PeerConnection + 'static>(inner: &Inner, setup: Setup<P>, link: Link) -> Result<PeerLink, String> {
    let Setup { pc, dc, mut announced, mut failed, .. } = setup;
    let dc = match dc {
        Some(dc) => dc,
        None => tokio::select! {
            dc = announced.next() => dc.ok_or("no data channel")?,
            _ = failed.next() => return Err("connection failed".into()),
        },
    };
    let pipe = pipe_for(dc, inner.config.queue);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (err_tx, err_rx) = oneshot::channel::<String>();
    let (queue, hs) = (inner.config.queue, inner.config.link.handshake_timeout);
    tokio::task::spawn_local(async move {
        let r = run_link(pipe, link, queue, hs, now_ms, ready_tx).await;
        if let Err(e) = &r {
            let _ = err_tx.send(e.to_string());
        }
        let _ = pc.close().await;
    });
    let opened = tokio::select! {
        r = ready_rx => r.ok(),
        _ = failed.next() => None,
    };
    match opened {
        Some(link) => Ok(link),
        // Prefer the link's own reason when it has one.
        None => match tokio::time::timeout(Duration::from_millis(100), err_rx).await {
            Ok(Ok(reason)) => Err(reason),
            _ => Err("connection failed".into()),
        },
    }
}

async fn dial(inner: Rc<Inner>, peer: Contact) -> Result<PeerLink, TransportError> {
    let fail = |e: String| TransportError::Connect(format!("{}: {e}", peer.id));
    let mut setup = new_connection(&inner.config, true).await.map_err(fail)?;
    let offer = setup.pc.create_offer(None).await.map_err(|e| fail(format!("offer: {e}")))?;
    setup.pc.set_local_description(offer).await.map_err(|e| fail(format!("local description: {e}")))?;
    let offer_sdp = local_sdp(&setup.pc, &mut setup.gathered).await.map_err(fail)?;
    let session = random_u64();
    let (tx, rx) = oneshot::channel();
    inner.pending.borrow_mut().insert(session, (peer.id, tx));
    if !inner.signaling.send(peer.id, &Signal::Offer { session, sdp: offer_sdp.clone() }) {
        inner.pending.borrow_mut().remove(&session);
        let _ = setup.pc.close().await;
        return Err(fail("signaling queue full".into()));
    }
    let timeout = inner.config.connect_timeout;
    let answer = match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(sdp))) => sdp,
        Ok(Ok(Err(e))) => return Err(fail(e)),
        Ok(Err(_)) => return Err(fail("signaling gone".into())),
        Err(_) => {
            inner.pending.borrow_mut().remove(&session);
            let _ = setup.pc.close().await;
            return Err(fail("no answer in time".into()));
        }
    };
    let desc = RTCSessionDescription::answer(answer.clone()).map_err(|e| fail(format!("bad answer: {e}")))?;
    setup.pc.set_remote_description(desc).await.map_err(|e| fail(format!("remote description: {e}")))?;
    let prologue = prologue(&offer_sdp, &answer);
    let link = Link::initiator(
        &inner.identity,
        Some(peer.id),
        &prologue,
        inner.local_addrs.clone(),
        &inner.config.link,
        now_ms(),
    )
    .map_err(|e| fail(e.to_string()))?;
    match tokio::time::timeout(timeout, finish(&inner, setup, link)).await {
        Ok(Ok(l)) => Ok(l),
        Ok(Err(e)) => Err(fail(e)),
        Err(_) => Err(fail("link not open in time".into())),
    }
}

async fn answer(inner: &Rc<Inner>, from: NodeId, session: u64, offer_sdp: String) -> Result<(), String> {
    let mut setup = new_connection(&inner.config, false).await?;
    let desc = RTCSessionDescription::offer(offer_sdp.clone()).map_err(|e| format!("bad offer: {e}"))?;
    setup.pc.set_remote_description(desc).await.map_err(|e| format!("remote description: {e}"))?;
    let ans = setup.pc.create_answer(None).await.map_err(|e| format!("answer: {e}"))?;
    setup.pc.set_local_description(ans).await.map_err(|e| format!("local description: {e}"))?;
    let answer_sdp = local_sdp(&setup.pc, &mut setup.gathered).await?;
    if !inner.signaling.send(from, &Signal::Answer { session, sdp: answer_sdp.clone() }) {
        let _ = setup.pc.close().await;
        return Err("signaling queue full".into());
    }
    let prologue = prologue(&offer_sdp, &answer_sdp);
    let link = Link::responder(&inner.identity, &prologue, inner.local_addrs.clone(), &inner.config.link, now_ms())
        .map_err(|e| e.to_string())?;
    let link = tokio::time::timeout(inner.config.connect_timeout, finish(inner, setup, link))
        .await
        .map_err(|_| "link not open in time".to_string())??;
    if link.remote.id != from {
        // The server said the offer came from `from`; the handshake proved someone else.
        return Err(format!("signaling named {from}, the handshake proved {}", link.remote.id));
    }
    inner.incoming.clone().send(link).await.map_err(|_| "transport dropped".to_string())
}

impl Transport for WebRtcTransport {
    fn dial(&self, peer: &Contact) -> LocalBoxFuture<'static, Result<PeerLink, TransportError>> {
        let ours = crate::address(&self.inner.config.signaling_url);
        let reachable = peer.addrs.iter().any(|a| a.0.starts_with(SCHEME) && *a == ours);
        if !reachable {
            let id = peer.id;
            return async move { Err(TransportError::NoAddress(id)) }.boxed_local();
        }
        dial(self.inner.clone(), peer.clone()).boxed_local()
    }

    fn incoming(&mut self) -> LocalBoxStream<'static, PeerLink> {
        match self.incoming.take() {
            Some(rx) => rx.boxed_local(),
            None => futures::stream::empty().boxed_local(),
        }
    }
}
