//! What the driver needs from a transport: authenticated message links, dialed or accepted.

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

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// None of the peer's addresses is usable by this transport.
    #[error("no usable address for {0}")]
    NoAddress(NodeId),
    /// The connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The peer proved another identity than the one dialed.
    #[error("dialed {expected}, reached {actual}")]
    WrongPeer {
        /// The id dialed.
        expected: NodeId,
        /// The id proven.
        actual: NodeId,
    },
}

/// A way to reach peers. Implementations authenticate every link before handing it over.
pub trait Transport {
    /// Opens a link to `peer` using its addresses.
    fn dial(&self, peer: &Contact) -> LocalBoxFuture<'static, Result<PeerLink, TransportError>>;
    /// Links peers opened to us. Called once, when the node starts.
    fn incoming(&mut self) -> LocalBoxStream<'static, PeerLink>;
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
}
