//! Messages carried for a transport over the node's links ([`Message::Relay`]): how a WebRTC link is set up
//! between nodes that share no signaling server, or after theirs went away. The driver forwards what it is
//! a relay for, hands the transport what is addressed to it, and tells the nodes that ask it for contacts
//! which of them it can relay to (a `rtc:via:` address).
//!
//! Every relayed message is checked against its route and counted against two budgets (the link it came on,
//! and the node it claims to come from), so a peer cannot make a node relay without bound.

use crate::transport::MessageBudget;
use dht_core::{Address, Contact, Message, NodeId, Relayed, MAX_RELAY_HOPS, MAX_RELAY_PAYLOAD};
use futures::channel::mpsc;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// The form of a relay address: `rtc:via:<relay>` (a peer that holds a link to the node), or
/// `rtc:via:<relay>/<relay>` (a peer that holds a link to one that does). Ids in full hex.
pub const VIA_PREFIX: &str = "rtc:via:";

/// The scheme of the addresses whose links are set up by signals (WebRTC's): only contacts with one are
/// given relay addresses.
const SIGNALED_SCHEME: &str = "rtc:";

/// A relay address for `route` (one or two relays, nearest to the dialer first).
pub fn via_address(route: &[NodeId]) -> Address {
    let ids: Vec<String> = route.iter().map(|id| format!("{id:#}")).collect();
    Address::new(format!("{VIA_PREFIX}{}", ids.join("/")))
}

/// The relays of a relay address, nearest to the dialer first; `None` for another address or a malformed
/// one (more than [`MAX_RELAY_HOPS`] relays, a bad id).
pub fn parse_via(addr: &Address) -> Option<Vec<NodeId>> {
    let rest = addr.as_str().strip_prefix(VIA_PREFIX)?;
    let route: Vec<NodeId> = rest.split('/').map(str::parse).collect::<Result<_, _>>().ok()?;
    (!route.is_empty() && route.len() <= MAX_RELAY_HOPS).then_some(route)
}

/// The peers a node holds links with now, as the driver keeps them: for a transport choosing a route.
#[derive(Clone, Default, Debug)]
pub struct LinkSet(Rc<RefCell<HashSet<NodeId>>>);

impl LinkSet {
    /// Whether the node holds a link to `peer`.
    pub fn contains(&self, peer: &NodeId) -> bool {
        self.0.borrow().contains(peer)
    }

    /// How many links the node holds.
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// No link at all.
    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }

    /// Up to `count` of the peers we hold links with, nearest to `target` first (XOR distance): the ones
    /// likeliest to hold a link to it.
    pub fn nearest(&self, target: &NodeId, count: usize) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = self.0.borrow().iter().copied().collect();
        peers.sort_by_key(|p| p.distance(target));
        peers.truncate(count);
        peers
    }

    pub(crate) fn insert(&self, peer: NodeId) {
        self.0.borrow_mut().insert(peer);
    }

    pub(crate) fn remove(&self, peer: &NodeId) {
        self.0.borrow_mut().remove(peer);
    }
}

/// A transport's end of the relay, handed to it once when the node starts ([`crate::Transport::attach_relay`]).
#[derive(Debug)]
pub struct RelayPort {
    /// Messages to send: `from` is this node, `hop` 0, and `route`'s first relay (or `to`, for an empty
    /// route) must be one of [`RelayPort::links`], else the message is dropped. Bounded: a full queue means
    /// the node is not keeping up.
    pub outbound: mpsc::Sender<Relayed>,
    /// Messages addressed to this node. Reply along `route` reversed.
    pub inbound: mpsc::Receiver<Relayed>,
    /// The peers the node holds links with.
    pub links: LinkSet,
}

/// What the driver's relay did, since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Sent for our transport.
    pub sent: u64,
    /// Handed to our transport.
    pub delivered: u64,
    /// Passed on for others.
    pub forwarded: u64,
    /// Dropped for a budget (a link's or a sender's).
    pub over_budget: u64,
    /// Dropped as malformed, misrouted, or with no link to its next hop.
    pub unroutable: u64,
}

/// Relayed messages a link may bring at once, and then a second.
const LINK_BURST: u32 = 256;
const LINK_RATE: u32 = 128;
/// Relayed messages one sender may have passed through or to us at once, and then a second (a link setup
/// is an offer or an answer and up to 16 candidates).
const SOURCE_BURST: u32 = 64;
const SOURCE_RATE: u32 = 32;
/// Budgets kept at most (links and senders each); the least recently used one makes way.
const MAX_BUDGETS: usize = 1024;
/// Relay hints (`rtc:via:` addresses heard from others) kept at most, and per node.
const MAX_HINTS: usize = 1024;
const HINTS_PER_NODE: usize = 2;
/// Messages queued between the driver and its transport, each way.
const PORT_QUEUE: usize = 256;

