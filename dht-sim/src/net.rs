//! The virtual network and clock.

use crate::wheel::Wheel;
use dht_core::{
    Config, ConfigError, Contact, Event, Instant, Key, MemoryRecords, Message, Node, NodeId, OutputSink, QueryId,
    Record, Request, RequestId, Response, StoreOp, StoreOpId, StoreResult, ValidConfig,
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
    /// Nodes with inputs in one time window (see [`Sim::run_until`]) from which they are handled on
    /// several threads (rayon's pool); below, on the calling thread. It changes speed only, never results.
    pub parallel_min: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { seed: 1, rtt_min_ms: 50, rtt_max_ms: 150, loss: 0.0, node: Config::default(), parallel_min: 32 }
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
    store: MemoryRecords,
    timer: Option<Instant>,
    /// Lies to everyone (see [`Sim::set_malicious`]).
    malicious: bool,
    /// A liar's copies of the records it was asked to store: the first version of each (at most
    /// [`LIAR_MEMORY`]), to replay.
    seen: BTreeMap<Key, Record>,
    /// The node's own random source for the network's choices about what it sends (loss, lies), so
    /// that nodes handled in parallel draw the same numbers as one after another.
    rng: u64,
}

impl SimNode {
    fn next_u64(&mut self) -> u64 {
        next_u64(&mut self.rng)
    }
}

/// The next number of a node's network random source.
fn next_u64(rng: &mut u64) -> u64 {
    *rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
    splitmix64(*rng)
}

/// What handling one node's inputs produced, applied to the shared state afterwards.
#[derive(Default)]
struct Outbox {
    /// Actions to schedule, in the order they were made.
    actions: Vec<(Instant, Action)>,
    events: Vec<SimEvent>,
    stats: NetStats,
}

/// One node's inputs of a time window, and what handling them produced.
#[derive(Default)]
struct Group {
    node: usize,
    actions: Vec<(Instant, Action)>,
    out: Outbox,
}

/// The shared, read-only part of the network that handling a node's inputs needs.
struct Ctx<'a> {
    cfg: &'a SimConfig,
    index: &'a HashMap<NodeId, usize, BuildHasherDefault<IdHasher>>,
    colluders: &'a [NodeId],
    nodes_len: usize,
}

/// A swarm of nodes on a virtual network. Nodes are numbered in the order they were added.
pub struct Sim {
    cfg: SimConfig,
    /// `cfg.node`, validated: what every node runs with.
    node_config: ValidConfig,
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
    /// Buffers of [`Sim::run_window`], kept from window to window.
    scratch: Scratch,
}

/// Reused buffers: a window allocates nothing once they have grown.
#[derive(Default)]
struct Scratch {
    due: Vec<(usize, Instant, usize)>,
    groups: Vec<Group>,
    outbox: Outbox,
}

/// Virtual time starts here (not at zero, so "now minus a duration" stays meaningful).
const EPOCH_MS: u64 = 1_000_000;

impl Sim {
    /// An empty network; fails when the nodes' configuration is impossible.
    pub fn new(cfg: SimConfig) -> Result<Self, ConfigError> {
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let node_config = cfg.node.clone().validate()?;
        Ok(Sim {
            cfg,
            node_config,
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
            scratch: Scratch::default(),
        })
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
        let node = Node::new(self.node_config.clone(), Contact::bare(id), seed, self.now);
        let i = self.nodes.len();
        let rng = splitmix64(seed ^ 0x5EED);
        self.nodes.push(SimNode {
            node: Some(node),
            id,
            store: MemoryRecords::new(),
            timer: None,
            malicious: false,
            seen: BTreeMap::new(),
            rng,
        });
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
    pub fn store_of(&self, i: usize) -> &MemoryRecords {
        &self.nodes[i].store
    }

    /// Makes node `i` malicious: it still joins, pings and looks up like anyone, but every `FindNode` and
    /// `FindValue` it is asked gets lies (made-up ids just around the target, and other malicious nodes), and
    /// every store an acknowledgement while the record is dropped. It keeps the first version of each
    /// record it is asked to store; a `FindValue` gets that old version replayed or a forged newer one (the
    /// owner's key and salt, a higher `seq`, another value, a made-up signature), or a forged unsigned value
    /// for a record it never saw. When it is asked to store a newer version of a record it kept, it
    /// replays the old one, with a one-second TTL, to the k closest it knows (a replay and an attempt to
    /// cut the record's life short).
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

    /// Node `i` leaves without notice: its state is dropped and messages to it vanish.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].node = None;
        self.nodes[i].store = MemoryRecords::new();
        self.nodes[i].timer = None;
    }

