//! The transport, shared by both backends: offers and answers through the signaling client, the Noise
//! link inside the data channel, and the checks that tie them together. A backend supplies the peer
//! connection ([`RtcPeer`]) and the signaling socket ([`crate::signaling::SignalSocket`]).

use crate::backend::{Peer, Socket};
use crate::signaling::{SigEvent, SignalingClient};
use crate::{prologue, rt, IceCandidate, RtcConfig, Signal, MAX_CANDIDATES};
use dht_core::{Address, Contact, NodeId, Relayed};
use dht_driver::{parse_via, timeout, Clock, LinkSet, PeerLink, RelayPort, SharedClock, Transport, TransportError};
use dht_link::{Identity, Link};
use dht_link_io::{handshake_error, ChannelPipe, Opened};
use futures::channel::{mpsc, oneshot};
use futures::future::LocalBoxFuture;
use futures::stream::LocalBoxStream;
use futures::{FutureExt, SinkExt, StreamExt};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::time::Duration;

/// A peer connection being set up.
pub(crate) struct Setup<P> {
    pub(crate) pc: P,
    /// Our SDP, as soon as it is set: the candidates follow one by one (trickle ICE).
    pub(crate) sdp: String,
    /// Our candidates, as they are gathered (at most [`MAX_CANDIDATES`]).
    pub(crate) candidates: mpsc::Receiver<IceCandidate>,
    /// The link's data channel as a [`ChannelPipe`]: at once for the dialer (it creates the channel), once the
    /// dialer's channel is announced for the answerer.
    pub(crate) pipe: oneshot::Receiver<ChannelPipe>,
    /// Gets a message (or ends) when the connection fails or closes.
    pub(crate) failed: mpsc::Receiver<()>,
}

impl<P> Setup<P> {
    /// Our candidates, to send as they come (the setup keeps an ended stream).
    fn take_candidates(&mut self) -> mpsc::Receiver<IceCandidate> {
        let (_, ended) = mpsc::channel(0);
        std::mem::replace(&mut self.candidates, ended)
    }
}

/// A peer connection before its description is set: what a backend builds first.
pub(crate) struct Fresh<P> {
    pub(crate) pc: P,
    /// Our candidates, as they are gathered.
    pub(crate) candidates: mpsc::Receiver<IceCandidate>,
    pub(crate) failed: mpsc::Receiver<()>,
    pub(crate) pipe: oneshot::Receiver<ChannelPipe>,
}

impl<P> Fresh<P> {
    /// The setup, once the local SDP is set.
    pub(crate) fn with_sdp(self, sdp: String) -> Setup<P> {
        Setup { pc: self.pc, sdp, candidates: self.candidates, pipe: self.pipe, failed: self.failed }
    }
}

/// One backend's peer connection: webrtc-rs natively, `RTCPeerConnection` in the browser.
#[allow(async_fn_in_trait)] // single-threaded by design: no Send bound is wanted
pub(crate) trait RtcPeer: Sized + 'static {
    /// A connection with the link's data channel, and its offer.
    async fn offer(config: &RtcConfig) -> Result<Setup<Self>, String>;
    /// A connection answering `offer`, and its answer.
    async fn answer(config: &RtcConfig, offer: &str) -> Result<Setup<Self>, String>;
    /// Applies the peer's answer to our offer.
    async fn accept(&self, answer: &str) -> Result<(), String>;
    /// Adds one of the peer's candidates (once its description is set).
    async fn add_candidate(&self, candidate: &IceCandidate) -> Result<(), String>;
    /// The candidate pair ICE selected: ours, the peer's, and the protocol (`udp`, `tcp`); `None` when
    /// the connection cannot tell.
    async fn selected_pair(&self) -> Option<(Candidate, Candidate, String)>;
    /// Closes the connection and its channel.
    async fn close(self);
}

/// The type of an ICE candidate: where the address it offers comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Candidate {
    /// An address of the machine itself.
    Host,
    /// The address a NAT showed a STUN server (server reflexive).
    Srflx,
    /// An address learned from the peer's checks (peer reflexive).
    Prflx,
    /// An address on a TURN server, which relays every packet.
    Relay,
    /// A type this build does not know.
    Unknown,
}

impl Candidate {
    /// From the names WebRTC uses (`host`, `srflx`, `prflx`, `relay`).
    pub fn from_name(name: &str) -> Candidate {
        match name {
            "host" => Candidate::Host,
            "srflx" => Candidate::Srflx,
            "prflx" => Candidate::Prflx,
            "relay" => Candidate::Relay,
            _ => Candidate::Unknown,
        }
    }

    /// The WebRTC name.
    pub fn name(self) -> &'static str {
        match self {
            Candidate::Host => "host",
            Candidate::Srflx => "srflx",
            Candidate::Prflx => "prflx",
            Candidate::Relay => "relay",
            Candidate::Unknown => "unknown",
        }
    }
}

