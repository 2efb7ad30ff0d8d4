//! The loop that runs the core: outputs to links and store, inputs from links, store, clock and commands.

use crate::clock::Clock;
use crate::handle::{Command, NodeEvent, NodeHandle, PutOutcome};
use crate::relay::Relay;
use crate::signer::Signer;
use crate::transport::{PeerLink, Transport, TransportError};
use dht_core::{
    decode_record, encode_record, Config, Contact, Event, Instant, Key, Message, Node, NodeId, OutputSink, QueryId,
    Record, Relayed, Response, SigningKey, StoreOp, StoreOpId, StoreResult, ValidConfig,
};
use futures::channel::{mpsc, oneshot};
use futures::future::{FutureExt, LocalBoxFuture};
use futures::stream::{FuturesUnordered, LocalBoxStream, SelectAll, StreamExt};
use kvstore::Store;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

/// How a driver runs its node.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The core's configuration, validated ([`Config::validate`]).
    pub core: ValidConfig,
    /// Our identity as peers see it: node id (hash of our static key) and advertised addresses.
    pub local: Contact,
    /// Seed of the core's randomness.
    pub seed: u64,
    /// The key the node signs its records with ([`NodeHandle::put_signed`]).
    pub signer: Signer,
    /// Live links kept at most. Beyond it one closes: a link to a peer outside our routing table while
    /// such links hold half the pool or more, else the one whose useful traffic is the oldest (our
    /// requests, answers to them, requests from peers in our table: a peer that only pings us does not
    /// keep its link). Strangers, sybils included, thus hold at most half the pool once it is full.
    pub max_links: usize,
    /// Messages queued per peer while its link is being dialed.
    pub max_queued_per_dial: usize,
    /// How often the routing table is saved to the store (it is also saved at shutdown), so a crash loses
    /// at most this much of it.
    pub save_interval: std::time::Duration,
}

impl DriverConfig {
    /// Defaults for a node with identity `local`, its randomness from `seed`. Its signing key is made up from
    /// the seed, which suits tests and benchmarks: a node front end sets the key it keeps
    /// ([`crate::setup::load_signing_key`], or the application's own), so its records stay its own across
    /// restarts.
    pub fn new(local: Contact, seed: u64) -> Self {
        let made_up = Key::from_name(&[b"signing key of seed ".as_slice(), &seed.to_le_bytes()].concat());
        DriverConfig {
            core: Config::default().validate().expect("the default configuration is valid"),
            local,
            seed,
            signer: SigningKey::from_bytes(made_up.as_bytes()).into(),
            max_links: 64,
            max_queued_per_dial: 64,
            save_interval: std::time::Duration::from_secs(60),
        }
    }
}

/// The metadata entry that lists the keys of the records a node put (32 bytes each).
pub const PUBLISHED_META: &str = "published";

/// Metadata entry holding the keys of the signed ones among them (so that listing them reads no chunk of a
/// file this node published). Absent in a store older than it: the list is then made once from the records.
pub const PUBLISHED_SIGNED_META: &str = "published_signed";

/// Our own records' keys, and the signed ones among them, as saved.
struct PublishedLists {
    all: Vec<u8>,
    signed: Vec<u8>,
}

async fn save_lists<S: Store>(store: &S, lists: PublishedLists) {
    for (name, bytes) in [(PUBLISHED_META, lists.all), (PUBLISHED_SIGNED_META, lists.signed)] {
        if let Err(e) = store.put_meta(name, &bytes).await {
            tracing::warn!("the list of our own records ({name}) not saved: {e}");
        }
    }
}

/// The keys of [`PUBLISHED_META`] (a trailing partial key is ignored).
fn decode_keys(bytes: &[u8]) -> BTreeSet<Key> {
    bytes.chunks_exact(32).map(|c| Key::from_bytes(c.try_into().expect("chunks of 32"))).collect()
}

/// The record under `key` in `store`, decoded; one that no longer decodes, or that sits under another key,
/// reads as absent (the core then forgets it).
async fn read_record<S: Store>(store: &S, key: &Key) -> Result<Option<Record>, kvstore::StoreError> {
    let stored = store.get_record(key).await?;
    Ok(stored.and_then(|r| decode_record(&r.value).ok()).filter(|r| r.key == *key))
}