    /// Runs `f` on node `i` at virtual now (a command such as `find_node`), then delivers its outputs.
    /// Returns `None` if the node is dead.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> Option<R> {
        let now = self.now;
        let r = f(self.nodes[i].node.as_mut()?, now);
        let mut out = std::mem::take(&mut self.scratch.outbox);
        let ctx = Ctx { cfg: &self.cfg, index: &self.index, colluders: &self.colluders, nodes_len: self.nodes.len() };
        drain(&ctx, &mut self.nodes[i], i, now, None, &mut out);
        self.apply(&mut out);
        self.scratch.outbox = out;
        Some(r)
    }

    /// Query outcomes reported since the last call.
    pub fn take_events(&mut self) -> Vec<SimEvent> {
        std::mem::take(&mut self.events)
    }

    /// Round-trip time of the link between nodes `a` and `b`: fixed per link, drawn from the seed.
    pub fn rtt_ms(&self, a: usize, b: usize) -> u64 {
        rtt_ms(&self.cfg, a, b)
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

    /// Schedules what a node's handling produced, and keeps its events and counters.
    fn apply(&mut self, out: &mut Outbox) {
        for (at, action) in out.actions.drain(..) {
            if let Action::Timer { node } = action {
                // A timer replaced before it was scheduled is not scheduled.
                if self.nodes[node].timer != Some(at) {
                    continue;
                }
            }
            self.schedule(at, action);
        }
        self.events.append(&mut out.events);
        let (s, o) = (&mut self.stats, std::mem::take(&mut out.stats));
        s.sent += o.sent;
        s.delivered += o.delivered;
        s.lost += o.lost;
        s.to_dead += o.to_dead;
        s.steps += o.steps;
    }

    /// Handles the next scheduled action. Returns `false` when nothing is scheduled.
    pub fn step(&mut self) -> bool {
        let Some((at, slot)) = self.queue.pop() else { return false };
        let action = self.actions[slot].take().expect("a scheduled slot holds its action");
        self.free.push(slot);
        self.now = self.now.max(at);
        let i = action.node();
        let mut out = std::mem::take(&mut self.scratch.outbox);
        let ctx = Ctx { cfg: &self.cfg, index: &self.index, colluders: &self.colluders, nodes_len: self.nodes.len() };
        handle(&ctx, &mut self.nodes[i], i, self.now, action, None, &mut out);
        self.apply(&mut out);
        self.scratch.outbox = out;
        true
    }

    /// Handles everything scheduled up to and including `t`, then sets the clock to `t`.
    ///
    /// Time advances in windows no longer than the shortest one-way link delay: nothing a node sends
    /// within a window can arrive before it ends, so the nodes with inputs in a window are handled in
    /// parallel, each in its own time order, and what they send is scheduled afterwards in node order.
    /// The result does not depend on the number of threads.
    pub fn run_until(&mut self, t: Instant) {
        self.run_before(t + core::time::Duration::from_millis(1));
        self.now = self.now.max(t);
        self.queue.advance(self.now.as_millis());
    }

    /// The shortest one-way delay of a link: nothing a node sends arrives sooner.
    pub fn lookahead(&self) -> core::time::Duration {
        core::time::Duration::from_millis(self.cfg.rtt_min_ms / 2)
    }

    /// Handles everything due before `end` (not at it), in windows as [`Sim::run_until`] does; the clock
    /// stays at the last action handled.
    pub fn run_before(&mut self, end: Instant) {
        let window = self.lookahead();
        while let Some(start) = self.queue.peek().filter(|at| *at < end) {
            if window.is_zero() {
                self.step();
            } else {
                self.run_window((start + window).min(end));
            }
        }
    }

    /// Moves the clock forward to `t` *without* handling what is due before it, so that the harness can
    /// act at `t` (add a node, start a query) ahead of those actions. Sound only when what it does cannot
    /// reach a node before the actions due before `t + lookahead()` are handled: every message takes at
    /// least [`Sim::lookahead`], so anything a new node or a new query sends arrives after them.
    pub fn skip_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
    }

    /// Handles every action due before `end` (see [`Sim::run_until`]).
    fn run_window(&mut self, end: Instant) {
        let Scratch { mut due, mut groups, outbox } = std::mem::take(&mut self.scratch);
        // The window's actions in time order, then by node (a stable sort keeps each node's in time order).
        due.clear();
        while self.queue.peek().is_some_and(|at| at < end) {
            let (at, slot) = self.queue.pop().expect("peeked");
            self.now = self.now.max(at);
            let node = self.actions[slot].as_ref().expect("a scheduled slot holds its action").node();
            due.push((node, at, slot));
        }
        due.sort_by_key(|(i, _, _)| *i);
        let mut used = 0;
        for &(i, at, slot) in &due {
            let action = self.actions[slot].take().expect("a scheduled slot holds its action");
            self.free.push(slot);
            if used == 0 || groups[used - 1].node != i {
                if used == groups.len() {
                    groups.push(Group::default());
                }
                groups[used].node = i;
                used += 1;
            }
            groups[used - 1].actions.push((at, action));
        }
        // Disjoint mutable borrows of the nodes with inputs, in index order.
        let nodes_len = self.nodes.len();
        let mut work: Vec<(&mut SimNode, &mut Group)> = Vec::with_capacity(used);
        let mut rest: &mut [SimNode] = &mut self.nodes;
        let mut base = 0;
        for g in groups[..used].iter_mut() {
            let i = g.node;
            let (node, tail) =
                std::mem::take(&mut rest)[i - base..].split_first_mut().expect("a node with inputs exists");
            work.push((node, g));
            rest = tail;
            base = i + 1;
        }
        let ctx = Ctx { cfg: &self.cfg, index: &self.index, colluders: &self.colluders, nodes_len };
        let run = |(node, g): &mut (&mut SimNode, &mut Group)| {
            let Group { node: i, actions, out } = &mut **g;
            handle_all(&ctx, node, *i, actions, end, out);
        };
        if work.len() >= self.cfg.parallel_min.max(1) && rayon::current_num_threads() > 1 {
            use rayon::prelude::*;
            work.par_iter_mut().for_each(run);
        } else {
            work.iter_mut().for_each(run);
        }
        drop(work);
        for g in groups[..used].iter_mut() {
            self.apply(&mut g.out);
        }
        self.scratch = Scratch { due, groups, outbox };
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

impl Action {
    /// The node the action is for.
    fn node(&self) -> usize {
        match self {
            Action::Deliver { to, .. } => *to,
            Action::Timer { node } => *node,
        }
    }
}

fn rtt_ms(cfg: &SimConfig, a: usize, b: usize) -> u64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let h = splitmix64(cfg.seed ^ splitmix64(lo as u64) ^ splitmix64((hi as u64).wrapping_mul(0x9E37_79B9)));
    let span = cfg.rtt_max_ms.saturating_sub(cfg.rtt_min_ms) + 1;
    cfg.rtt_min_ms + h % span
}