/// How one live link travels, as ICE set it up.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LinkPath {
    /// Our candidate's type.
    pub local: Candidate,
    /// The peer's candidate's type.
    pub remote: Candidate,
    /// `udp` or `tcp` (empty when unknown).
    pub protocol: String,
    /// From the start of the setup (our offer, or the peer's offer arriving) to the authenticated link.
    pub setup_ms: u64,
    /// Of that, until the SDP exchange was done (the dialer: the answer came; the answerer: it was sent);
    /// ICE, DTLS, SCTP and the Noise handshake take the rest.
    pub signaled_ms: u64,
    /// We dialed (sent the offer), rather than answered.
    pub dialed: bool,
    /// Relays the setup's signals passed over the DHT's links: 0 when they went through the signaling
    /// server (1 too when they went straight over a link between the two ends).
    pub relays: u8,
}

impl LinkPath {
    /// One word for the path: `relay` when either side is a TURN address, `srflx` / `prflx` when either is
    /// a reflexive one (through a NAT, directly), else `host`.
    pub fn kind(&self) -> &'static str {
        let either = |c: Candidate| self.local == c || self.remote == c;
        if either(Candidate::Relay) {
            "relay"
        } else if either(Candidate::Srflx) {
            "srflx"
        } else if either(Candidate::Prflx) {
            "prflx"
        } else if either(Candidate::Unknown) {
            "unknown"
        } else {
            "host"
        }
    }
}

/// The paths of a transport's live links, by peer: readable while the driver owns the transport (see
/// [`WebRtcTransport::paths`]).
#[derive(Clone, Default)]
pub struct PathBook(Rc<RefCell<HashMap<NodeId, (u64, LinkPath)>>>, Rc<Cell<[u64; 3]>>);

impl PathBook {
    /// Links opened since the transport started, by how their setup was signaled: `[through the
    /// signaling server, through one relay, through two]` (see [`LinkPath::relays`]).
    pub fn opened(&self) -> [u64; 3] {
        self.1.get()
    }

    /// The path of the live link to `peer`.
    pub fn get(&self, peer: &NodeId) -> Option<LinkPath> {
        self.0.borrow().get(peer).map(|(_, p)| p.clone())
    }

    /// Every live link's path.
    pub fn all(&self) -> Vec<(NodeId, LinkPath)> {
        self.0.borrow().iter().map(|(id, (_, p))| (*id, p.clone())).collect()
    }

    fn open(&self, peer: NodeId, serial: u64, path: LinkPath) {
        let mut opened = self.1.get();
        opened[usize::from(path.relays).min(2)] += 1;
        self.1.set(opened);
        self.0.borrow_mut().insert(peer, (serial, path));
    }

    /// The pair `peer`'s link `serial` uses now.
    fn update(&self, peer: NodeId, serial: u64, (local, remote, protocol): (Candidate, Candidate, String)) {
        if let Some((s, path)) = self.0.borrow_mut().get_mut(&peer) {
            if *s == serial && (path.local, path.remote, &path.protocol) != (local, remote, &protocol) {
                tracing::debug!(%peer, from = path.kind(), "WebRTC link moved to another candidate pair");
                (path.local, path.remote, path.protocol) = (local, remote, protocol);
            }
        }
    }

    /// Forgets `peer`'s link `serial` (not a newer link to the same peer).
    fn close(&self, peer: NodeId, serial: u64) {
        let mut book = self.0.borrow_mut();
        if book.get(&peer).is_some_and(|(s, _)| *s == serial) {
            book.remove(&peer);
        }
    }
}

/// An offer of ours waiting for its answer.
struct AnswerWait {
    peer: NodeId,
    /// The ways the offer went that may still bring the answer (a relay without a link to the peer says so).
    paths: Vec<SignalPath>,
    /// Who waits: for the answer's SDP and the way it came by.
    tx: oneshot::Sender<Result<(String, SignalPath), TransportError>>,
}

/// How a link setup's signals travel to the peer: through our signaling server, or over the DHT's links
/// through these relays (nearest first).
#[derive(Clone, Debug, PartialEq, Eq)]
enum SignalPath {
    Server,
    Relayed(Vec<NodeId>),
}

impl SignalPath {
    /// The relays for [`LinkPath::relays`]: signals carried straight over a link between the two ends (an
    /// empty route, which only a way back takes) count as one, being carried by the DHT all the same.
    fn relays(&self) -> u8 {
        match self {
            SignalPath::Server => 0,
            SignalPath::Relayed(route) => route.len().max(1) as u8,
        }
    }
}

