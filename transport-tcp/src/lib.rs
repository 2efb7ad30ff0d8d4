//! # transport-tcp
//!
//! A [`Transport`] over TCP. Every connection runs the `dht-link` Noise handshake before any message
//! flows, so the driver only ever sees authenticated peers. Connection tasks are spawned with
//! `tokio::task::spawn_local`: run the node inside a `tokio::task::LocalSet`.
//!
//! Limits: inbound connections at once, in all and per address and subnet, with an accept rate per
//! address and subnet (the `admission` crate's rules; connections from the node's own address are held to
//! the total alone); a deadline for a new connection's first bytes and
//! one for its handshake (which also ends slow-loris peers); bytes
//! buffered per connection (through the link's send queue and a bounded channel to the driver), a per-peer
//! message budget, and linger. The loop that enforces them is `dht-link-io`'s, shared with WebRTC: this
//! crate supplies the socket as its [`dht_link_io::Pipe`], and time comes from [`TcpConfig::clock`].
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub use admission::Limits;
use admission::{Admission, DialScopes};
use dht_core::{Address, Contact, Instant};
use dht_driver::{timeout, Clock, PeerLink, SharedClock, SystemClock, Transport, TransportError};
use dht_link::{Identity, Link, LinkConfig};
use dht_link_io::{handshake, handshake_error, Pipe};
use futures::channel::mpsc;
use futures::future::LocalBoxFuture;
use futures::stream::LocalBoxStream;
use futures::{FutureExt, StreamExt};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// The prefix of TCP addresses: `tcp:127.0.0.1:4000`.
pub const SCHEME: &str = "tcp:";

/// Admissions an address is charged for a connection that sent nothing in time or failed its handshake.
pub const FAULT_COST: f64 = 4.0;

/// The Noise prologue of TCP links.
const PROLOGUE: &[u8] = b"webdht/tcp/1";

/// The TCP address form of a socket address.
pub fn address(addr: SocketAddr) -> Address {
    Address::new(format!("{SCHEME}{addr}"))
}

/// The socket address of a `tcp:` address.
fn socket_addr(a: &Address) -> Option<SocketAddr> {
    a.as_str().strip_prefix(SCHEME)?.parse().ok()
}

/// Settings and limits of the transport.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Link settings (handshake timeout, message size, send buffer).
    pub link: LinkConfig,
    /// Inbound connections open at once, in all and per address and subnet, and accepted a second per
    /// address and subnet; beyond, they are closed at accept. An address whose connection sent nothing in
    /// time or failed its handshake is charged [`FAULT_COST`] admissions more.
    pub admission: Limits,
    /// Dial the loopback, private and link-local addresses peers hand out even where none of our own
    /// addresses is (a swarm on a LAN behind a public node, tests); by default only the scopes of our
    /// listening address are dialed besides public addresses ([`DialScopes`]).
    pub dial_private: bool,
    /// An accepted connection must send its first bytes within this time (an honest initiator sends its
    /// handshake message at once); the whole handshake has `link.handshake_timeout`.
    pub first_bytes_timeout: Duration,
    /// Messages buffered between a connection and the driver, each way.
    pub channel_capacity: usize,
    /// How long a connection the driver let go of (its link replaced by one the peer dialed at the same
    /// moment, or closed to make room) goes on reading before it closes: answers to requests sent on it are
    /// still on their way, and closing at once would lose them. The core's `request_timeout` (1 s by
    /// default) is as long as it waits for them.
    pub linger: Duration,
    /// Messages a peer may send a second on one connection, after a burst of `peer_burst` (0 = no limit).
    /// Past it the connection stops reading until the budget refills (the messages of the read that went
    /// over are delivered first), so TCP's flow control slows that peer down and one peer cannot take all
    /// of the node's time.
    pub peer_rate: u32,
    /// Messages a peer may send at once before `peer_rate` applies.
    pub peer_burst: u32,
    /// Where deadlines, linger and the budget's refill take their time (give the node's driver the same).
    /// By default [`TokioClock`]: on a `LocalSet`, a sleep of [`dht_driver::SystemClock`] wakes its link
    /// from `futures-timer`'s thread, and such wakes wait behind the set's local work (hundreds of
    /// milliseconds under load), long enough for a lingering link to close on unread answers.
    pub clock: SharedClock,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            link: LinkConfig::default(),
            admission: Limits::node_inbound(),
            first_bytes_timeout: Duration::from_secs(2),
            dial_private: false,
            channel_capacity: 64,
            linger: Duration::from_secs(1),
            peer_rate: 1000,
            peer_burst: 2000,
            clock: SharedClock::new(TokioClock),
        }
    }
}