/// Handles node `i`'s actions of one window (in time order; the vector is left empty) and the timers they
/// set that fall before `end`.
fn handle_all(
    ctx: &Ctx,
    sn: &mut SimNode,
    i: usize,
    actions: &mut Vec<(Instant, Action)>,
    end: Instant,
    out: &mut Outbox,
) {
    let mut pending = actions.drain(..).peekable();
    loop {
        // The node's own timer, when it falls within the window before the next input, goes first.
        let next_at = pending.peek().map(|(at, _)| *at);
        let timer = sn.timer.filter(|t| *t < end && next_at.is_none_or(|n| *t < n));
        let (at, action) = match timer {
            Some(t) => (t, Action::Timer { node: i }),
            None => match pending.next() {
                Some(a) => a,
                None => return,
            },
        };
        handle(ctx, sn, i, at, action, Some(end), out);
    }
}

/// Handles one action of node `i` at `now`. With `window_end`, a timer the node sets before it stays with
/// the node (handled by [`handle_all`]) instead of being scheduled.
fn handle(
    ctx: &Ctx,
    sn: &mut SimNode,
    i: usize,
    now: Instant,
    action: Action,
    window_end: Option<Instant>,
    out: &mut Outbox,
) {
    out.stats.steps += 1;
    match action {
        Action::Deliver { from, msg, .. } => {
            if sn.node.is_none() {
                out.stats.to_dead += 1;
                return;
            }
            if sn.malicious {
                if let Some((lie, attacks)) = lie(ctx, sn, &msg) {
                    out.stats.delivered += 1;
                    send(ctx, (sn.id, &mut sn.rng), i, now, from, lie, out);
                    for (to, msg) in attacks {
                        send(ctx, (sn.id, &mut sn.rng), i, now, to, msg, out);
                    }
                    return;
                }
            }
            let Some(node) = sn.node.as_mut() else { return };
            out.stats.delivered += 1;
            node.handle_message(now, Contact::bare(from), msg);
            drain(ctx, sn, i, now, window_end, out);
        }
        Action::Timer { .. } => {
            if sn.timer != Some(now) {
                return;
            }
            sn.timer = None;
            let Some(node) = sn.node.as_mut() else { return };
            // The deadline may have moved later (a request was answered): then only re-arm.
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
            }
            drain(ctx, sn, i, now, window_end, out);
        }
    }
}