/// Relay routes one offer takes at most, all at once: the peer answers the copy that reaches it first and
/// ignores the others, and a relay without a link to it says so. In a swarm whose links churn, a relay
/// that vouched for a peer may have closed its link since; of six linked peers, one most likely holds one.
const MAX_ROUTES: usize = 6;

/// Characters of the reason a peer is told when its offer cannot be answered.
const MAX_REJECT_REASON: usize = 200;

/// Offers answered lately that are remembered, so that a copy which came by a slower route is not answered
/// again once the setup it began has ended.
const ANSWERED_MEMORY: usize = 128;

/// The node's relay, once the driver hands it over: where relayed signals leave, and its links.
struct RelayOut {
    outbound: mpsc::Sender<Relayed>,
    links: LinkSet,
}

struct Inner {
    identity: Identity,
    config: RtcConfig,
    signaling: SignalingClient,
    /// Our offers waiting for an answer, by session.
    pending: RefCell<HashMap<u64, AnswerWait>>,
    /// Offers from others being answered now, in all and by peer.
    answering: Cell<usize>,
    /// The offers answered lately, by peer and session (see [`ANSWERED_MEMORY`]).
    answered: RefCell<VecDeque<(NodeId, u64)>>,
    answering_from: RefCell<HashMap<NodeId, usize>>,
    /// Peer connections made so far (see [`RtcConfig::connection_budget`]).
    made: Cell<u32>,
    /// Where the peer's candidates go while a link is set up, by peer and session (each a bounded queue).
    trickle: RefCell<HashMap<(NodeId, u64), mpsc::Sender<IceCandidate>>>,
    /// The live links' paths, and the serial number of the last link opened.
    paths: PathBook,
    opened: Cell<u64>,
    incoming: mpsc::Sender<PeerLink>,
    /// Signals over the DHT's links, once the transport runs under a driver.
    relay: RefCell<Option<RelayOut>>,
}

impl Inner {
    /// The ways to reach `peer` with signals now, all taken at once: our signaling server alone while we are
    /// registered there and so is it; else through each of its relay addresses whose first relay we hold a
    /// link to, and (when the peer can take signals at all) through the peers we hold links with nearest to
    /// it, which may hold one to it (at most [`MAX_ROUTES`] relay routes). Empty when there is no way now:
    /// not our server while it is away (an offer would wait for its return, up to the client's reconnection
    /// backoff, and hold up everything queued for the peer).
    fn signal_paths(&self, peer: &Contact) -> Vec<SignalPath> {
        let on_our_server = peer.addrs.contains(&crate::address(self.signaling.url()));
        if on_our_server && self.signaling.is_connected() {
            return vec![SignalPath::Server];
        }
        let mut paths: Vec<SignalPath> = Vec::new();
        if let Some(relay) = self.relay.borrow().as_ref() {
            let me = self.identity.node_id();
            let hinted = peer.addrs.iter().filter_map(parse_via);
            let signaled = peer.addrs.iter().any(|a| a.as_str().starts_with(crate::SCHEME));
            let nearest = relay.links.nearest(&peer.id, MAX_ROUTES).into_iter().map(|l| vec![l]);
            let routes = hinted.chain(nearest.filter(|_| signaled));
            for route in routes.filter(|r| !r.contains(&me) && !r.contains(&peer.id) && relay.links.contains(&r[0])) {
                let path = SignalPath::Relayed(route);
                if paths.len() < MAX_ROUTES && !paths.contains(&path) {
                    paths.push(path);
                }
            }
        }
        paths
    }

    /// Sends `signal` to `to` along `path`; false when it cannot leave (a queue full, the relay gone).
    fn send_signal(&self, path: &SignalPath, to: NodeId, signal: &Signal) -> bool {
        match path {
            SignalPath::Server => self.signaling.send(to, signal),
            SignalPath::Relayed(route) => {
                let Some(relay) = &mut *self.relay.borrow_mut() else { return false };
                let payload = serde_json::to_vec(signal).expect("signals serialize");
                // The way back of a setup may have lost its first link meanwhile (closed to make room): then
                // straight over a link to the other end, or through the linked peer nearest to it.
                let route = match route.first() {
                    Some(first) if !relay.links.contains(first) && relay.links.contains(&to) => Vec::new(),
                    Some(first) if !relay.links.contains(first) => relay.links.nearest(&to, 1),
                    _ => route.clone(),
                };
                let from = self.identity.node_id();
                let m = Relayed { from, to, route, hop: 0, payload, undeliverable: None };
                relay.outbound.try_send(m).is_ok()
            }
        }
    }

    /// Takes one peer connection from the budget: for a dial while any is left, for an answer while less
    /// than 90 % is spent. `false` (nothing taken) when that is over.
    fn spend_connection(&self, inbound: bool) -> bool {
        let made = self.made.get();
        let allowed = match self.config.connection_budget {
            None => true,
            Some(budget) if inbound => u64::from(made) * 10 < u64::from(budget) * 9,
            Some(budget) => made < budget,
        };
        if allowed {
            self.made.set(made + 1);
        }
        allowed
    }