impl TcpConfig {
    /// What the link loop needs of these settings.
    fn link_io(&self) -> dht_link_io::Config {
        dht_link_io::Config {
            queue: self.channel_capacity.max(1),
            linger: self.linger,
            peer_rate: self.peer_rate,
            peer_burst: self.peer_burst,
        }
    }
}

/// The system clock's time with tokio's timers for sleeps, so that they wake their task on the runtime's
/// thread. A `LocalSet` runs wakes from another thread (`futures-timer`'s, [`dht_driver::SystemClock`]'s
/// sleeps) from a remote queue it serves once in 31 tasks while local work is pending: under load a link's
/// linger deadline then runs late while the link reads nothing, and it closes on the answers that came in
/// meanwhile. Needs a tokio runtime with time enabled (as the transport's sockets need one with I/O).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        SystemClock.now()
    }

    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(deadline.saturating_since(self.now())))
    }
}

/// Listens on a TCP port and dials peers' `tcp:` addresses.
pub struct TcpTransport {
    identity: Identity,
    local: Contact,
    /// What the accept loop advertises: `local`'s addresses, shared.
    advertised: Rc<RefCell<Vec<Address>>>,
    config: TcpConfig,
    incoming: Option<mpsc::UnboundedReceiver<PeerLink>>,
    local_addr: SocketAddr,
    dial_scopes: DialScopes,
}

impl TcpTransport {
    /// Binds `listen` and starts accepting (on the current `LocalSet`). The advertised contact is our id with
    /// the bound address (after port 0 is resolved) followed by `extra_addrs`.
    pub async fn bind(
        listen: SocketAddr,
        identity: Identity,
        extra_addrs: Vec<Address>,
        config: TcpConfig,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let mut addrs = vec![address(local_addr)];
        addrs.extend(extra_addrs);
        let local = Contact { id: identity.node_id(), addrs };
        let (tx, rx) = mpsc::unbounded();
        let advertised = Rc::new(RefCell::new(local.addrs.clone()));
        let accept = accept_loop(listener, identity.clone(), advertised.clone(), config.clone(), tx);
        tokio::task::spawn_local(accept);
        let dial_scopes = match config.dial_private {
            true => DialScopes::everything(),
            false => DialScopes::own(local.addrs.iter().filter_map(socket_addr).map(|a| a.ip())),
        };
        Ok(TcpTransport { identity, local, advertised, config, incoming: Some(rx), local_addr, dial_scopes })
    }

    /// Advertises `extra_addrs` after the bound address from now on, in place of those given to
    /// [`TcpTransport::bind`]: e.g. the node's WebRTC address, known once it registered with a signaling
    /// server, so that peers met over TCP can hand it to nodes that have no TCP.
    pub fn advertise(&mut self, extra_addrs: &[Address]) {
        let own = address(self.local_addr);
        self.local.addrs =
            std::iter::once(own.clone()).chain(extra_addrs.iter().filter(|a| **a != own).cloned()).collect();
        *self.advertised.borrow_mut() = self.local.addrs.clone();
    }

