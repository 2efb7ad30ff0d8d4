//! # dht-link-io
//!
//! The one loop that runs a [`dht_link::Link`] over a byte pipe, for every transport: the Noise handshake
//! (bounded by the link's deadline) and the messages that came with its last bytes, then messages both ways
//! through bounded queues, with backpressure (a link stops reading while the driver is behind), a per-peer
//! message budget (past it the link stops reading until the budget refills), messages the driver has ready
//! packed into shared writes, and linger (a link the driver lets go of keeps delivering what arrives for a
//! while, so that answers in flight still arrive).
//!
//! A transport supplies only the [`Pipe`]: a TCP socket, or a WebRTC data channel as a [`ChannelPipe`].
//! Built on `futures` alone, with no `Send` bounds; time comes from the driver's [`Clock`], so the same loop
//! runs on tokio, in the browser, and on a virtual clock in tests.
//!
//! ```text
//! let opened = handshake(pipe, link, &clock).await?;      // authenticated; opened.remote() is the peer
//! let (peer_link, task) = opened.start(config, clock);    // hand peer_link to the driver, spawn task
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use dht_core::{Contact, Message};
use dht_driver::{Clock, MessageBudget, PeerLink, TransportError};
use dht_link::{Link, LinkError};
use futures::channel::mpsc;
use futures::{FutureExt, SinkExt, StreamExt};
use std::future::Future;
use std::time::Duration;

/// Messages ready from the driver that a link packs into shared writes before it reads from its peer again.
pub const COALESCE: usize = 32;

/// The bytes under a link: a TCP socket, a data channel, an in-memory pipe.
#[allow(async_fn_in_trait)] // single-threaded by design: no Send bound is wanted
pub trait Pipe {
    /// The write size the loop fills while more messages are ready: a partial last write waits for the next
    /// ready message instead of going out alone (on a message pipe, each write is one message).
    fn chunk(&self) -> usize;
    /// Waits for bytes from the peer and hands them to `take`; `Ok(None)` once the peer's stream has ended.
    /// Cancel-safe: bytes are consumed, and `take` runs, only in the poll that completes.
    async fn read<R>(&mut self, take: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, TransportError>;
    /// Writes a prefix of `bytes` (never empty), waiting for room; returns its length (0: the pipe is closed).
    async fn write(&mut self, bytes: &[u8]) -> Result<usize, TransportError>;
}

/// Limits of the loop once the link is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Messages queued between the link and the driver, each way (at least 1).
    pub queue: usize,
    /// How long a link the driver let go of (replaced, or closed to make room) goes on delivering what
    /// arrives before it closes: answers to requests sent on it are still on their way.
    pub linger: Duration,
    /// Messages a peer may send a second, after a burst of `peer_burst` (0 = no limit). Past it the link
    /// stops reading until the budget refills (the messages of the read that went over are delivered first).
    pub peer_rate: u32,
    /// Messages a peer may send at once before `peer_rate` applies.
    pub peer_burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { queue: 64, linger: Duration::from_secs(1), peer_rate: 1000, peer_burst: 2000 }
    }
}

/// What a link's error means to a transport, during the handshake.
pub fn handshake_error(e: LinkError) -> TransportError {
    match e {
        LinkError::HandshakeTimeout => TransportError::Timeout("handshake"),
        LinkError::WrongPeer { expected, actual } => TransportError::WrongPeer { expected, actual },
        e => TransportError::Handshake(Box::new(e)),
    }
}

/// What a link's error means to a transport, once the link is open.
pub fn link_error(e: LinkError) -> TransportError {
    match e {
        LinkError::HandshakeTimeout | LinkError::WrongPeer { .. } => handshake_error(e),
        e => TransportError::Link(Box::new(e)),
    }
}

/// A link whose handshake finished over its pipe.
pub struct Opened<P> {
    pipe: P,
    link: Link,
    remote: Contact,
    /// Messages that arrived with the last handshake bytes.
    early: Vec<Message>,
}

impl<P> core::fmt::Debug for Opened<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Opened").field("remote", &self.remote).field("early", &self.early.len()).finish()
    }
}