    /// Why an offer from `from` is refused now, if it is: too many setups in all or from that peer, or the
    /// connection budget nearly spent. Otherwise counts it as being answered (and spends its connection).
    fn admit_offer(&self, from: NodeId) -> Result<(), &'static str> {
        let mut by_peer = self.answering_from.borrow_mut();
        let from_peer = by_peer.get(&from).copied().unwrap_or(0);
        if self.answering.get() >= self.config.max_pending {
            return Err("too many links being set up");
        }
        if from_peer >= self.config.max_pending_per_peer {
            return Err("too many links being set up from you");
        }
        if !self.spend_connection(true) {
            return Err("connection budget spent: not taking new links");
        }
        self.answering.set(self.answering.get() + 1);
        by_peer.insert(from, from_peer + 1);
        Ok(())
    }

    /// An offer from `from` is answered (or failed).
    fn offer_done(&self, from: NodeId) {
        self.answering.set(self.answering.get() - 1);
        let mut by_peer = self.answering_from.borrow_mut();
        if let Some(n) = by_peer.get_mut(&from) {
            *n -= 1;
            if *n == 0 {
                by_peer.remove(&from);
            }
        }
    }

    /// Completes our offer `session` with the reply of `from`, which came by `path`; a reply from anyone but
    /// the peer the offer went to is ignored.
    fn settle(&self, session: u64, from: NodeId, reply: Result<String, TransportError>, path: SignalPath) {
        let mut pending = self.pending.borrow_mut();
        if pending.get(&session).is_some_and(|w| w.peer == from) {
            if let Some(w) = pending.remove(&session) {
                let _ = w.tx.send(reply.map(|sdp| (sdp, path)));
            }
        }
    }

    /// Whether the offer `session` of `from` is being answered or was lately (a copy by another route), and
    /// if not, remembers it as answered.
    fn seen_offer(&self, from: NodeId, session: u64) -> bool {
        let mut answered = self.answered.borrow_mut();
        if self.trickle.borrow().contains_key(&(from, session)) || answered.contains(&(from, session)) {
            return true;
        }
        if answered.len() >= ANSWERED_MEMORY {
            answered.pop_front();
        }
        answered.push_back((from, session));
        false
    }

    /// Takes `peer`'s candidates for `session` from now until the returned guard is dropped.
    fn expect_candidates(self: &Rc<Self>, peer: NodeId, session: u64) -> (Trickle, mpsc::Receiver<IceCandidate>) {
        let (tx, rx) = mpsc::channel(MAX_CANDIDATES);
        self.trickle.borrow_mut().insert((peer, session), tx);
        (Trickle { inner: Rc::downgrade(self), key: (peer, session) }, rx)
    }

    /// A candidate from `from` for `session`: queued for that setup, or dropped (no such setup, its queue
    /// full, or not a candidate line).
    fn candidate(&self, from: NodeId, session: u64, candidate: IceCandidate) {
        if !candidate.is_plausible() {
            tracing::debug!(peer = %from, "implausible candidate dropped");
            return;
        }
        if let Some(tx) = self.trickle.borrow_mut().get_mut(&(from, session)) {
            let _ = tx.try_send(candidate);
        }
    }

    /// Relay `relay` could not pass our signals on to `to`: the offers to `to` no longer wait on the routes
    /// through it (a notice from anyone else changes nothing). When `relay` is our own node, `first` is
    /// the first hop it holds no link to: the routes that start there.
    fn unreachable_via(&self, to: NodeId, relay: NodeId, first: Option<NodeId>) {
        let ours = relay == self.identity.node_id();
        let through = |path: &SignalPath| match path {
            SignalPath::Relayed(route) if ours => first.is_none_or(|f| route.first().copied().unwrap_or(to) == f),
            SignalPath::Relayed(route) => route.contains(&relay),
            SignalPath::Server => false,
        };
        let reason = format!("relay {} holds no link to the peer", first.filter(|_| ours).unwrap_or(relay));
        self.fail_pending(|p, path| p == to && through(path), &reason);
    }

    /// The offers waiting for an answer no longer wait on the ways `which` picks (by peer and path): those
    /// left without a way fail, with `reason`.
    fn fail_pending(&self, which: impl Fn(NodeId, &SignalPath) -> bool, reason: &str) {
        let mut pending = self.pending.borrow_mut();
        let mut failed = Vec::new();
        for (session, wait) in pending.iter_mut() {
            let (peer, before) = (wait.peer, wait.paths.len());
            wait.paths.retain(|path| !which(peer, path));
            if wait.paths.is_empty() && before > 0 {
                failed.push(*session);
            }
        }
        for s in failed {
            if let Some(wait) = pending.remove(&s) {
                let _ = wait.tx.send(Err(TransportError::Signaling(reason.to_string())));
            }
        }
    }

    /// The connection to the signaling server broke: the offers sent through it will not be answered, so
    /// they fail now (their dials then go through relays, or wait for the server to come back).
    fn server_lost(&self) {
        self.fail_pending(|_, path| *path == SignalPath::Server, "the signaling server went away");
    }

    /// The signaling server could not pass our signals on to `to`: fails the offers sent to `to` through it.
    fn undeliverable(&self, to: NodeId, reason: &str) {
        self.fail_pending(|p, path| p == to && *path == SignalPath::Server, reason);
    }
}

