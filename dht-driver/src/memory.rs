//! An in-process transport: links are channel pairs, addresses are names in a shared registry. For tests
//! and examples of the driver; the registry plays the part of the handshake (a dial reaches the id that
//! registered the address, and is refused if that is not the id dialed).

use crate::transport::{PeerLink, Transport, TransportError};
use dht_core::{Address, Contact, NodeId};
use futures::channel::mpsc;
use futures::future::LocalBoxFuture;
use futures::stream::LocalBoxStream;
use futures::{FutureExt, StreamExt};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Messages buffered per direction of a link.
const LINK_BUFFER: usize = 256;

/// Who listens on an address, and where its incoming links go.
type Listener = (Contact, mpsc::UnboundedSender<PeerLink>);

/// The shared registry of a set of in-process nodes.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    listeners: Rc<RefCell<HashMap<Address, Listener>>>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A transport for the node `local`, listening on its addresses.
    pub fn transport(&self, local: Contact) -> MemoryTransport {
        let (tx, rx) = mpsc::unbounded();
        for a in &local.addrs {
            self.listeners.borrow_mut().insert(a.clone(), (local.clone(), tx.clone()));
        }
        MemoryTransport { network: self.clone(), local, incoming: Some(rx) }
    }

    /// Removes `addr`: later dials to it fail (the node went away).
    pub fn unregister(&self, addr: &Address) {
        self.listeners.borrow_mut().remove(addr);
    }
}

/// One node's view of a [`MemoryNetwork`].
pub struct MemoryTransport {
    network: MemoryNetwork,
    local: Contact,
    incoming: Option<mpsc::UnboundedReceiver<PeerLink>>,
}

impl Transport for MemoryTransport {
    fn dial(&self, peer: &Contact) -> LocalBoxFuture<'static, Result<PeerLink, TransportError>> {
        let found = peer.addrs.iter().find_map(|a| self.network.listeners.borrow().get(a).cloned());
        let local = self.local.clone();
        let expected: NodeId = peer.id;
        async move {
            let (remote, listener) = found.ok_or(TransportError::NoAddress(expected))?;
            if remote.id != expected {
                return Err(TransportError::WrongPeer { expected, actual: remote.id });
            }
            let (a_tx, b_rx) = mpsc::channel(LINK_BUFFER);
            let (b_tx, a_rx) = mpsc::channel(LINK_BUFFER);
            listener
                .unbounded_send(PeerLink { remote: local, tx: b_tx, rx: b_rx })
                .map_err(|_| TransportError::Connect("listener gone".into()))?;
            Ok(PeerLink { remote, tx: a_tx, rx: a_rx })
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