enum Waiter {
    Lookup(oneshot::Sender<Vec<Contact>>),
    Put(oneshot::Sender<PutOutcome>, Option<u64>),
    Get(oneshot::Sender<Option<Record>>),
}

struct LinkEntry {
    remote: Contact,
    tx: mpsc::Sender<Message>,
    generation: u64,
    /// The tick of the link's last useful traffic (see [`DriverConfig::max_links`]).
    last_used: u64,
    /// Who dialed it (us or the peer), and when it opened: to settle crossed dials.
    dialer: NodeId,
    opened: Instant,
}

/// Two links to one peer whose dialers differ and which opened within this time of each other were dialed
/// at the same moment from both ends: both ends keep the one dialed by the smaller id. Later, a new link
/// replaces the old one (the peer restarted, or the old connection died unnoticed).
const CROSSED_DIALS: std::time::Duration = std::time::Duration::from_secs(10);

/// Losers of crossed dials kept open at most at once (see [`Io::linger`]).
const MAX_LINGERING: usize = 16;

/// Links a node keeps at least while its routing table has peers: below, it dials one of them a second (see
/// [`Io::keep_floor`]). Peers close links to make room for their own, and a node they all left can reach
/// nobody once its signaling server is away (a new link's signals then travel through the links it has).
const MIN_LINKS: usize = 3;
const FLOOR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A message from a link (the link's authenticated peer and generation), or `None` when the link ended.
type Incoming = (Rc<Contact>, u64, Option<Message>);

/// Starts a node: restores records and routing table from `store`, then returns the handle and the task
/// to spawn on a local executor. The task ends after [`NodeHandle::shutdown`] or when every handle is gone.
pub fn start<T, S, C>(
    config: DriverConfig,
    mut transport: T,
    store: S,
    clock: C,
) -> (NodeHandle, LocalBoxFuture<'static, ()>)
where
    T: Transport + 'static,
    S: Store + 'static,
    C: Clock + 'static,
{
    let (tx, rx) = mpsc::unbounded();
    let handle = NodeHandle {
        id: config.local.id,
        max_record_size: config.core.max_record_size,
        signer: config.signer.clone(),
        commands: tx,
    };
    let incoming = transport.incoming();
    let (mut relay, port, relay_out) = Relay::new(config.local.id);
    if transport.attach_relay(port).is_some() {
        relay.detach();
    }
    let task = async move {
        let now = clock.now();
        let node = Node::new(config.core.clone(), config.local.clone(), config.seed, now);
        let io = Io {
            config,
            transport,
            store: Rc::new(store),
            links: HashMap::new(),
            receivers: SelectAll::new(),
            dials: FuturesUnordered::new(),
            queued: HashMap::new(),
            store_ops: FuturesUnordered::new(),
            reads: FuturesUnordered::new(),
            waiters: BTreeMap::new(),
            published: BTreeSet::new(),
            published_signed: BTreeSet::new(),
            published_dirty: false,
            published_saving: Rc::new(Cell::new(false)),
            subscribers: Vec::new(),
            lingering: Vec::new(),
            relay,
            link_news: Vec::new(),
            generation: 0,
            tick: 0,
        };
        let mut driver = Driver { node, io };
        driver.restore(&clock).await;
        driver.run(rx, incoming, relay_out, &clock).await;
    };
    (handle, task.boxed_local())
}

struct Driver<T, S> {
    node: Node,
    io: Io<T, S>,
}

/// Everything of the driver but the node: where the node's outputs go ([`OutputSink`]).
struct Io<T, S> {
    config: DriverConfig,
    transport: T,
    store: Rc<S>,
    links: HashMap<NodeId, LinkEntry>,
    receivers: SelectAll<LocalBoxStream<'static, Incoming>>,
    dials: FuturesUnordered<LocalBoxFuture<'static, (NodeId, Result<PeerLink, TransportError>)>>,
    queued: HashMap<NodeId, Vec<Message>>,
    store_ops: FuturesUnordered<LocalBoxFuture<'static, (StoreOpId, StoreResult)>>,
    /// Store reads asked for by the program, answered directly.
    reads: FuturesUnordered<LocalBoxFuture<'static, ()>>,
    waiters: BTreeMap<QueryId, Waiter>,
    /// The keys of the records we put (kept in the store's metadata).
    published: BTreeSet<Key>,
    /// The keys of the signed records among them (see [`PUBLISHED_SIGNED_META`]).
    published_signed: BTreeSet<Key>,
    /// `published` changed since it was last saved.
    published_dirty: bool,
    /// A save of `published` is under way (one at a time, so an older list never lands after a newer one).
    published_saving: Rc<Cell<bool>>,
    subscribers: Vec<mpsc::UnboundedSender<NodeEvent>>,
    /// Losers of crossed dials, open until the peer closes them or until the time given (see [`Io::linger`]).
    lingering: Vec<(Instant, mpsc::Sender<Message>)>,
    /// Messages carried for transports (ours and others'), and the set of peers we hold links with.
    relay: Relay,
    /// What the node must hear of the links its requests wait on, once its outputs are out (see
    /// [`Driver::dispatch_outputs`]).
    link_news: Vec<LinkNews>,
    generation: u64,
    tick: u64,
}

/// News for the node of a link its requests wait on.
enum LinkNews {
    /// Requests to the peer wait on a dial ([`Node::dialing`]).
    Dialing(NodeId),
    /// The peer cannot be reached ([`Node::unreachable`]).
    Unreachable(NodeId),
}

impl<T: Transport, S: Store + 'static> Driver<T, S> {
    async fn restore(&mut self, clock: &impl Clock) {
        let now = clock.now();
        match self.io.store.get_meta(PUBLISHED_META).await {
            Ok(Some(bytes)) => self.io.published = decode_keys(&bytes),
            Ok(None) => {}
            Err(e) => tracing::warn!("the list of our own records not read (they are kept as others'): {e}"),
        }
        match self.io.store.get_meta(PUBLISHED_SIGNED_META).await {
            Ok(Some(bytes)) => self.io.published_signed = decode_keys(&bytes),
            Ok(None) if self.io.published.is_empty() => {}
            // A store older than the list, or a list that cannot be read: made once from our records.
            other => {
                if let Err(e) = other {
                    tracing::warn!("the list of our own signed records not read (made again): {e}");
                }
                for key in &self.io.published {
                    if let Ok(Some(r)) = read_record(&*self.io.store, key).await {
                        if r.signed.is_some() {
                            self.io.published_signed.insert(*key);
                        }
                    }
                }
                self.io.published_dirty = true;
            }
        }
        match self.io.store.records().await {
            Ok(records) => {
                for r in records {
                    let own = self.io.published.contains(&r.key);
                    self.node.restore_record(now, r.key, r.expires, r.size, own);
                }
            }
            Err(e) => tracing::warn!("stored records not restored: {e}"),
        }
        match self.io.store.load_contacts().await {
            Ok(contacts) => {
                for c in contacts {
                    self.node.add_contact(now, c);
                }
            }
            Err(e) => tracing::warn!("saved routing table not restored, starting without it: {e}"),
        }
    }

    async fn run(
        &mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        incoming: LocalBoxStream<'static, PeerLink>,
        relay_out: mpsc::Receiver<Relayed>,
        clock: &impl Clock,
    ) {
        let mut incoming = incoming.fuse();
        let mut relay_out = relay_out.fuse();
        let mut next_save = clock.now() + self.io.config.save_interval;
        let mut next_floor = clock.now();
        loop {
            self.dispatch_outputs(clock.now());
            if self.io.published_dirty && !self.io.published_saving.get() {
                self.save_published();
            }
            if clock.now() >= next_save {
                next_save = clock.now() + self.io.config.save_interval;
                self.save_routing_table();
            }
            let now = clock.now();
            if now >= next_floor && self.io.links.len() < MIN_LINKS.min(self.io.config.max_links) {
                next_floor = now + FLOOR_INTERVAL;
                self.io.keep_floor(&self.node);
            }
            self.io.lingering.retain(|(until, tx)| *until > now && !tx.is_closed());
            let lingering = self.io.lingering.iter().map(|(until, _)| *until).min();
            let deadline = self.node.poll_timeout().map_or(next_save, |t| t.min(next_save));
            let deadline = lingering.map_or(deadline, |t| t.min(deadline));
            let wake = clock.sleep_until(deadline);
            futures::select_biased! {
                cmd = commands.next() => match cmd {
                    Some(Command::Shutdown) | None => break,
                    Some(cmd) => self.command(clock.now(), cmd),
                },
                link = incoming.next() => if let Some(link) = link { self.io.add_link(link, &self.node, false, clock.now()) },
                item = self.io.receivers.select_next_some() => self.received(clock.now(), item),
                dialed = self.io.dials.select_next_some() => self.io.dialed(dialed, &self.node, clock.now()),
                relayed = relay_out.select_next_some() => {
                    if let Some((to, msg)) = self.io.relay.send(relayed) {
                        self.io.send_on_link(to, msg);
                    }
                }
                done = self.io.store_ops.select_next_some() => self.node.handle_store_result(clock.now(), done.0, done.1),
                () = self.io.reads.select_next_some() => {}
                _ = wake.fuse() => self.node.handle_timeout(clock.now()),
            }
        }
        if self.io.published_dirty {
            save_lists(&*self.io.store, self.io.published_lists()).await;
        }
        let contacts = self.table_snapshot();
        if let Err(e) = self.io.store.save_contacts(&contacts).await {
            tracing::warn!("routing table not saved: {e}");
        }
    }

    /// What of the routing table is saved: the k most recently seen of each bucket (deep buckets may hold
    /// many more; they refill after a restart from the peers that speak to us).
    fn table_snapshot(&self) -> Vec<Contact> {
        self.node.routing_table().snapshot(self.node.config().k)
    }

    /// Saves the keys of our own records in the background: after a restart they are republished and
    /// never make way for others'. The loop calls it when the list changed and no save is under way, so a
    /// file's thousands of chunk puts cost a few saves, not one each.
    fn save_published(&mut self) {
        let lists = self.io.published_lists();
        let store = Rc::clone(&self.io.store);
        let saving = Rc::clone(&self.io.published_saving);
        saving.set(true);
        self.io.published_dirty = false;
        self.io.reads.push(
            async move {
                save_lists(&*store, lists).await;
                saving.set(false);
            }
            .boxed_local(),
        );
    }

    /// Saves the routing table in the background.
    fn save_routing_table(&mut self) {
        let contacts = self.table_snapshot();
        let store = Rc::clone(&self.io.store);
        self.io.reads.push(
            async move {
                if let Err(e) = store.save_contacts(&contacts).await {
                    tracing::warn!("routing table not saved: {e}");
                }
            }
            .boxed_local(),
        );
    }

    fn command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Bootstrap(seeds, tx) => {
                let q = self.node.bootstrap(now, seeds);
                self.io.waiters.insert(q, Waiter::Lookup(tx));
            }
            Command::FindNode(target, tx) => {
                let q = self.node.find_node(now, target);
                self.io.waiters.insert(q, Waiter::Lookup(tx));
            }
            Command::Put(record, cas, tx) => {
                let (seq, key) = (record.seq(), record.key);
                let q = self.node.put_cas(now, record, cas);
                self.io.waiters.insert(q, Waiter::Put(tx, seq));
                // A put refused here (an older version, a record the policy refuses) made nothing ours.
                if self.node.is_own(&key) {
                    self.io.published_dirty |= self.io.published.insert(key);
                    if seq.is_some() {
                        self.io.published_dirty |= self.io.published_signed.insert(key);
                    }
                }
            }
            Command::Get(key, tx) => {
                let q = self.node.get(now, key);
                self.io.waiters.insert(q, Waiter::Get(tx));
            }
            Command::GetLocal(key, tx) => {
                let store = Rc::clone(&self.io.store);
                self.io.reads.push(
                    async move {
                        let _ = tx.send(read_record(&*store, &key).await.ok().flatten());
                    }
                    .boxed_local(),
                );
            }
            Command::IsPublished(key, tx) => {
                let _ = tx.send(self.node.is_own(&key));
            }
            Command::Stats(tx) => {
                let _ = tx.send(self.node.stats().clone());
            }
            Command::RelayStats(tx) => {
                let _ = tx.send(self.io.relay.stats.clone());
            }
            Command::OwnRecords(signed_only, tx) => {
                // The signed ones are listed apart, so listing them reads no chunk of a file.
                let store = Rc::clone(&self.io.store);
                let keys: Vec<Key> = if signed_only {
                    self.io.published_signed.intersection(&self.io.published).copied().collect()
                } else {
                    self.io.published.iter().copied().collect()
                };
                self.io.reads.push(
                    async move {
                        let mut records = Vec::with_capacity(keys.len());
                        for key in keys {
                            records.extend(read_record(&*store, &key).await.ok().flatten());
                        }
                        let _ = tx.send(records);
                    }
                    .boxed_local(),
                );
            }
            Command::Peers(tx) => {
                let _ = tx.send(self.io.links.values().map(|l| l.remote.clone()).collect());
            }
            Command::RoutingTable(tx) => {
                let table = self
                    .node
                    .routing_table()
                    .buckets()
                    .map(|(i, es)| (i, es.iter().map(|e| e.contact()).collect()))
                    .collect();
                let _ = tx.send(table);
            }
            Command::Subscribe(tx) => self.io.subscribers.push(tx),
            Command::Shutdown => {}
        }
    }

    /// Hands the node's outputs to the io, then tells the node of the dials its requests wait on (which
    /// may bring more outputs: a lookup goes on without a peer being dialed, or without an unreachable one).
    fn dispatch_outputs(&mut self, now: Instant) {
        loop {
            self.node.pump(now, &mut self.io);
            let news = std::mem::take(&mut self.io.link_news);
            if news.is_empty() {
                return;
            }
            for n in news {
                match n {
                    LinkNews::Dialing(peer) => self.node.dialing(now, &peer),
                    LinkNews::Unreachable(peer) => self.node.unreachable(now, &peer),
                }
            }
        }
    }

    fn received(&mut self, now: Instant, (remote, generation, msg): Incoming) {
        let current = self.io.links.get_mut(&remote.id).filter(|e| e.generation == generation);
        match (msg, current) {
            (Some(Message::Relay(m)), current) => {
                let for_us = m.to == self.io.config.local.id;
                if let Some((to, msg)) = self.io.relay.received(remote.id, *m, now.as_millis()) {
                    self.io.send_on_link(to, msg);
                } else if let Some(entry) = current.filter(|_| for_us) {
                    // The way back of a setup's signals, as above.
                    self.io.tick += 1;
                    entry.last_used = self.io.tick;
                }
            }
            // Answers can still arrive on a link we closed or replaced; it was authenticated all the same.
            (Some(msg), current) => {
                self.io.tick += 1;
                let useful = match &msg {
                    Message::Response { body, .. } => {
                        if let Response::Nodes { closer } | Response::Value { closer, .. } = body {
                            self.io.relay.learn(closer, self.io.tick);
                        }
                        true
                    }
                    Message::Request { .. } => self.node.routing_table().get(&remote.id).is_some(),
                    Message::Relay(_) => false,
                };
                if let Some(entry) = current.filter(|_| useful) {
                    entry.last_used = self.io.tick;
                }
                self.node.handle_message(now, (*remote).clone(), msg);
            }
            (None, Some(_)) => {
                self.io.remove_link(&remote.id);
                self.io.emit(NodeEvent::PeerDisconnected(remote.id));
                self.node.link_lost(now, &remote.id);
            }
            (None, None) => {}
        }
    }
}

