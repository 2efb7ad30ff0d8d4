//! # transport-tcp
//!
//! A [`Transport`] over TCP. Every connection runs the `dht-link` Noise handshake before any message
//! flows, so the driver only ever sees authenticated peers. Connection tasks are spawned with
//! `tokio::task::spawn_local`: run the node inside a `tokio::task::LocalSet`.
//!
//! Limits: inbound connections at once, handshake deadline (which also ends slow-loris peers), bytes
//! buffered per connection (through the link's send queue and a bounded channel to the driver).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use dht_core::{Address, Contact, Instant, Message};
use dht_driver::{MessageBudget, PeerLink, Transport, TransportError};
use dht_link::{Identity, Link, LinkConfig, LinkError};
use futures::channel::{mpsc, oneshot};
use futures::future::LocalBoxFuture;
use futures::stream::LocalBoxStream;
use futures::{FutureExt, SinkExt, StreamExt};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// The prefix of TCP addresses: `tcp:127.0.0.1:4000`.
pub const SCHEME: &str = "tcp:";

/// The TCP address form of a socket address.
pub fn address(addr: SocketAddr) -> Address {
    Address::new(format!("{SCHEME}{addr}"))
}

/// Limits of the transport.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Link settings (handshake timeout, message size, send buffer).
    pub link: LinkConfig,
    /// Inbound connections open at once; more are closed at accept.
    pub max_inbound: usize,
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
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            link: LinkConfig::default(),
            max_inbound: 256,
            channel_capacity: 64,
            linger: Duration::from_secs(1),
            peer_rate: 1000,
            peer_burst: 2000,
        }
    }
}

/// Listens on a TCP port and dials peers' `tcp:` addresses.
pub struct TcpTransport {
    identity: Identity,
    local: Contact,
    config: TcpConfig,
    incoming: Option<mpsc::UnboundedReceiver<PeerLink>>,
    local_addr: SocketAddr,
}

fn now_ms() -> Instant {
    dht_driver::Clock::now(&dht_driver::SystemClock)
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
        let accept = accept_loop(listener, identity.clone(), local.addrs.clone(), config.clone(), tx);
        tokio::task::spawn_local(accept);
        Ok(TcpTransport { identity, local, config, incoming: Some(rx), local_addr })
    }

    /// Our contact as advertised to peers.
    pub fn local_contact(&self) -> &Contact {
        &self.local
    }

    /// Connects to `addr` without knowing who listens there, runs the handshake and returns the contact the
    /// peer proved (its id and advertised addresses); the connection is then closed. How a node turns a
    /// bootstrap address into a contact it can dial by id.
    pub async fn probe(&self, addr: SocketAddr) -> Result<Contact, TransportError> {
        let stream = tokio::time::timeout(self.config.link.handshake_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| TransportError::Connect(format!("{addr}: connect timed out")))?
            .map_err(|e| TransportError::Connect(format!("{addr}: {e}")))?;
        let link = Link::initiator(
            &self.identity,
            None,
            b"webdht/tcp/1",
            self.local.addrs.clone(),
            &self.config.link,
            now_ms(),
        )
        .map_err(|e| TransportError::Connect(e.to_string()))?;
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::task::spawn_local(async move {
            let probe = ConnParams { capacity: 1, linger: Duration::ZERO, peer_rate: 0, peer_burst: 1 };
            let _ = run_connection(stream, link, probe, ready_tx).await;
        });
        let peer = ready_rx.await.map_err(|_| TransportError::Connect(format!("{addr}: handshake failed")))?;
        let mut contact = peer.remote;
        if contact.addrs.is_empty() {
            contact.addrs.push(address(addr));
        }
        Ok(contact)
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

async fn accept_loop(
    listener: TcpListener,
    identity: Identity,
    addrs: Vec<Address>,
    config: TcpConfig,
    links: mpsc::UnboundedSender<PeerLink>,
) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.get() >= config.max_inbound {
            tracing::warn!(%peer, "closing inbound connection: {} already open", open.get());
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let link = match Link::responder(&identity, b"webdht/tcp/1", addrs.clone(), &config.link, now_ms()) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot start a handshake: {e}");
                open.set(open.get() - 1);
                continue;
            }
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let open2 = Rc::clone(&open);
        let params = ConnParams::of(&config);
        tokio::task::spawn_local(async move {
            if let Err(e) = run_connection(stream, link, params, ready_tx).await {
                tracing::info!(%peer, "inbound connection closed: {e}");
            }
            open2.set(open2.get() - 1);
        });
        let links = links.clone();
        tokio::task::spawn_local(async move {
            if let Ok(link) = ready_rx.await {
                let _ = links.unbounded_send(link);
            }
        });
    }
}

