//! The virtual network and clock.

use crate::wheel::Wheel;
use dht_core::{
    Config, Contact, Event, Instant, Key, Message, Node, NodeId, Output, QueryId, Record, Request, Response, StoreOp,
    StoreResult,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Network model and node configuration of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of everything random: ids, latencies, loss, node rngs.
    pub seed: u64,
    /// Smallest round-trip time of a link, in ms.
    pub rtt_min_ms: u64,
    /// Largest round-trip time of a link, in ms.
    pub rtt_max_ms: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Configuration of every node.
    pub node: Config,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { seed: 1, rtt_min_ms: 50, rtt_max_ms: 150, loss: 0.0, node: Config::default() }
    }
}

/// Message counters of the virtual network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages dropped by the loss model.
    pub lost: u64,
    /// Messages addressed to departed or unknown nodes.
    pub to_dead: u64,
    /// Inputs handled (deliveries and timer wake-ups).
    pub steps: u64,
}

/// A query outcome reported by a node.
#[derive(Debug, Clone)]
pub struct SimEvent {
    /// Index of the node that reported it.
    pub node: usize,
    /// When.
    pub at: Instant,
    /// What.
    pub event: Event,
}

enum Action {
    Deliver { to: usize, from: NodeId, msg: Message },
    Timer { node: usize },
}

/// Node ids are uniformly random, so their first eight bytes are already a good hash.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(w);
        }
    }
}

struct SimNode {
    node: Option<Node>,
    id: NodeId,
    store: BTreeMap<Key, Vec<u8>>,
    timer: Option<Instant>,
    /// Lies to everyone (see [`Sim::set_malicious`]).
    malicious: bool,
}

/// A swarm of nodes on a virtual network. Nodes are numbered in the order they were added.
pub struct Sim {
    cfg: SimConfig,
    now: Instant,
    rng: ChaCha8Rng,
    nodes: Vec<SimNode>,
    index: HashMap<NodeId, usize, BuildHasherDefault<IdHasher>>,
    /// Slots of scheduled actions in [`Sim::actions`], by time then scheduling order.
    queue: Wheel<usize>,
    actions: Vec<Option<Action>>,
    free: Vec<usize>,
    seq: u64,
    events: Vec<SimEvent>,
    stats: NetStats,
    /// Ids of the malicious nodes, which they hand out to each other.
    colluders: Vec<NodeId>,
}

/// Virtual time starts here (not at zero, so "now minus a duration" stays meaningful).
const EPOCH_MS: u64 = 1_000_000;