/// Delivers node `i`'s outputs: sends, store operations (answered at once), events; then re-arms its timer.
/// Where a simulated node's outputs go: sends onto the virtual network, storage to its own memory store
/// (answered at once), finished queries to the run's events.
struct SimSink<'a, 'c> {
    ctx: &'a Ctx<'c>,
    from: usize,
    id: NodeId,
    rng: &'a mut u64,
    store: &'a mut MemoryRecords,
    out: &'a mut Outbox,
}

impl OutputSink for SimSink<'_, '_> {
    fn send(&mut self, now: Instant, to: Contact, msg: Message) {
        send(self.ctx, (self.id, &mut *self.rng), self.from, now, to.id, msg, self.out);
    }

    fn store(&mut self, _now: Instant, _id: StoreOpId, op: StoreOp) -> Option<StoreResult> {
        Some(self.store.apply(op))
    }

    fn event(&mut self, now: Instant, event: Event) {
        if matches!(event, Event::LookupFinished { .. } | Event::PutFinished { .. } | Event::GetFinished { .. }) {
            self.out.events.push(SimEvent { node: self.from, at: now, event });
        }
    }
}

fn drain(ctx: &Ctx, sn: &mut SimNode, i: usize, now: Instant, window_end: Option<Instant>, out: &mut Outbox) {
    let SimNode { node, id, store, rng, .. } = sn;
    let Some(node) = node.as_mut() else { return };
    node.pump(now, &mut SimSink { ctx, from: i, id: *id, rng, store, out });
    let Some(node) = sn.node.as_ref() else { return };
    if let Some(t) = node.poll_timeout() {
        let t = t.max(now);
        if sn.timer.is_none_or(|cur| t < cur) {
            sn.timer = Some(t);
            // Within the window the node keeps its timer; beyond, it is scheduled (unless replaced first).
            if window_end.is_none_or(|end| t >= end) {
                out.actions.push((t, Action::Timer { node: i }));
            }
        }
    }
}

/// Puts `msg` from node `from` (id and random source `sender`) on the virtual network, unless lost.
fn send(ctx: &Ctx, sender: (NodeId, &mut u64), from: usize, now: Instant, to: NodeId, msg: Message, out: &mut Outbox) {
    let (from_id, rng) = sender;
    out.stats.sent += 1;
    let Some(&j) = ctx.index.get(&to) else {
        out.stats.to_dead += 1;
        return;
    };
    if ctx.cfg.loss > 0.0 && (next_u64(rng) as f64 / u64::MAX as f64) < ctx.cfg.loss {
        out.stats.lost += 1;
        return;
    }
    let one_way = rtt_ms(ctx.cfg, from, j) / 2;
    let at = now + core::time::Duration::from_millis(one_way);
    out.actions.push((at, Action::Deliver { to: j, from: from_id, msg }));
}