/// What a connection's task needs of the transport's settings.
#[derive(Debug, Clone, Copy)]
struct ConnParams {
    capacity: usize,
    linger: Duration,
    peer_rate: u32,
    peer_burst: u32,
}

impl ConnParams {
    fn of(c: &TcpConfig) -> Self {
        ConnParams {
            capacity: c.channel_capacity.max(1),
            linger: c.linger,
            peer_rate: c.peer_rate,
            peer_burst: c.peer_burst,
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum ConnError {
    Io(std::io::Error),
    Link(LinkError),
    Closed,
}

impl core::fmt::Display for ConnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "i/o: {e}"),
            ConnError::Link(e) => write!(f, "{e}"),
            ConnError::Closed => write!(f, "closed"),
        }
    }
}

async fn write_pending(stream: &mut TcpStream, link: &mut Link) -> Result<(), ConnError> {
    while !link.pending().is_empty() {
        let n = stream.write(link.pending()).await.map_err(ConnError::Io)?;
        if n == 0 {
            return Err(ConnError::Closed);
        }
        link.advance(n);
    }
    Ok(())
}

/// Feeds what the socket has to the link: `None` at the end of the stream, else the messages completed
/// (none when the readiness was spurious). The buffer is on the stack of this synchronous call, so an idle
/// connection holds no read buffer.
fn read_into(stream: &TcpStream, link: &mut Link) -> Result<Option<Vec<Message>>, ConnError> {
    let mut buf = [0u8; 16 * 1024];
    match stream.try_read(&mut buf) {
        Ok(0) => Ok(None),
        Ok(n) => link.feed(&buf[..n], now_ms()).map(Some).map_err(ConnError::Link),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Some(Vec::new())),
        Err(e) => Err(ConnError::Io(e)),
    }
}

/// Delivers what still arrives on a connection the driver let go of, for `linger`, then returns (closing it).
async fn drain_then_close(
    stream: &TcpStream,
    link: &mut Link,
    to_driver: &mut mpsc::Sender<Message>,
    linger: Duration,
) -> Result<(), ConnError> {
    let deadline = tokio::time::sleep(linger);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok(()),
            ready = stream.readable() => {
                ready.map_err(ConnError::Io)?;
                let Some(msgs) = read_into(stream, link)? else { return Ok(()) };
                for msg in msgs {
                    to_driver.send(msg).await.map_err(|_| ConnError::Closed)?;
                }
            }
        }
    }
}