/// A link setup's entry in [`Inner::trickle`], removed when dropped.
struct Trickle {
    inner: Weak<Inner>,
    key: (NodeId, u64),
}

impl Drop for Trickle {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.trickle.borrow_mut().remove(&self.key);
        }
    }
}

/// Sends our candidates to `to` as they are gathered (at most [`MAX_CANDIDATES`]), until gathering ends or
/// the connection closes.
fn trickle_out(
    inner: &Rc<Inner>,
    (to, path): (NodeId, &SignalPath),
    session: u64,
    candidates: mpsc::Receiver<IceCandidate>,
) {
    let inner = Rc::downgrade(inner);
    let path = path.clone();
    rt::spawn(async move {
        let mut candidates = candidates.take(MAX_CANDIDATES);
        while let Some(candidate) = candidates.next().await {
            let Some(inner) = inner.upgrade() else { return };
            if !inner.send_signal(&path, to, &Signal::Candidate { session, candidate }) {
                tracing::debug!(peer = %to, "candidate not sent: signaling queue full");
            }
        }
    });
}

/// WebRTC links to peers registered on one signaling server.
pub struct WebRtcTransport {
    inner: Rc<Inner>,
    incoming: Option<mpsc::Receiver<PeerLink>>,
    /// Hands the event loop the signals relayed to us, once a driver gives us its relay.
    relayed: Option<oneshot::Sender<mpsc::Receiver<Relayed>>>,
}

impl WebRtcTransport {
    /// Registers `identity` with the signaling server of `config` and starts answering offers.
    /// `advertised`: the node's other addresses (e.g. TCP), handed out by the server with its id; the
    /// node's own `rtc:` address is [`WebRtcTransport::local_address`]. Natively, call inside a tokio
    /// `LocalSet`; in the browser, from any `spawn_local`ed future.
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
        // The first server that answers, in order: the node registers there and its `rtc:` address names it
        // (another of them, should that one go away).
        let urls = std::iter::once(config.signaling_url.clone()).chain(config.more_signaling.iter().cloned());
        let urls = urls.take(crate::MAX_SIGNALING_SERVERS).collect();
        let roots: std::sync::Arc<[Vec<u8>]> = config.tls_roots.clone().into();
        let (who, clock) = (signaling_identity, config.clock.clone());
        let (signaling, events) = SignalingClient::connect::<Socket>(urls, roots, who, advertised, clock)
            .await
            .map_err(TransportError::Signaling)?;
        let (incoming_tx, incoming_rx) = mpsc::channel(config.queue);
        let inner = Rc::new(Inner {
            identity,
            config,
            signaling,
            pending: RefCell::new(HashMap::new()),
            answered: RefCell::new(VecDeque::new()),
            answering: Cell::new(0),
            answering_from: RefCell::new(HashMap::new()),
            made: Cell::new(0),
            trickle: RefCell::new(HashMap::new()),
            paths: PathBook::default(),
            opened: Cell::new(0),
            incoming: incoming_tx,
            relay: RefCell::new(None),
        });
        let (relayed_tx, relayed_rx) = oneshot::channel();
        rt::spawn(event_loop(Rc::downgrade(&inner), events, relayed_rx));
        Ok(WebRtcTransport { inner, incoming: Some(incoming_rx), relayed: Some(relayed_tx) })
    }

    /// Our WebRTC address (`rtc:` + the URL of the signaling server we are registered on).
    pub fn local_address(&self) -> Address {
        crate::address(self.inner.signaling.url())
    }

    /// All addresses this transport advertises (the `rtc:` one first; it changes when the node registers on
    /// another server).
    pub fn local_addrs(&self) -> Vec<Address> {
        self.inner.signaling.addrs()
    }

    /// Peer connections made so far, dialed and answered (see [`RtcConfig::connection_budget`]).
    pub fn connections_made(&self) -> u32 {
        self.inner.made.get()
    }

    /// The paths (candidate types, setup time) of this transport's live links, readable after the
    /// transport is handed to the driver.
    pub fn paths(&self) -> PathBook {
        self.inner.paths.clone()
    }

    /// The signaling connection (e.g. to ask for peers to bootstrap from).
    pub fn signaling(&self) -> &SignalingClient {
        &self.inner.signaling
    }
}