/// Runs `link`'s handshake over `pipe` until the link is open, failed, or past its deadline (on `clock`).
/// Dropping the result closes the pipe.
pub async fn handshake<P: Pipe, C: Clock + ?Sized>(
    mut pipe: P,
    mut link: Link,
    clock: &C,
) -> Result<Opened<P>, TransportError> {
    let deadline = match link.poll_timeout() {
        Some(at) => clock.sleep_until(at),
        None => futures::future::pending().boxed_local(),
    };
    let mut early = Vec::new();
    let steps = async {
        loop {
            flush_above(&mut pipe, &mut link, 0).await?;
            if link.is_open() {
                return Ok(());
            }
            match pipe.read(|bytes| link.feed(bytes, clock.now())).await? {
                Some(msgs) => early.extend(msgs.map_err(handshake_error)?),
                None => return Err(link.finish().err().map_or(TransportError::Closed, handshake_error)),
            }
        }
    };
    futures::select_biased! {
        r = steps.fuse() => r?,
        _ = deadline.fuse() => return Err(TransportError::Timeout("handshake")),
    }
    let remote = link.remote().cloned().expect("an open link knows its peer");
    Ok(Opened { pipe, link, remote, early })
}

impl<P: Pipe> Opened<P> {
    /// The peer, as its handshake proved it.
    pub fn remote(&self) -> &Contact {
        &self.remote
    }

    /// The link for the driver, and the task that carries its messages until either side ends it (spawn it
    /// on the local executor). The task's error says why the link ended.
    pub fn start<C: Clock>(
        self,
        config: Config,
        clock: C,
    ) -> (PeerLink, impl Future<Output = Result<(), TransportError>>) {
        let queue = config.queue.max(1);
        let (to_link, from_driver) = mpsc::channel(queue);
        let (to_driver, from_link) = mpsc::channel(queue);
        let peer = PeerLink { remote: self.remote.clone(), tx: to_link, rx: from_link };
        (peer, carry(self, config, clock, from_driver, to_driver))
    }
}

/// What woke the open link.
enum Step {
    /// Bytes from the peer (the messages they completed), or `None` at the end of its stream.
    Read(Option<Result<Vec<Message>, LinkError>>),
    /// A message from the driver, or `None` once it let go of the link.
    Send(Option<Message>),
}

/// Whether the driver still holds the link after a batch of sends.
#[derive(Debug, PartialEq, Eq)]
enum Held {
    Yes,
    LetGo,
}

/// Shuttles messages both ways until either side ends the link.
async fn carry<P: Pipe, C: Clock>(
    opened: Opened<P>,
    config: Config,
    clock: C,
    mut from_driver: mpsc::Receiver<Message>,
    mut to_driver: mpsc::Sender<Message>,
) -> Result<(), TransportError> {
    let Opened { mut pipe, mut link, remote, early } = opened;
    tracing::debug!(peer = %remote.id, "link open");
    let mut budget = MessageBudget::new(config.peer_rate, config.peer_burst, clock.now().as_millis());
    let _ = budget.take(early.len(), clock.now().as_millis());
    deliver(&mut to_driver, early).await?;
    loop {
        let step = {
            let read = pipe.read(|bytes| link.feed(bytes, clock.now())).fuse();
            futures::pin_mut!(read);
            futures::select! {
                r = read => Step::Read(r?),
                m = from_driver.next() => Step::Send(m),
            }
        };
        let held = match step {
            Step::Read(None) => {
                link.finish().map_err(link_error)?;
                return Err(TransportError::Closed);
            }
            Step::Read(Some(msgs)) => {
                let msgs = msgs.map_err(link_error)?;
                let wait = budget.take(msgs.len(), clock.now().as_millis());
                // Waiting here is the backpressure: we stop reading while the driver is behind.
                deliver(&mut to_driver, msgs).await?;
                if !wait.is_zero() {
                    // Over the peer's budget: read nothing from it until the budget refills.
                    clock.sleep(wait).await;
                }
                Held::Yes
            }
            Step::Send(Some(msg)) => send_batch(&mut pipe, &mut link, &remote, msg, &mut from_driver).await?,
            Step::Send(None) => Held::LetGo,
        };
        if held == Held::LetGo {
            // The driver let go of this link: keep delivering (answers in flight) for a while, send nothing
            // more, then close.
            return linger(&mut pipe, &mut link, &mut to_driver, config.linger, &clock).await;
        }
    }
}