/// Handshake, then shuttle messages both ways until either side closes or fails.
async fn run_connection(
    mut stream: TcpStream,
    mut link: Link,
    params: ConnParams,
    ready: oneshot::Sender<PeerLink>,
) -> Result<(), ConnError> {
    let ConnParams { capacity, linger, peer_rate, peer_burst } = params;
    let _ = stream.set_nodelay(true);
    // Handshake, bounded by the link's deadline.
    let deadline = link.poll_timeout().map(|t| t.saturating_since(now_ms())).unwrap_or_default();
    // Messages that arrived in the same read as the last handshake message.
    let mut early = Vec::new();
    let handshake = async {
        loop {
            write_pending(&mut stream, &mut link).await?;
            if link.is_open() {
                return Ok::<(), ConnError>(());
            }
            stream.readable().await.map_err(ConnError::Io)?;
            match read_into(&stream, &mut link)? {
                Some(msgs) => early.extend(msgs),
                None => return Err(ConnError::Link(link.finish().err().unwrap_or(LinkError::NotReady))),
            }
        }
    };
    match tokio::time::timeout(deadline, handshake).await {
        Ok(r) => r?,
        Err(_) => return Err(ConnError::Link(LinkError::HandshakeTimeout)),
    }
    let remote = link.remote().cloned().ok_or(ConnError::Link(LinkError::NotReady))?;
    let (to_conn_tx, mut to_conn_rx) = mpsc::channel::<Message>(capacity);
    let (mut to_driver_tx, to_driver_rx) = mpsc::channel::<Message>(capacity);
    if ready.send(PeerLink { remote: remote.clone(), tx: to_conn_tx, rx: to_driver_rx }).is_err() {
        return Err(ConnError::Closed);
    }
    tracing::debug!(peer = %remote.id, "link open");
    let mut budget = MessageBudget::new(peer_rate, peer_burst, now_ms().as_millis());
    let _ = budget.take(early.len(), now_ms().as_millis());
    for msg in early {
        to_driver_tx.send(msg).await.map_err(|_| ConnError::Closed)?;
    }
    loop {
        tokio::select! {
            ready = stream.readable() => {
                ready.map_err(ConnError::Io)?;
                let Some(msgs) = read_into(&stream, &mut link)? else {
                    link.finish().map_err(ConnError::Link)?;
                    return Err(ConnError::Closed);
                };
                let wait = budget.take(msgs.len(), now_ms().as_millis());
                for msg in msgs {
                    // Waiting here is the backpressure: we stop reading while the driver is behind.
                    to_driver_tx.send(msg).await.map_err(|_| ConnError::Closed)?;
                }
                if !wait.is_zero() {
                    // Over the peer's budget: read nothing from it until the budget refills.
                    tokio::time::sleep(wait).await;
                }
            }
            out = to_conn_rx.next() => {
                let Some(msg) = out else {
                    // The driver let go of this link: keep reading (answers in flight) for a while, send
                    // nothing more, then close.
                    return drain_then_close(&stream, &mut link, &mut to_driver_tx, linger).await;
                };
                match link.send(&msg) {
                    Ok(()) => {}
                    Err(LinkError::Codec(e)) => tracing::warn!(peer = %remote.id, "message not sent: {e}"),
                    Err(e) => return Err(ConnError::Link(e)),
                }
                write_pending(&mut stream, &mut link).await?;
            }
        }
    }
}

impl Transport for TcpTransport {
    fn dial(&self, peer: &Contact) -> LocalBoxFuture<'static, Result<PeerLink, TransportError>> {
        let target = peer.addrs.iter().find_map(|a| a.as_str().strip_prefix(SCHEME)?.parse::<SocketAddr>().ok());
        let (identity, addrs, config, expected) =
            (self.identity.clone(), self.local.addrs.clone(), self.config.clone(), peer.id);
        async move {
            let target = target.ok_or(TransportError::NoAddress(expected))?;
            let stream = tokio::time::timeout(config.link.handshake_timeout, TcpStream::connect(target))
                .await
                .map_err(|_| TransportError::Connect(format!("{target}: connect timed out")))?
                .map_err(|e| TransportError::Connect(format!("{target}: {e}")))?;
            let link = Link::initiator(&identity, Some(expected), b"webdht/tcp/1", addrs, &config.link, now_ms())
                .map_err(|e| TransportError::Connect(e.to_string()))?;
            let (ready_tx, ready_rx) = oneshot::channel();
            let (err_tx, err_rx) = oneshot::channel();
            tokio::task::spawn_local(async move {
                if let Err(e) = run_connection(stream, link, ConnParams::of(&config), ready_tx).await {
                    tracing::info!(%target, "outbound connection closed: {e}");
                    let _ = err_tx.send(e.to_string());
                }
            });
            match ready_rx.await {
                Ok(link) => Ok(link),
                Err(_) => {
                    let reason = err_rx.await.unwrap_or_else(|_| "closed".into());
                    if reason.contains("expected") {
                        Err(TransportError::Connect(reason))
                    } else {
                        Err(TransportError::Connect(format!("{target}: {reason}")))
                    }
                }
            }
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