/// Token buckets by id, at most [`MAX_BUDGETS`] of them.
#[derive(Default)]
struct Budgets(HashMap<NodeId, (MessageBudget, u64)>);

impl Budgets {
    /// Spends one message of `id`'s budget; false when it is spent.
    fn take(&mut self, id: NodeId, (rate, burst): (u32, u32), now_ms: u64) -> bool {
        if !self.0.contains_key(&id) && self.0.len() >= MAX_BUDGETS {
            let oldest = self.0.iter().min_by_key(|(_, (_, used))| *used).map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.0.remove(&oldest);
            }
        }
        let (budget, used) = self.0.entry(id).or_insert_with(|| (MessageBudget::new(rate, burst, now_ms), now_ms));
        *used = now_ms;
        budget.try_take(now_ms)
    }
}

/// What to do with a relayed message that came in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It is for us.
    Deliver,
    /// Pass it on to this peer (its `hop` already counted).
    Forward(NodeId),
    /// It is for a node we hold no link to: tell its sender.
    NoLink,
    /// Drop it, for this reason.
    Drop(&'static str),
}

/// The driver's relay: the transport's queues, the link set, the budgets and the hints.
pub(crate) struct Relay {
    local: NodeId,
    links: LinkSet,
    /// To the transport (none when no transport took the port).
    to_transport: Option<mpsc::Sender<Relayed>>,
    by_link: Budgets,
    by_source: Budgets,
    /// `rtc:via:` addresses others gave for a node, newest first, and when they were last heard.
    hints: HashMap<NodeId, (Vec<Address>, u64)>,
    pub(crate) stats: RelayStats,
}