/// Signals from the signaling server, and (once the transport runs under a driver) those relayed to us over
/// the DHT's links, answered back along their route.
async fn event_loop(
    inner: Weak<Inner>,
    events: mpsc::Receiver<SigEvent>,
    relayed: oneshot::Receiver<mpsc::Receiver<Relayed>>,
) {
    enum From {
        Server(SigEvent),
        Relay(Relayed),
    }
    let relayed = relayed.map(Result::ok).into_stream().filter_map(futures::future::ready).flatten();
    let mut all = futures::stream::select(events.map(From::Server), relayed.map(From::Relay));
    while let Some(ev) = all.next().await {
        let Some(inner) = inner.upgrade() else { return };
        match ev {
            From::Server(SigEvent::Signal { from, data }) => match serde_json::from_str::<Signal>(&data) {
                Ok(signal) => on_signal(&inner, from, signal, SignalPath::Server),
                Err(e) => tracing::debug!(peer = %from, "bad signal: {e}"),
            },
            From::Server(SigEvent::Undeliverable { to, reason }) => inner.undeliverable(to, &reason),
            From::Server(SigEvent::Lost) => inner.server_lost(),
            From::Relay(Relayed { from, undeliverable: Some(to), route, .. }) => {
                inner.unreachable_via(to, from, route.first().copied())
            }
            From::Relay(m) => match serde_json::from_slice::<Signal>(&m.payload) {
                Ok(signal) => {
                    let back = m.route.into_iter().rev().collect();
                    on_signal(&inner, m.from, signal, SignalPath::Relayed(back));
                }
                Err(e) => tracing::debug!(peer = %m.from, "bad relayed signal: {e}"),
            },
        }
    }
}

/// A signal from `from`, which came by `path` (the way back).
fn on_signal(inner: &Rc<Inner>, from: NodeId, signal: Signal, path: SignalPath) {
    match signal {
        Signal::Offer { session, sdp } => {
            if inner.seen_offer(from, session) {
                // The same offer by another route: answered once.
                return;
            }
            if let Err(reason) = inner.admit_offer(from) {
                tracing::debug!(peer = %from, "offer refused: {reason}");
                let _ = inner.send_signal(&path, from, &Signal::Reject { session, reason: reason.into() });
                return;
            }
            // The offer's candidates come right behind it.
            let remote = inner.expect_candidates(from, session);
            let i = inner.clone();
            rt::spawn(async move {
                if let Err(e) = answer(&i, (from, path), session, sdp, remote).await {
                    tracing::info!(peer = %from, "inbound WebRTC link failed: {e}");
                }
                i.offer_done(from);
            });
        }
        Signal::Answer { session, sdp } => inner.settle(session, from, Ok(sdp), path),
        Signal::Candidate { session, candidate } => inner.candidate(from, session, candidate),
        Signal::Reject { session, reason } => inner.settle(session, from, Err(TransportError::Refused(reason)), path),
    }
}

/// Opens the link over the connection's data channel within `limit`, then carries it on a task of its own
/// (its path in the book while it lives). The connection closes when the link ends, or here if it never
/// opened.
async fn finish(
    inner: &Inner,
    setup: Setup<Peer>,
    link: Link,
    (started, dialed, relays): (dht_core::Instant, bool, u8),
    mut remote: mpsc::Receiver<IceCandidate>,
) -> Result<PeerLink, TransportError> {
    let signaled = inner.config.clock.now();
    let config = &inner.config;
    let (limit, paths) = (config.connect_timeout, inner.paths.clone());
    let Setup { pc, pipe, mut failed, .. } = setup;
    let clock = &config.clock;
    // The peer's candidates are added as they come while the link opens.
    let add_candidates = async {
        while let Some(candidate) = remote.next().await {
            if let Err(e) = pc.add_candidate(&candidate).await {
                tracing::debug!("a peer's candidate refused: {e}");
            }
        }
        futures::future::pending().await
    };
    let opening = futures::future::select(Box::pin(open(pipe, link, &mut failed, clock)), Box::pin(add_candidates));
    let opening = timeout(clock, limit, opening.map(|either| either.factor_first().0)).await;
    let opened = match opening.unwrap_or(Err(TransportError::Timeout("link setup"))) {
        Ok(opened) => opened,
        Err(e) => {
            pc.close().await;
            return Err(e);
        }
    };
    let (peer, carry) = opened.start(config.link_io(), clock.clone());
    let id = peer.remote.id;
    let ms = |at: dht_core::Instant| at.saturating_since(started).as_millis() as u64;
    let (setup_ms, signaled_ms) = (ms(clock.now()), ms(signaled));
    let (local, remote, protocol) =
        pc.selected_pair().await.unwrap_or((Candidate::Unknown, Candidate::Unknown, String::new()));
    let path = LinkPath { local, remote, protocol, setup_ms, signaled_ms, dialed, relays };
    tracing::debug!(peer = %id, path = path.kind(), setup_ms, dialed, relays, "WebRTC link open");
    let serial = inner.opened.get() + 1;
    inner.opened.set(serial);
    paths.open(id, serial, path);
    let clock = clock.clone();
    rt::spawn(async move {
        // ICE may move the link to a better pair once more checks succeed (a relayed pair first, a direct
        // one a moment later): the book follows, soon after the link opens and then now and then.
        let follow = async {
            for wait in [1, 3, 10].into_iter().chain(std::iter::repeat(30)) {
                clock.sleep(Duration::from_secs(wait)).await;
                if let Some(pair) = pc.selected_pair().await {
                    paths.update(id, serial, pair);
                }
            }
        };
        if let futures::future::Either::Left((Err(e), _)) =
            futures::future::select(Box::pin(carry), Box::pin(follow)).await
        {
            tracing::debug!(peer = %id, "WebRTC link closed: {e}");
        }
        paths.close(id, serial);
        pc.close().await;
    });
    Ok(peer)
}