/// Queues `first` and the messages the driver has ready after it, and writes them out.
async fn send_batch<P: Pipe>(
    pipe: &mut P,
    link: &mut Link,
    remote: &Contact,
    first: Message,
    from_driver: &mut mpsc::Receiver<Message>,
) -> Result<Held, TransportError> {
    send_one(link, &first, remote)?;
    // Messages the driver has ready share writes: on a data channel a 32 KiB message would otherwise go out
    // as two full chunks and a ~50-byte tail, each a message of its own. The tail waits only while another
    // message is ready to fill it, and at most `COALESCE` messages are taken in a row so that what arrives
    // from the peer is read in between.
    let keep = pipe.chunk().saturating_sub(1);
    for _ in 1..COALESCE {
        flush_above(pipe, link, keep).await?;
        match from_driver.try_recv() {
            Ok(msg) => send_one(link, &msg, remote)?,
            Err(mpsc::TryRecvError::Closed) => {
                // The driver let go (the queue now reads as ended, and `select!` skips ended streams, so
                // this is the only place to see it).
                flush_above(pipe, link, 0).await?;
                return Ok(Held::LetGo);
            }
            Err(mpsc::TryRecvError::Empty) => break,
        }
    }
    flush_above(pipe, link, 0).await?;
    Ok(Held::Yes)
}

/// Queues `msg` on the link; a message the codec refuses (too large) is dropped with a warning, any other
/// error ends the link.
fn send_one(link: &mut Link, msg: &Message, remote: &Contact) -> Result<(), TransportError> {
    match link.send(msg) {
        Ok(()) => Ok(()),
        Err(LinkError::Codec(e)) => {
            tracing::warn!(peer = %remote.id, "message not sent: {e}");
            Ok(())
        }
        Err(e) => Err(link_error(e)),
    }
}

/// Writes out what the link holds while more than `keep` bytes are pending: `keep = chunk - 1` writes
/// full chunks only and leaves a partial tail for the next message to fill.
async fn flush_above<P: Pipe>(pipe: &mut P, link: &mut Link, keep: usize) -> Result<(), TransportError> {
    while link.pending().len() > keep {
        let n = pipe.write(link.pending()).await?;
        if n == 0 {
            return Err(TransportError::Closed);
        }
        link.advance(n);
    }
    Ok(())
}

async fn deliver(to_driver: &mut mpsc::Sender<Message>, msgs: Vec<Message>) -> Result<(), TransportError> {
    for msg in msgs {
        to_driver.send(msg).await.map_err(|_| TransportError::Closed)?;
    }
    Ok(())
}

/// Delivers what still arrives on a link the driver let go of, for `linger`, then returns (closing it).
async fn linger<P: Pipe, C: Clock>(
    pipe: &mut P,
    link: &mut Link,
    to_driver: &mut mpsc::Sender<Message>,
    linger: Duration,
    clock: &C,
) -> Result<(), TransportError> {
    if linger.is_zero() {
        return Ok(());
    }
    let mut deadline = clock.sleep(linger).fuse();
    loop {
        let read = {
            let read = pipe.read(|bytes| link.feed(bytes, clock.now())).fuse();
            futures::pin_mut!(read);
            futures::select_biased! {
                _ = deadline => return Ok(()),
                r = read => r?,
            }
        };
        let Some(msgs) = read else { return Ok(()) };
        deliver(to_driver, msgs.map_err(link_error)?).await?;
    }
}

/// A pipe of byte chunks over two bounded queues: what a WebRTC backend makes of a data channel (its tasks
/// move chunks between the queues and the channel, waiting while the channel's buffer is full), and an
/// in-memory pipe in tests. Each write is one chunk of at most `chunk` bytes.
#[derive(Debug)]
pub struct ChannelPipe {
    /// Chunks to send.
    pub out: mpsc::Sender<Vec<u8>>,
    /// Chunks received.
    pub inc: mpsc::Receiver<Vec<u8>>,
    chunk: usize,
}

impl ChannelPipe {
    /// A pipe writing chunks of at most `chunk` bytes (at least 1) to `out`, reading them from `inc`.
    pub fn new(out: mpsc::Sender<Vec<u8>>, inc: mpsc::Receiver<Vec<u8>>, chunk: usize) -> Self {
        ChannelPipe { out, inc, chunk: chunk.max(1) }
    }
}

impl Pipe for ChannelPipe {
    fn chunk(&self) -> usize {
        self.chunk
    }

    async fn read<R>(&mut self, take: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, TransportError> {
        Ok(self.inc.next().await.map(|chunk| take(&chunk)))
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<usize, TransportError> {
        let n = bytes.len().min(self.chunk);
        self.out.send(bytes[..n].to_vec()).await.map_err(|_| TransportError::Closed)?;
        // Let the task that moves chunks on (and the WebRTC stack under it) run: a queue with room never
        // makes `send` wait, and on a single-threaded executor the loop would starve them.
        yield_now().await;
        Ok(n)
    }
}

/// Returns `Pending` once (after asking to be polled again), so other tasks on the executor get a turn.
fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    futures::future::poll_fn(move |cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
}

#[cfg(test)]
mod tests;