impl Relay {
    /// The relay of node `local`, and the port for its transport with the queue the driver reads.
    pub(crate) fn new(local: NodeId) -> (Relay, RelayPort, mpsc::Receiver<Relayed>) {
        let links = LinkSet::default();
        let (out_tx, out_rx) = mpsc::channel(PORT_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(PORT_QUEUE);
        let port = RelayPort { outbound: out_tx, inbound: in_rx, links: links.clone() };
        let relay = Relay {
            local,
            links,
            to_transport: Some(in_tx),
            by_link: Budgets::default(),
            by_source: Budgets::default(),
            hints: HashMap::new(),
            stats: RelayStats::default(),
        };
        (relay, port, out_rx)
    }

    /// No transport takes relayed messages: the node relays for others all the same.
    pub(crate) fn detach(&mut self) {
        self.to_transport = None;
    }

    pub(crate) fn links(&self) -> &LinkSet {
        &self.links
    }

    /// Where `m`, received on the link of `link_peer`, goes.
    pub(crate) fn route(&self, link_peer: NodeId, m: &Relayed) -> Verdict {
        let hop = usize::from(m.hop);
        let notice_with_payload = m.undeliverable.is_some() && !m.payload.is_empty();
        if m.route.len() > MAX_RELAY_HOPS
            || hop > m.route.len()
            || m.payload.len() > MAX_RELAY_PAYLOAD
            || notice_with_payload
        {
            return Verdict::Drop("malformed");
        }
        if m.from == m.to || m.route.contains(&m.from) || m.route.contains(&m.to) {
            return Verdict::Drop("a route through its own ends");
        }
        let previous = if hop == 0 { m.from } else { m.route[hop - 1] };
        if previous != link_peer {
            return Verdict::Drop("not from the previous hop of its route");
        }
        if hop == m.route.len() {
            return if m.to == self.local { Verdict::Deliver } else { Verdict::Drop("not for us") };
        }
        if m.route[hop] != self.local {
            return Verdict::Drop("we are not its next relay");
        }
        let next = m.route.get(hop + 1).copied().unwrap_or(m.to);
        if self.links.contains(&next) {
            Verdict::Forward(next)
        } else {
            Verdict::NoLink
        }
    }

    /// The notice for the sender of `m`, which we cannot pass on: back along the relays it passed.
    fn notice(&self, m: &Relayed) -> Relayed {
        let passed = &m.route[..usize::from(m.hop)];
        Relayed {
            from: self.local,
            to: m.from,
            route: passed.iter().rev().copied().collect(),
            hop: 0,
            payload: Vec::new(),
            undeliverable: Some(m.to),
        }
    }

    /// A relayed message from the link of `link_peer`: what to send, and to whom, if anything (a message for
    /// us goes to the transport).
    pub(crate) fn received(&mut self, link_peer: NodeId, mut m: Relayed, now_ms: u64) -> Option<(NodeId, Message)> {
        let verdict = self.route(link_peer, &m);
        if let Verdict::Drop(why) = verdict {
            self.stats.unroutable += 1;
            tracing::debug!(peer = %link_peer, from = %m.from, to = %m.to, "relayed message dropped: {why}");
            return None;
        }
        if !self.by_link.take(link_peer, (LINK_RATE, LINK_BURST), now_ms)
            || !self.by_source.take(m.from, (SOURCE_RATE, SOURCE_BURST), now_ms)
        {
            self.stats.over_budget += 1;
            tracing::debug!(peer = %link_peer, from = %m.from, "relayed message dropped: over budget");
            return None;
        }
        match verdict {
            Verdict::Forward(next) => {
                self.stats.forwarded += 1;
                m.hop += 1;
                Some((next, Message::Relay(Box::new(m))))
            }
            // A notice is not answered with another.
            Verdict::NoLink => {
                self.stats.unroutable += 1;
                tracing::debug!(from = %m.from, to = %m.to, "relayed message not passed on: no link to its next hop");
                m.undeliverable.is_none().then(|| (link_peer, Message::Relay(Box::new(self.notice(&m)))))
            }
            _ => {
                let delivered = self.to_transport.as_mut().is_some_and(|tx| tx.try_send(m).is_ok());
                if delivered {
                    self.stats.delivered += 1;
                } else {
                    self.stats.unroutable += 1;
                }
                None
            }
        }
    }

    /// A message our transport sends: the peer to hand it to, when we hold a link to it.
    pub(crate) fn send(&mut self, m: Relayed) -> Option<(NodeId, Message)> {
        let first = m.route.first().copied().unwrap_or(m.to);
        let valid = m.from == self.local && m.hop == 0 && m.route.len() <= MAX_RELAY_HOPS;
        if !valid || m.payload.len() > MAX_RELAY_PAYLOAD || !self.links.contains(&first) {
            tracing::debug!(to = %m.to, via = %first, "relayed message not sent: no link to its first hop");
            self.stats.unroutable += 1;
            // The transport hears at once that its message went nowhere; the notice's route names the hop
            // we hold no link to (of the routes a transport tries at once, that one failed).
            let notice = Relayed { hop: 0, route: vec![first], ..self.notice(&m) };
            if let Some(tx) = self.to_transport.as_mut() {
                let _ = tx.try_send(Relayed { to: self.local, ..notice });
            }
            return None;
        }
        self.stats.sent += 1;
        Some((first, Message::Relay(Box::new(m))))
    }

    /// Keeps the relay addresses of the contacts in an answer (`tick`: the driver's clock of events).
    pub(crate) fn learn(&mut self, contacts: &[Contact], tick: u64) {
        for c in contacts {
            let vias: Vec<&Address> = c.addrs.iter().filter(|a| parse_via(a).is_some()).collect();
            if vias.is_empty() || c.id == self.local {
                continue;
            }
            if !self.hints.contains_key(&c.id) && self.hints.len() >= MAX_HINTS {
                let oldest = self.hints.iter().min_by_key(|(_, (_, t))| *t).map(|(id, _)| *id);
                if let Some(oldest) = oldest {
                    self.hints.remove(&oldest);
                }
            }
            let (known, heard) = self.hints.entry(c.id).or_default();
            for via in vias.into_iter().rev() {
                known.retain(|a| a != via);
                known.insert(0, via.clone());
            }
            known.truncate(HINTS_PER_NODE);
            *heard = tick;
        }
    }

    /// `peer`'s addresses with the relay addresses heard for it (to dial it).
    pub(crate) fn with_hints(&self, mut peer: Contact) -> Contact {
        if let Some((hints, _)) = self.hints.get(&peer.id) {
            for h in hints {
                if !peer.addrs.contains(h) {
                    peer.addrs.push(h.clone());
                }
            }
        }
        peer
    }

    /// A contact as we hand it to others: the relay addresses it came with are dropped (each node vouches
    /// only for its own links), and when it is a signaled node we can reach, ours is added: through us when
    /// we hold a link to it, else through us and a relay we hold a link to. `max_addrs`: what the asker
    /// keeps of a contact (ours goes in last, within it).
    pub(crate) fn annotate(&self, c: &mut Contact, max_addrs: usize) {
        c.addrs.retain(|a| !a.as_str().starts_with(VIA_PREFIX));
        if !c.addrs.iter().any(|a| a.as_str().starts_with(SIGNALED_SCHEME)) || max_addrs == 0 {
            return;
        }
        let route = if self.links.contains(&c.id) {
            vec![self.local]
        } else {
            let hinted = self.hints.get(&c.id).into_iter().flat_map(|(h, _)| h.iter().filter_map(parse_via));
            match hinted.into_iter().find(|r| r.len() == 1 && self.links.contains(&r[0])) {
                Some(r) => vec![self.local, r[0]],
                None => return,
            }
        };
        c.addrs.truncate(max_addrs - 1);
        c.addrs.push(via_address(&route));
    }
}

#[cfg(test)]
mod tests;