    /// Our contact as advertised to peers.
    pub fn local_contact(&self) -> &Contact {
        &self.local
    }

    /// What [`Prober::probe`] needs, to keep once the transport is handed to the driver.
    pub fn prober(&self) -> Prober {
        Prober { identity: self.identity.clone(), addrs: self.local.addrs.clone(), config: self.config.clone() }
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Learns who listens at a bare address (see [`TcpTransport::prober`]).
#[derive(Clone)]
pub struct Prober {
    identity: Identity,
    addrs: Vec<Address>,
    config: TcpConfig,
}

impl Prober {
    /// Connects to `addr` without knowing who listens there, runs the handshake and returns the contact the
    /// peer proved (its id and advertised addresses); the connection is then closed. How a node turns a
    /// bootstrap address into a contact it can dial by id.
    pub async fn probe(&self, addr: SocketAddr) -> Result<Contact, TransportError> {
        let stream = connect(addr, &self.config).await?;
        let clock = &self.config.clock;
        let link = Link::initiator(&self.identity, None, PROLOGUE, self.addrs.clone(), &self.config.link, clock.now())
            .map_err(handshake_error)?;
        let mut contact = handshake(TcpPipe::new(stream), link, clock).await?.remote().clone();
        if contact.addrs.is_empty() {
            contact.addrs.push(address(addr));
        }
        Ok(contact)
    }
}

/// A TCP connection to `addr`, within the handshake's time limit.
async fn connect(addr: SocketAddr, config: &TcpConfig) -> Result<TcpStream, TransportError> {
    let connecting = timeout(&config.clock, config.link.handshake_timeout, TcpStream::connect(addr));
    Ok(connecting.await.map_err(|_| TransportError::Timeout("connect"))??)
}

async fn accept_loop(
    listener: TcpListener,
    identity: Identity,
    addrs: Rc<RefCell<Vec<Address>>>,
    config: TcpConfig,
    links: mpsc::UnboundedSender<PeerLink>,
) {
    let mut rules = Admission::new(config.admission.clone());
    // Connections from our own address come from this machine: other nodes run there, not one peer.
    if let Some(own) = addrs.borrow().iter().filter_map(socket_addr).map(|a| a.ip()).find(|ip| !ip.is_unspecified()) {
        rules.exempt(own);
    }
    let admission = Rc::new(RefCell::new(rules));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                config.clock.sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(refused) = admission.borrow_mut().admit(peer.ip(), config.clock.now()) {
            tracing::debug!(%peer, "closing inbound connection: {refused}");
            drop(stream);
            continue;
        }
        let slot = Slot { admission: Rc::clone(&admission), peer };
        let advertised = addrs.borrow().clone();
        let link = match Link::responder(&identity, PROLOGUE, advertised, &config.link, config.clock.now()) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot start a handshake: {e}");
                continue;
            }
        };
        let (config, links) = (config.clone(), links.clone());
        tokio::task::spawn_local(async move {
            if let Err(e) = inbound(stream, link, &config, &links, &slot).await {
                tracing::info!(%peer, "inbound connection closed: {e}");
            }
        });
    }
}

/// An admitted inbound connection's place in the admission count, given back when it is dropped.
struct Slot {
    admission: Rc<RefCell<Admission>>,
    peer: SocketAddr,
}

impl Slot {
    /// The connection broke a rule: its address waits longer before its next one is admitted.
    fn fault(&self, clock: &SharedClock) {
        self.admission.borrow_mut().charge(self.peer.ip(), FAULT_COST, clock.now());
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.borrow_mut().release(self.peer.ip());
    }
}