/// The handshake over the data channel, once there is one. A connection that fails first ends it (with the
/// link's own reason when it has one a moment later).
async fn open(
    pipe: oneshot::Receiver<ChannelPipe>,
    link: Link,
    failed: &mut mpsc::Receiver<()>,
    clock: &SharedClock,
) -> Result<Opened<ChannelPipe>, TransportError> {
    let connection_failed = || TransportError::Connect("connection failed".into());
    let pipe = futures::select! {
        p = pipe.fuse() => p.map_err(|_| TransportError::Connect("no data channel".into()))?,
        _ = failed.next() => return Err(connection_failed()),
    };
    let mut handshake = std::pin::pin!(dht_link_io::handshake(pipe, link, clock).fuse());
    futures::select! {
        r = handshake => r,
        _ = failed.next() => match timeout(clock, Duration::from_millis(100), handshake).await {
            Ok(Err(e)) => Err(e),
            _ => Err(connection_failed()),
        },
    }
}

/// Sends our offer to `to` along all of `paths` at once and waits (bounded) for the answer's SDP; returns it
/// and the way the offer went that brought it (the first one when the answer came another way: the peer's
/// way back had lost a link). Our candidates follow the offer at once when there is one path only; with
/// several, they follow the answer along the way it came (one round trip later).
async fn ask(
    inner: &Rc<Inner>,
    (to, paths): (NodeId, &[SignalPath]),
    session: u64,
    offer_sdp: &str,
    candidates: mpsc::Receiver<IceCandidate>,
) -> Result<(String, SignalPath), TransportError> {
    let offer = Signal::Offer { session, sdp: offer_sdp.to_string() };
    let mut sent: Vec<SignalPath> = paths.iter().filter(|path| inner.send_signal(path, to, &offer)).cloned().collect();
    if sent.is_empty() {
        return Err(if paths.is_empty() {
            TransportError::NoAddress(to)
        } else {
            TransportError::Signaling("queue full".into())
        });
    }
    let (tx, rx) = oneshot::channel();
    let mut candidates = Some(candidates);
    if let [path] = sent.as_slice() {
        trickle_out(inner, (to, path), session, candidates.take().expect("taken once"));
    }
    inner.pending.borrow_mut().insert(session, AnswerWait { peer: to, paths: sent.clone(), tx });
    let reply = timeout(&inner.config.clock, inner.config.connect_timeout, rx).await;
    inner.pending.borrow_mut().remove(&session);
    match reply {
        Ok(Ok(Ok((answer, path)))) => {
            if let Some(candidates) = candidates.take() {
                trickle_out(inner, (to, &path), session, candidates);
            }
            let went = if sent.contains(&path) { path } else { sent.swap_remove(0) };
            Ok((answer, went))
        }
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err(TransportError::Signaling("gone".into())),
        Err(_) => Err(TransportError::Timeout("answer")),
    }
}