/// Contacts a liar hands out for `target`: ids closer to it than any real node is likely to be (they
/// do not exist, so asking them times out), and fellow liars.
fn lies(ctx: &Ctx, sn: &mut SimNode, target: &NodeId) -> Vec<Contact> {
    let k = ctx.cfg.node.k;
    // Real nodes share about log2(n) leading bits with a target; these share 16 more.
    let shared = (usize::BITS - ctx.nodes_len.leading_zeros()) as usize + 16;
    let mut out = Vec::with_capacity(k);
    for n in 0..k {
        if n % 2 == 1 && !ctx.colluders.is_empty() {
            let c = ctx.colluders[(sn.next_u64() % ctx.colluders.len() as u64) as usize];
            out.push(Contact::bare(c));
            continue;
        }
        let mut b = *target.as_bytes();
        for (i, byte) in b.iter_mut().enumerate() {
            let keep = shared.saturating_sub(i * 8).min(8);
            let mask = if keep >= 8 { 0xff } else { !(0xffu8 >> keep) };
            *byte = (*byte & mask) | ((sn.next_u64() as u8) & !mask);
        }
        out.push(Contact::bare(NodeId::from_bytes(b)));
    }
    out
}

/// Records a liar keeps to replay.
const LIAR_MEMORY: usize = 4096;

/// What a malicious node does instead of answering honestly: its answer, and requests of its own (replays).
fn lie(ctx: &Ctx, sn: &mut SimNode, msg: &Message) -> Option<(Message, Vec<(NodeId, Message)>)> {
    let Message::Request { id, body } = msg else { return None };
    let mut attacks = Vec::new();
    let body = match body {
        Request::FindNode { target } => Response::Nodes { closer: lies(ctx, sn, target) },
        Request::FindValue { key } => {
            Response::Value { record: Box::new(forgery(sn, key)), ttl_secs: 3600, closer: Vec::new() }
        }
        Request::Store { record, .. } => {
            match sn.seen.get(&record.key) {
                Some(old) if old.seq() < record.seq() => attacks = replays(ctx, sn, old.clone()),
                Some(_) => {}
                None if sn.seen.len() < LIAR_MEMORY => {
                    sn.seen.insert(record.key, (**record).clone());
                }
                None => {}
            }
            Response::StoreAck { refused: None }
        }
        Request::Ping => return None,
    };
    Some((Message::Response { id: *id, body }, attacks))
}

/// A liar's answer to a `FindValue` of `key`: the old version it kept, or a newer one it forged; a
/// forged unsigned value for a key it never saw.
fn forgery(sn: &mut SimNode, key: &Key) -> Record {
    let Some(old) = sn.seen.get(key).cloned() else { return Record::unchecked(*key, b"forged".to_vec()) };
    let replay = sn.next_u64() % 2 == 0;
    match old.signed {
        Some(mut signed) if !replay => {
            signed.seq = signed.seq.saturating_add(1);
            signed.signature = [0x5a; 64];
            Record { key: *key, value: b"forged".to_vec(), signed: Some(signed) }
        }
        _ => old,
    }
}

/// Stores of `old` with a one-second TTL to the k peers the liar knows closest to its key.
fn replays(ctx: &Ctx, sn: &mut SimNode, old: Record) -> Vec<(NodeId, Message)> {
    let Some(node) = sn.node.as_ref() else { return Vec::new() };
    let target = NodeId::from_key(&old.key);
    let peers = node.routing_table().closest(&target, ctx.cfg.node.k);
    peers
        .into_iter()
        .map(|p| {
            let id = RequestId(next_u64(&mut sn.rng));
            let body = Request::Store { record: Box::new(old.clone()), ttl_secs: 1, cas: None };
            (p.id, Message::Request { id, body })
        })
        .collect()
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