impl<T: Transport, S: Store + 'static> Io<T, S> {
    /// The lists of our own records to save.
    fn published_lists(&self) -> PublishedLists {
        let bytes = |keys: &BTreeSet<Key>| keys.iter().flat_map(|k| *k.as_bytes()).collect();
        PublishedLists { all: bytes(&self.published), signed: bytes(&self.published_signed) }
    }

    fn emit(&mut self, event: NodeEvent) {
        self.subscribers.retain(|s| s.unbounded_send(event.clone()).is_ok());
    }

    fn core_event(&mut self, e: Event) {
        match e {
            Event::LookupFinished { query, closest, .. } => {
                if let Some(Waiter::Lookup(tx)) = self.waiters.remove(&query) {
                    let _ = tx.send(closest);
                }
            }
            Event::PutFinished { query, key, acks, attempted, refusal, stats } => {
                if let Some(Waiter::Put(tx, seq)) = self.waiters.remove(&query) {
                    let _ = tx.send(PutOutcome { key, seq, acks, attempted, refusal, stats });
                }
            }
            Event::GetFinished { query, record, .. } => {
                if let Some(Waiter::Get(tx)) = self.waiters.remove(&query) {
                    let _ = tx.send(record);
                }
            }
            Event::PeerAdded { id } => self.emit(NodeEvent::PeerAdded(id)),
            Event::PeerRemoved { id } => self.emit(NodeEvent::PeerRemoved(id)),
            Event::RecordStored { key, from } => self.emit(NodeEvent::RecordStored { key, from }),
            Event::PeerMisbehaved { from, reason } => self.emit(NodeEvent::PeerMisbehaved { from, reason }),
            _ => {}
        }
    }

    fn store_op(&mut self, id: StoreOpId, op: StoreOp) {
        let store = Rc::clone(&self.store);
        let fut = async move {
            let result = match op {
                // The store keeps the whole record (value and signature) as the core encodes it.
                StoreOp::Put { record, expires } => match encode_record(&record) {
                    Ok(bytes) => match store.put_record(record.key, bytes, expires).await {
                        Ok(()) => StoreResult::Done,
                        Err(e) => StoreResult::Failed(e.to_string()),
                    },
                    Err(e) => StoreResult::Failed(e.to_string()),
                },
                StoreOp::Get { key } => match read_record(&*store, &key).await {
                    Ok(r) => StoreResult::Value(r),
                    Err(e) => StoreResult::Failed(e.to_string()),
                },
                StoreOp::Remove { key } => match store.remove_record(&key).await {
                    Ok(()) => StoreResult::Done,
                    Err(e) => StoreResult::Failed(e.to_string()),
                },
            };
            (id, result)
        };
        self.store_ops.push(fut.boxed_local());
    }

    /// Sends a relayed message on the link to `to`, if there is one (a relayed message never makes us dial).
    /// The link counts as used: one that carries a link setup's signals is not the one to close meanwhile.
    fn send_on_link(&mut self, to: NodeId, msg: Message) {
        self.tick += 1;
        if let Some(link) = self.links.get_mut(&to) {
            link.last_used = self.tick;
            let _ = link.tx.try_send(msg);
        }
    }

    /// Dials a routing-table peer we hold no link to and are not dialing (the most recently seen first), to
    /// keep [`MIN_LINKS`].
    fn keep_floor(&mut self, node: &Node) {
        let table = node.routing_table();
        let idle = table
            .buckets()
            .flat_map(|(_, entries)| entries.iter())
            .filter(|e| !self.links.contains_key(&e.id) && !self.queued.contains_key(&e.id) && !e.addrs.is_empty())
            .max_by_key(|e| e.last_seen);
        if let Some(entry) = idle {
            let peer = entry.contact();
            tracing::debug!(peer = %peer.id, links = self.links.len(), "few links: dialing a peer of the table");
            self.dial(peer, Vec::new());
        }
    }

    /// Keeps the loser of crossed dials open without sending on it: what the peer sent on it is still
    /// handled, and the peer, which may not have the other link yet, does not see it close and lose its
    /// requests in flight. The peer closes it once the other link reaches it (both ends keep the same
    /// one); else it closes after [`CROSSED_DIALS`]. At most [`MAX_LINGERING`] at once (beyond, closed).
    fn linger(&mut self, link: PeerLink, now: Instant) {
        self.generation += 1;
        let (generation, remote) = (self.generation, Rc::new(link.remote));
        let messages = link.rx.map(move |m| (Rc::clone(&remote), generation, Some(m)));
        self.receivers.push(messages.boxed_local());
        if self.lingering.len() < MAX_LINGERING {
            self.lingering.push((now + CROSSED_DIALS, link.tx));
        }
    }

    fn remove_link(&mut self, peer: &NodeId) {
        self.links.remove(peer);
        self.relay.links().remove(peer);
    }

    fn send(&mut self, to: Contact, mut msg: Message) {
        self.tick += 1;
        // The contacts we hand out carry the relay addresses we can vouch for.
        if let Message::Response { body: Response::Nodes { closer } | Response::Value { closer, .. }, .. } = &mut msg {
            let max = self.config.core.max_addrs_per_contact;
            for c in closer {
                self.relay.annotate(c, max);
            }
        }
        if let Some(link) = self.links.get_mut(&to.id) {
            if matches!(msg, Message::Request { .. }) {
                link.last_used = self.tick;
            }
            // A full channel means the connection is not keeping up: the message is dropped and the core's
            // request timeout handles it.
            let _ = link.tx.try_send(msg);
            return;
        }
        let (id, request) = (to.id, matches!(msg, Message::Request { .. }));
        let news = if let Some(queue) = self.queued.get_mut(&id) {
            if queue.len() < self.config.max_queued_per_dial {
                queue.push(msg);
            }
            LinkNews::Dialing(id)
        } else if to.addrs.is_empty() {
            LinkNews::Unreachable(id)
        } else {
            self.dial(to, vec![msg]);
            LinkNews::Dialing(id)
        };
        // The node hears what its requests wait on.
        if request {
            self.link_news.push(news);
        }
    }

    /// Dials `peer` (with the relay addresses heard for it), `queued` waiting for the link.
    fn dial(&mut self, peer: Contact, queued: Vec<Message>) {
        let id = peer.id;
        self.queued.insert(id, queued);
        let dial = self.transport.dial(&self.relay.with_hints(peer));
        self.dials.push(async move { (id, dial.await) }.boxed_local());
    }

    fn dialed(&mut self, (id, result): (NodeId, Result<PeerLink, TransportError>), node: &Node, now: Instant) {
        let queued = self.queued.remove(&id).unwrap_or_default();
        match result {
            Ok(link) if link.remote.id == id => {
                let peer = link.remote.id;
                self.add_link(link, node, true, now);
                if let Some(entry) = self.links.get_mut(&peer) {
                    for msg in queued {
                        let _ = entry.tx.try_send(msg);
                    }
                }
            }
            // A link to someone else (the transport should have refused it) or a failed dial: the requests
            // queued on it fail.
            Ok(link) => {
                tracing::debug!(peer = %id, reached = %link.remote.id, "dial reached another peer");
                self.link_news.push(LinkNews::Unreachable(id));
            }
            Err(e) => {
                tracing::debug!(peer = %id, "dial failed: {e}");
                self.link_news.push(LinkNews::Unreachable(id));
                self.emit(NodeEvent::DialFailed { peer: id, reason: e.to_string() });
            }
        }
    }

    /// Takes a new link to its peer (`outbound`: we dialed it), unless it is the loser of crossed dials
    /// (see [`CROSSED_DIALS`]): that one lingers (see [`Io::linger`]).
    fn add_link(&mut self, link: PeerLink, node: &Node, outbound: bool, now: Instant) {
        let peer = link.remote.id;
        let dialer = if outbound { self.config.local.id } else { peer };
        if let Some(existing) = self.links.get(&peer) {
            let crossed = existing.dialer != dialer && now.saturating_since(existing.opened) < CROSSED_DIALS;
            if crossed && existing.dialer < dialer {
                self.linger(link, now);
                return;
            }
        }
        self.tick += 1;
        self.generation += 1;
        if !self.links.contains_key(&peer) && self.links.len() >= self.config.max_links {
            let known = |id: &NodeId| node.routing_table().get(id).is_some();
            let strangers = self.links.keys().filter(|id| !known(id)).count();
            let strangers_first = strangers * 2 >= self.config.max_links;
            let victim = self
                .links
                .iter()
                .filter(|(id, _)| !strangers_first || !known(id))
                .min_by_key(|(_, l)| l.last_used)
                .map(|(id, _)| *id);
            if let Some(victim) = victim {
                self.remove_link(&victim);
                self.emit(NodeEvent::PeerDisconnected(victim));
            }
        }
        let generation = self.generation;
        let remote = Rc::new(link.remote.clone());
        let tag = Rc::clone(&remote);
        let messages = link.rx.map(move |m| (Rc::clone(&tag), generation, Some(m)));
        let end = futures::stream::once(async move { (remote, generation, None) });
        self.receivers.push(messages.chain(end).boxed_local());
        self.emit(NodeEvent::PeerConnected(link.remote.clone()));
        let entry =
            LinkEntry { remote: link.remote, tx: link.tx, generation, last_used: self.tick, dialer, opened: now };
        self.links.insert(peer, entry);
        self.relay.links().insert(peer);
    }
}

impl<T: Transport, S: Store + 'static> OutputSink for Io<T, S> {
    fn send(&mut self, _now: Instant, to: Contact, msg: Message) {
        self.send(to, msg);
    }

    fn store(&mut self, _now: Instant, id: StoreOpId, op: StoreOp) -> Option<StoreResult> {
        self.store_op(id, op);
        None
    }

    fn event(&mut self, _now: Instant, event: Event) {
        self.core_event(event);
    }
}

/// The key a program uses for a named value.
pub fn key_for(name: &str) -> Key {
    Key::from_name(name.as_bytes())
}
