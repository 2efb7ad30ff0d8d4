//! What the driver needs from a transport: authenticated message links, dialed or accepted.

use crate::relay::RelayPort;
use dht_core::{Contact, Message, NodeId};
use futures::channel::mpsc;
use futures::future::LocalBoxFuture;
use futures::stream::LocalBoxStream;

/// An open, authenticated link to one peer. Dropping `tx` closes our sending side; `rx` ends when the peer
/// or the connection is gone.
#[derive(Debug)]
pub struct PeerLink {
    /// The peer: its id as proven by the link's handshake, and the addresses it advertised.
    pub remote: Contact,
    /// Messages to send (bounded: a full channel means the connection is not keeping up).
    pub tx: mpsc::Sender<Message>,
    /// Messages received.
    pub rx: mpsc::Receiver<Message>,
}

/// A link's budget of inbound messages (a token bucket): a peer may send `burst` messages at once and `rate`
/// a second after that. Transports stop reading from a link whose budget is spent until it refills, so one
/// peer cannot take all of a node's time; on TCP the peer's sends then slow down under flow control.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageBudget {
    rate: u32,
    burst: u32,
    tokens: f64,
    last_ms: u64,
}

impl MessageBudget {
    /// A full budget at `now_ms` (milliseconds on any monotonic clock). `rate` 0 means unlimited.
    pub fn new(rate: u32, burst: u32, now_ms: u64) -> Self {
        let burst = burst.max(1);
        MessageBudget { rate, burst, tokens: f64::from(burst), last_ms: now_ms }
    }

    /// Spends `n` messages received at `now_ms`; returns how long to stop reading before the budget is
    /// positive again (zero while within it).
    pub fn take(&mut self, n: usize, now_ms: u64) -> core::time::Duration {
        if self.rate == 0 {
            return core::time::Duration::ZERO;
        }
        self.refill(now_ms);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            core::time::Duration::ZERO
        } else {
            core::time::Duration::from_secs_f64(-self.tokens / f64::from(self.rate))
        }
    }

    /// Spends one message at `now_ms` if the budget holds one; false (nothing spent) if not: for what is
    /// dropped rather than delayed.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        self.refill(now_ms);
        let allowed = self.tokens >= 1.0;
        if allowed {
            self.tokens -= 1.0;
        }
        allowed
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(f64::from(self.burst));
    }
}

/// An error from below a transport (a handshake's, a codec's), kept as the source of a [`TransportError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a dial failed, or why an open link ended. Branch on the variants; the texts are for people.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// None of the peer's addresses is usable by this transport.
    #[error("no usable address for {0}")]
    NoAddress(NodeId),
    /// The peer proved another identity than the one dialed (or than the one a signaling server named).
    #[error("expected peer {expected}, reached {actual}")]
    WrongPeer {
        /// The id dialed.
        expected: NodeId,
        /// The id proven.
        actual: NodeId,
    },
    /// A step did not finish in time: the named one (`"connect"`, `"handshake"`, `"answer"`, ...).
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The handshake failed: the peer's messages were invalid, or the stream ended or broke during it.
    #[error("handshake failed: {0}")]
    Handshake(#[source] BoxError),
    /// The link's stream broke after the handshake: a frame failed to decrypt, was malformed or cut short.
    #[error("link failed: {0}")]
    Link(#[source] BoxError),
    /// Every address the peer has for this transport is in a range this node does not dial (loopback,
    /// private or link-local, while none of its own addresses is there): the address named.
    #[error("not dialing {0}: a loopback, private or link-local address this node does not live in")]
    Forbidden(String),
    /// The connection, or the other end of a queue, went away.
    #[error("connection closed")]
    Closed,
    /// The connection's socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer refused the link (e.g. it is setting up too many).
    #[error("refused by the peer: {0}")]
    Refused(String),
    /// The signaling server could not relay the setup, or could not be reached.
    #[error("signaling: {0}")]
    Signaling(String),
    /// The platform could not set the connection up (what it reported).
    #[error("cannot connect: {0}")]
    Connect(String),
}

/// A way to reach peers. Implementations authenticate every link before handing it over.
pub trait Transport {
    /// Opens a link to `peer` using its addresses.
    fn dial(&self, peer: &Contact) -> LocalBoxFuture<'static, Result<PeerLink, TransportError>>;
    /// Links peers opened to us. Called once, when the node starts.
    fn incoming(&mut self) -> LocalBoxStream<'static, PeerLink>;
    /// Offers the transport the node's relay (messages to and from other nodes carried over the node's
    /// links, e.g. link setup signals), once, when the node starts. A transport that has no use for it hands
    /// it back.
    fn attach_relay(&mut self, relay: RelayPort) -> Option<RelayPort> {
        Some(relay)
    }
}

/// Several transports as one: a dial goes to the first transport that has a usable address for the peer
/// (in the order given), and incoming links from all of them are merged.
pub struct Transports(pub Vec<Box<dyn Transport>>);

impl Transport for Transports {
    fn dial(&self, peer: &Contact) -> LocalBoxFuture<'static, Result<PeerLink, TransportError>> {
        let attempts: Vec<_> = self.0.iter().map(|t| t.dial(peer)).collect();
        let id = peer.id;
        Box::pin(async move {
            let mut last = TransportError::NoAddress(id);
            for attempt in attempts {
                match attempt.await {
                    Ok(link) => return Ok(link),
                    Err(TransportError::NoAddress(_)) => {}
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }

    fn incoming(&mut self) -> LocalBoxStream<'static, PeerLink> {
        Box::pin(futures::stream::select_all(self.0.iter_mut().map(|t| t.incoming())))
    }

    /// The first transport that takes it has it.
    fn attach_relay(&mut self, relay: RelayPort) -> Option<RelayPort> {
        self.0.iter_mut().try_fold(relay, |relay, t| t.attach_relay(relay).ok_or(())).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::MessageBudget;
    use core::time::Duration;

    #[test]
    fn a_budget_allows_a_burst_then_the_rate() {
        let mut b = MessageBudget::new(100, 10, 1_000);
        assert_eq!(b.take(10, 1_000), Duration::ZERO, "the burst");
        assert_eq!(b.take(5, 1_000), Duration::from_millis(50), "5 over: 50 ms at 100 a second");
        assert_eq!(b.take(0, 1_050), Duration::ZERO, "refilled to zero");
        assert_eq!(b.take(1, 1_060), Duration::ZERO, "one more token after 10 ms");
        assert_eq!(b.take(0, 60_000), Duration::ZERO);
        assert_eq!(b.take(11, 60_000), Duration::from_millis(10), "never more than the burst saved up");
        let mut unlimited = MessageBudget::new(0, 1, 0);
        assert_eq!(unlimited.take(1_000_000, 0), Duration::ZERO);
    }
}