/// An accepted connection: first bytes and handshake within their deadlines, hand the link to the driver,
/// carry its messages until it ends.
async fn inbound(
    stream: TcpStream,
    link: Link,
    config: &TcpConfig,
    links: &mpsc::UnboundedSender<PeerLink>,
    slot: &Slot,
) -> Result<(), TransportError> {
    // `peek` waits for a byte (readiness alone can be reported before any arrives); 0 is the end.
    let first = timeout(&config.clock, config.first_bytes_timeout, stream.peek(&mut [0u8])).await;
    if !matches!(first, Ok(Ok(1))) {
        slot.fault(&config.clock);
        return Err(TransportError::Timeout("first bytes"));
    }
    let opened =
        handshake(TcpPipe::new(stream), link, &config.clock).await.inspect_err(|_| slot.fault(&config.clock))?;
    let (peer, carry) = opened.start(config.link_io(), config.clock.clone());
    links.unbounded_send(peer).map_err(|_| TransportError::Closed)?;
    carry.await
}

/// A TCP connection as the link loop's [`Pipe`].
struct TcpPipe(TcpStream);

impl TcpPipe {
    fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        TcpPipe(stream)
    }
}

/// What one attempt to read found.
enum Attempt<R, F> {
    Read(R),
    End,
    /// The readiness was spurious: `take` is handed back for the next attempt.
    Again(F),
}

/// Hands what the socket has to `take`. The buffer is on the stack of this synchronous call, so an idle
/// connection holds no read buffer.
fn try_read<R, F: FnOnce(&[u8]) -> R>(stream: &TcpStream, take: F) -> std::io::Result<Attempt<R, F>> {
    let mut buf = [0u8; 16 * 1024];
    match stream.try_read(&mut buf) {
        Ok(0) => Ok(Attempt::End),
        Ok(n) => Ok(Attempt::Read(take(&buf[..n]))),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Attempt::Again(take)),
        Err(e) => Err(e),
    }
}

impl Pipe for TcpPipe {
    /// Messages the driver has ready are written together up to this size (fewer, fuller segments).
    fn chunk(&self) -> usize {
        16 * 1024
    }

    async fn read<R>(&mut self, take: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, TransportError> {
        let mut take = take;
        loop {
            self.0.readable().await?;
            match try_read(&self.0, take)? {
                Attempt::Read(r) => return Ok(Some(r)),
                Attempt::End => return Ok(None),
                Attempt::Again(t) => take = t,
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<usize, TransportError> {
        Ok(self.0.write(bytes).await?)
    }
}

impl Transport for TcpTransport {
    fn dial(&self, peer: &Contact) -> LocalBoxFuture<'static, Result<PeerLink, TransportError>> {
        let mut candidates = peer.addrs.iter().filter_map(socket_addr).peekable();
        let first = candidates.peek().copied();
        let target = candidates.find(|a| self.dial_scopes.allows(a.ip()));
        let (identity, addrs, config, expected) =
            (self.identity.clone(), self.local.addrs.clone(), self.config.clone(), peer.id);
        async move {
            let target = match (target, first) {
                (Some(t), _) => t,
                (None, Some(refused)) => return Err(TransportError::Forbidden(refused.to_string())),
                (None, None) => return Err(TransportError::NoAddress(expected)),
            };
            let stream = connect(target, &config).await?;
            let link = Link::initiator(&identity, Some(expected), PROLOGUE, addrs, &config.link, config.clock.now())
                .map_err(handshake_error)?;
            let opened = handshake(TcpPipe::new(stream), link, &config.clock)
                .await
                .inspect_err(|e| tracing::info!(%target, "outbound connection closed: {e}"))?;
            let (peer, carry) = opened.start(config.link_io(), config.clock.clone());
            tokio::task::spawn_local(async move {
                if let Err(e) = carry.await {
                    tracing::info!(%target, "outbound connection closed: {e}");
                }
            });
            Ok(peer)
        }
        .boxed_local()
    }

    fn incoming(&mut self) -> LocalBoxStream<'static, PeerLink> {
        match self.incoming.take() {
            Some(rx) => rx.boxed_local(),
            None => futures::stream::empty().boxed_local(),
        }
    }
}