async fn dial(inner: Rc<Inner>, peer: Contact, paths: Vec<SignalPath>) -> Result<PeerLink, TransportError> {
    let config = &inner.config;
    let started = config.clock.now();
    let session = rt::random_u64().map_err(TransportError::Connect)?;
    if !inner.spend_connection(false) {
        return Err(TransportError::Refused("this node's connection budget is spent".into()));
    }
    let (_trickle, remote) = inner.expect_candidates(peer.id, session);
    let mut setup = Peer::offer(config).await.map_err(TransportError::Connect)?;
    let offer_sdp = setup.sdp.clone();
    let local = setup.take_candidates();
    let link = async {
        let (answer, path) = ask(&inner, (peer.id, &paths), session, &offer_sdp, local).await?;
        setup.pc.accept(&answer).await.map_err(TransportError::Connect)?;
        let prologue = prologue(&offer_sdp, &answer);
        let local = inner.signaling.addrs();
        let link = Link::initiator(&inner.identity, Some(peer.id), &prologue, local, &config.link, config.clock.now())
            .map_err(handshake_error)?;
        Ok((link, path))
    }
    .await;
    match link {
        Ok((link, path)) => finish(&inner, setup, link, (started, true, path.relays()), remote).await,
        Err(e) => {
            setup.pc.close().await;
            Err(e)
        }
    }
}

async fn answer(
    inner: &Rc<Inner>,
    (from, path): (NodeId, SignalPath),
    session: u64,
    offer_sdp: String,
    (_trickle, remote): (Trickle, mpsc::Receiver<IceCandidate>),
) -> Result<(), TransportError> {
    let config = &inner.config;
    let started = config.clock.now();
    let mut setup = match Peer::answer(config, &offer_sdp).await {
        Ok(setup) => setup,
        Err(e) => {
            // The dialer would wait for an answer that never comes: it hears why at once.
            let reason: String = format!("cannot answer: {e}").chars().take(MAX_REJECT_REASON).collect();
            let _ = inner.send_signal(&path, from, &Signal::Reject { session, reason });
            return Err(TransportError::Connect(e));
        }
    };
    let answer_sdp = setup.sdp.clone();
    let local = setup.take_candidates();
    let prologue = prologue(&offer_sdp, &answer_sdp);
    let link = Link::responder(&inner.identity, &prologue, inner.signaling.addrs(), &config.link, config.clock.now())
        .map_err(handshake_error)
        .and_then(|l| {
            let sent = inner.send_signal(&path, from, &Signal::Answer { session, sdp: answer_sdp });
            sent.then_some(l).ok_or_else(|| TransportError::Signaling("queue full".into()))
        });
    let link = match link {
        Ok(l) => {
            trickle_out(inner, (from, &path), session, local);
            finish(inner, setup, l, (started, false, path.relays()), remote).await?
        }
        Err(e) => {
            setup.pc.close().await;
            return Err(e);
        }
    };
    if link.remote.id != from {
        // The server said the offer came from `from`; the handshake proved someone else. Dropping the
        // link ends it (and closes the connection).
        return Err(TransportError::WrongPeer { expected: from, actual: link.remote.id });
    }
    inner.incoming.clone().send(link).await.map_err(|_| TransportError::Closed)
}

impl Transport for WebRtcTransport {
    fn dial(&self, peer: &Contact) -> LocalBoxFuture<'static, Result<PeerLink, TransportError>> {
        let paths = self.inner.signal_paths(peer);
        if paths.is_empty() {
            let id = peer.id;
            return async move { Err(TransportError::NoAddress(id)) }.boxed_local();
        }
        dial(self.inner.clone(), peer.clone(), paths).boxed_local()
    }

    /// Signals then also travel over the node's links: to peers registered on other signaling servers,
    /// and to everyone while ours is away.
    fn attach_relay(&mut self, relay: RelayPort) -> Option<RelayPort> {
        let Some(to_event_loop) = self.relayed.take() else { return Some(relay) };
        let RelayPort { outbound, inbound, links } = relay;
        *self.inner.relay.borrow_mut() = Some(RelayOut { outbound, links });
        let _ = to_event_loop.send(inbound);
        None
    }

    fn incoming(&mut self) -> LocalBoxStream<'static, PeerLink> {
        match self.incoming.take() {
            Some(rx) => rx.boxed_local(),
            None => futures::stream::empty().boxed_local(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Candidate::*, LinkPath};

    #[test]
    fn a_path_is_named_by_its_farthest_hop() {
        let kind = |local, remote| {
            LinkPath { local, remote, protocol: "udp".into(), setup_ms: 9, signaled_ms: 3, dialed: true, relays: 0 }
                .kind()
        };
        assert_eq!(kind(Host, Host), "host");
        assert_eq!(kind(Srflx, Host), "srflx");
        assert_eq!(kind(Host, Prflx), "prflx");
        assert_eq!(kind(Srflx, Relay), "relay");
        assert_eq!(kind(Relay, Relay), "relay");
        assert_eq!(kind(Host, Unknown), "unknown");
        for name in ["host", "srflx", "prflx", "relay"] {
            assert_eq!(super::Candidate::from_name(name).name(), name);
        }
        assert_eq!(super::Candidate::from_name("mdns").name(), "unknown");
    }
}