impl Sim {
    /// An empty network.
    pub fn new(cfg: SimConfig) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Sim {
            cfg,
            now: Instant::from_millis(EPOCH_MS),
            rng,
            nodes: Vec::new(),
            index: HashMap::default(),
            queue: Wheel::new(),
            actions: Vec::new(),
            free: Vec::new(),
            seq: 0,
            events: Vec::new(),
            stats: NetStats::default(),
            colluders: Vec::new(),
        }
    }

    /// Virtual now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual milliseconds since the start.
    pub fn elapsed_ms(&self) -> u64 {
        self.now.as_millis() - EPOCH_MS
    }

    /// Network counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The simulation's own random source (seeded), for harness choices.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// A fresh random id from the seeded source.
    pub fn random_id(&mut self) -> NodeId {
        let mut b = [0u8; 32];
        self.rng.fill_bytes(&mut b);
        NodeId::from_bytes(b)
    }

    /// Adds a node with a random id (its public key is 32 random bytes) and returns its index.
    pub fn add_node(&mut self) -> usize {
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        let id = NodeId::from_public_key(&key);
        let seed = self.rng.next_u64();
        let node = Node::new(self.cfg.node.clone(), Contact::bare(id), seed, self.now);
        let i = self.nodes.len();
        self.nodes.push(SimNode { node: Some(node), id, store: BTreeMap::new(), timer: None, malicious: false });
        self.index.insert(id, i);
        i
    }

    /// Number of nodes ever added (alive or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was ever added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].id
    }

    /// The index of the node with id `id`.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Whether node `i` is running.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].node.is_some()
    }

    /// Node `i`'s state machine, if alive.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].node.as_ref()
    }

    /// Node `i`'s state machine, mutably; outputs it queues are delivered at the next [`Sim::step`] that
    /// touches the node, or drain them yourself.
    pub fn node_mut(&mut self, i: usize) -> Option<&mut Node> {
        self.nodes[i].node.as_mut()
    }

    /// Records held by node `i`'s store.
    pub fn store_of(&self, i: usize) -> &BTreeMap<Key, Vec<u8>> {
        &self.nodes[i].store
    }

    /// Makes node `i` malicious: it still joins, pings and looks up like anyone, but every `FindNode` and
    /// `FindValue` it is asked gets lies (made-up ids just around the target, and other malicious nodes), every
    /// `FindValue` a forged value, and every store an acknowledgement while the record is dropped.
    pub fn set_malicious(&mut self, i: usize) {
        if !self.nodes[i].malicious {
            self.nodes[i].malicious = true;
            self.colluders.push(self.nodes[i].id);
        }
    }

    /// Whether node `i` is malicious.
    pub fn is_malicious(&self, i: usize) -> bool {
        self.nodes[i].malicious
    }

    /// Contacts a liar hands out for `target`: ids closer to it than any real node is likely to be (they
    /// do not exist, so asking them times out), and fellow liars.
    fn lies(&mut self, target: &NodeId) -> Vec<Contact> {
        let k = self.cfg.node.k;
        // Real nodes share about log2(n) leading bits with a target; these share 16 more.
        let shared = (usize::BITS - self.nodes.len().leading_zeros()) as usize + 16;
        let mut out = Vec::with_capacity(k);
        for n in 0..k {
            if n % 2 == 1 && !self.colluders.is_empty() {
                let c = self.colluders[(self.rng.next_u64() % self.colluders.len() as u64) as usize];
                out.push(Contact::bare(c));
                continue;
            }
            let mut b = *target.as_bytes();
            for (i, byte) in b.iter_mut().enumerate() {
                let keep = shared.saturating_sub(i * 8).min(8);
                let mask = if keep >= 8 { 0xff } else { !(0xffu8 >> keep) };
                *byte = (*byte & mask) | ((self.rng.next_u32() as u8) & !mask);
            }
            out.push(Contact::bare(NodeId::from_bytes(b)));
        }
        out
    }

    /// The answer a malicious node gives instead of its own, if it lies about this request.
    fn lie(&mut self, msg: &Message) -> Option<Message> {
        let Message::Request { id, body } = msg else { return None };
        let body = match body {
            Request::FindNode { target } => Response::Nodes { closer: self.lies(target) },
            Request::FindValue { key } => {
                let record = Record { key: *key, value: b"forged".to_vec() };
                Response::Value { record, ttl_secs: 3600 }
            }
            Request::Store { .. } => Response::StoreAck { refused: None },
            Request::Ping => return None,
        };
        Some(Message::Response { id: *id, body })
    }

    /// Node `i` leaves without notice: its state is dropped and messages to it vanish.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].node = None;
        self.nodes[i].store = BTreeMap::new();
        self.nodes[i].timer = None;
    }

    /// Runs `f` on node `i` at virtual now (a command such as `find_node`), then delivers its outputs.
    /// Returns `None` if the node is dead.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> Option<R> {
        let now = self.now;
        let r = f(self.nodes[i].node.as_mut()?, now);
        self.drain(i);
        Some(r)
    }

    /// Query outcomes reported since the last call.
    pub fn take_events(&mut self) -> Vec<SimEvent> {
        std::mem::take(&mut self.events)
    }

    /// Round-trip time of the link between nodes `a` and `b`: fixed per link, drawn from the seed.
    pub fn rtt_ms(&self, a: usize, b: usize) -> u64 {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let h = splitmix64(self.cfg.seed ^ splitmix64(lo as u64) ^ splitmix64((hi as u64).wrapping_mul(0x9E37_79B9)));
        let span = self.cfg.rtt_max_ms.saturating_sub(self.cfg.rtt_min_ms) + 1;
        self.cfg.rtt_min_ms + h % span
    }

    fn schedule(&mut self, at: Instant, action: Action) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.actions[slot] = Some(action);
                slot
            }
            None => {
                self.actions.push(Some(action));
                self.actions.len() - 1
            }
        };
        self.queue.push(at, self.seq, slot);
    }

    fn drain(&mut self, i: usize) {
        let now = self.now;
        loop {
            let Some(node) = self.nodes[i].node.as_mut() else { return };
            let Some(out) = node.poll_output() else { break };
            match out {
                Output::Send { to, msg } => self.send(i, to.id, msg),
                Output::Store { id, op } => {
                    let sim_node = &mut self.nodes[i];
                    let result = match op {
                        StoreOp::Put { record, .. } => {
                            sim_node.store.insert(record.key, record.value);
                            StoreResult::Done
                        }
                        StoreOp::Get { key } => StoreResult::Value(sim_node.store.get(&key).cloned()),
                        StoreOp::Remove { key } => {
                            sim_node.store.remove(&key);
                            StoreResult::Done
                        }
                    };
                    if let Some(node) = sim_node.node.as_mut() {
                        node.handle_store_result(now, id, result);
                    }
                }
                Output::Event(event) => {
                    if matches!(
                        event,
                        Event::LookupFinished { .. } | Event::PutFinished { .. } | Event::GetFinished { .. }
                    ) {
                        self.events.push(SimEvent { node: i, at: now, event });
                    }
                }
            }
        }
        let Some(node) = self.nodes[i].node.as_ref() else { return };
        if let Some(t) = node.poll_timeout() {
            let t = t.max(now);
            if self.nodes[i].timer.is_none_or(|cur| t < cur) {
                self.nodes[i].timer = Some(t);
                self.schedule(t, Action::Timer { node: i });
            }
        }
    }

    fn send(&mut self, from: usize, to: NodeId, msg: Message) {
        self.stats.sent += 1;
        let Some(&j) = self.index.get(&to) else {
            self.stats.to_dead += 1;
            return;
        };
        if self.cfg.loss > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < self.cfg.loss {
            self.stats.lost += 1;
            return;
        }
        let one_way = self.rtt_ms(from, j) / 2;
        let at = self.now + core::time::Duration::from_millis(one_way);
        let from_id = self.nodes[from].id;
        self.schedule(at, Action::Deliver { to: j, from: from_id, msg });
    }

    /// Handles the next scheduled action. Returns `false` when nothing is scheduled.
    pub fn step(&mut self) -> bool {
        let Some((at, slot)) = self.queue.pop() else { return false };
        let action = self.actions[slot].take().expect("a scheduled slot holds its action");
        self.free.push(slot);
        self.now = self.now.max(at);
        self.stats.steps += 1;
        let now = self.now;
        match action {
            Action::Deliver { to, from, msg } => {
                if self.nodes[to].node.is_none() {
                    self.stats.to_dead += 1;
                    return true;
                }
                if self.nodes[to].malicious {
                    if let Some(lie) = self.lie(&msg) {
                        self.stats.delivered += 1;
                        self.send(to, from, lie);
                        return true;
                    }
                }
                let Some(node) = self.nodes[to].node.as_mut() else { return true };
                self.stats.delivered += 1;
                node.handle_message(now, Contact::bare(from), msg);
                self.drain(to);
            }
            Action::Timer { node: i } => {
                if self.nodes[i].timer != Some(at) {
                    return true;
                }
                self.nodes[i].timer = None;
                let Some(node) = self.nodes[i].node.as_mut() else { return true };
                // The deadline may have moved later (a request was answered): then only re-arm.
                if node.poll_timeout().is_some_and(|t| t <= now) {
                    node.handle_timeout(now);
                }
                self.drain(i);
            }
        }
        true
    }

    /// Handles everything scheduled up to and including `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Instant) {
        while self.queue.peek().is_some_and(|at| at <= t) {
            self.step();
        }
        self.now = self.now.max(t);
        self.queue.advance(self.now.as_millis());
    }

    /// Runs until the query `q` of node `i` reports its outcome or `limit` passes; returns the outcome.
    /// Other outcomes seen meanwhile stay queued for [`Sim::take_events`].
    pub fn run_query(&mut self, i: usize, q: QueryId, limit: Instant) -> Option<Event> {
        loop {
            if let Some(pos) = self.events.iter().position(|e| e.node == i && query_of(&e.event) == Some(q)) {
                return Some(self.events.remove(pos).event);
            }
            match self.queue.peek() {
                Some(at) if at <= limit => {
                    self.step();
                }
                _ => return None,
            }
        }
    }
}

/// The query an outcome event belongs to.
pub fn query_of(e: &Event) -> Option<QueryId> {
    match e {
        Event::LookupFinished { query, .. } | Event::PutFinished { query, .. } | Event::GetFinished { query, .. } => {
            Some(*query)
        }
        _ => None,
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
