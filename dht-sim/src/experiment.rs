//! The standard experiment: bootstrap a swarm through one seed node, then run lookups, put/get pairs and
//! churn on a timetable, judging every lookup against the true k closest live nodes.

use crate::net::{Sim, SimConfig};
use crate::truth::AliveSet;
use dht_core::{Contact, Event, Instant, Key, NodeId, QueryId, Record};
use rand_core::RngCore;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct Params {
    /// Network model, node configuration and seed.
    pub sim: SimConfig,
    /// Nodes in the swarm (kept constant under churn: each departure is replaced by a newcomer).
    pub nodes: usize,
    /// Random `find_node` lookups from random live nodes.
    pub lookups: usize,
    /// Put/get pairs: a put from a random node, later a get of the same key from another.
    pub puts: usize,
    /// Fraction of `nodes` that leave without notice during the operation phase, each replaced at once.
    pub churn: f64,
    /// Virtual time between two joins during bootstrap, ms.
    pub join_interval_ms: u64,
    /// Virtual time between two lookups, ms (the operation phase lasts `lookups` times this).
    pub lookup_interval_ms: u64,
    /// Size of the values put, bytes.
    pub value_size: usize,
    /// Session times drawn from a Weibull distribution instead of `churn`: see [`WeibullChurn`].
    pub weibull: Option<WeibullChurn>,
    /// Fraction of the nodes (the seed node excepted) that lie: see [`Sim::set_malicious`]. Lookups, puts
    /// and gets are started from honest nodes only.
    pub malicious: f64,
    /// What the puts store.
    pub put_kind: PutKind,
    /// Every put is followed, once it has finished, by an update of its record (version 2, signed records
    /// only) from the same node; the get comes after the update has finished and must return it.
    pub updates: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What the experiment's puts store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutKind {
    /// Records signed by the putting node's key, under a random salt (the default).
    Signed,
    /// Immutable records: the key is the value's hash.
    Immutable,
    /// Unsigned records under random keys (only a `ClosedSwarm` policy accepts them).
    Unchecked,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            sim: SimConfig::default(),
            nodes: 1000,
            lookups: 200,
            puts: 0,
            churn: 0.0,
            join_interval_ms: 10,
            lookup_interval_ms: 100,
            value_size: 128,
            malicious: 0.0,
            weibull: None,
            put_kind: PutKind::Signed,
            updates: false,
            progress: false,
        }
    }
}

/// Churn by session times: every node (the seed node excepted) leaves without notice when its session,
/// drawn from a Weibull distribution, ends, and a newcomer takes its place. The run lasts `hours` of
/// virtual time: puts at its start, lookups spread over it, and a get of every record at its end.
#[derive(Debug, Clone, Copy)]
pub struct WeibullChurn {
    /// Virtual hours the operation phase lasts.
    pub hours: f64,
    /// Median session, minutes (half the nodes are gone this long after they joined).
    pub median_session_min: f64,
    /// Shape of the distribution (below 1: many short sessions and a long tail, as measured in deployed
    /// peer-to-peer networks).
    pub shape: f64,
}

impl WeibullChurn {
    /// A session length drawn with `u` uniform in (0, 1].
    fn session(&self, u: f64) -> Duration {
        let scale = self.median_session_min / std::f64::consts::LN_2.powf(1.0 / self.shape);
        let minutes = scale * (-u.ln()).powf(1.0 / self.shape);
        Duration::from_secs_f64((minutes * 60.0).min(1e9))
    }
}

/// The figures of one run. Serialized as the JSON line the binary prints last.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Nodes in the swarm.
    pub nodes: usize,
    /// Lookups run.
    pub lookups: usize,
    /// Seed.
    pub seed: u64,
    /// Churn fraction.
    pub churn: f64,
    /// Loss probability.
    pub loss: f64,
    /// Lookups whose k closest equal the true k closest live nodes at their end (with `--malicious`: that
    /// miss none of the honest nodes among those).
    pub success_rate: f64,
    /// Lookups whose k closest equal the true k closest among the nodes that had finished joining (their
    /// bootstrap lookup had ended) when the lookup began and were still live at its end (differs from
    /// `success_rate` only under churn).
    pub success_rate_present: f64,
    /// Median path length to the closest node found.
    pub hops_p50: u32,
    /// 99th percentile path length.
    pub hops_p99: u32,
    /// Requests plus responses per lookup, mean.
    pub msgs_per_lookup: f64,
    /// Lookup latency, median, virtual ms.
    pub latency_ms_p50: u64,
    /// Lookup latency, 95th percentile, virtual ms.
    pub latency_ms_p95: u64,
    /// Puts run.
    pub puts: usize,
    /// Acknowledged stores per put, mean.
    pub put_acks_mean: f64,
    /// Put latency (lookup plus stores), median, virtual ms.
    pub put_latency_ms_p50: u64,
    /// Put latency, 90th percentile, virtual ms.
    pub put_latency_ms_p90: u64,
    /// Gets that returned the value put.
    pub get_success_rate: f64,
    /// Fraction of malicious nodes.
    pub malicious: f64,
    /// Gets that returned a value never put (a forgery accepted).
    pub forged_accepted: usize,
    /// Gets that returned an older version than the newest one whose put had finished (a replay or a
    /// stale holder accepted).
    pub stale_accepted: usize,
    /// Honest holders of a record when its (last) put finished that, at the end of the run, no longer hold
    /// it or hold it with an earlier expiry, though still live (a shortened or lost record).
    pub shortened: usize,
    /// With Weibull churn: records whose get at the end of the run returned their value.
    pub records_retrievable_rate: Option<f64>,
    /// Nodes that left (and were replaced).
    pub departed: usize,
    /// Messages handed to the virtual network.
    pub messages_total: u64,
    /// Virtual seconds simulated.
    pub virtual_s: f64,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
    /// Peak resident memory of the process, bytes (0 where unknown).
    pub peak_rss_bytes: u64,
    /// Peak resident memory divided by nodes.
    pub rss_bytes_per_node: u64,
    /// Why the failed lookups failed.
    pub lookup_failures: FailureCauses,
    /// What the nodes live at the end refused, summed: the adversary's attempts that reached them.
    pub refused: Refusals,
    /// A hash of every query outcome in order: equal seeds give equal hashes.
    pub trace_hash: String,
}

/// Refusals counted by the nodes live at the end (their [`dht_core::NodeStats`]), summed.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Refusals {
    /// Stores of an older version than the one held (replays).
    pub stale: u64,
    /// Stores whose signature did not verify (forgeries).
    pub bad_signature: u64,
    /// Stores failing the record policy (unsigned values under others' keys).
    pub invalid: u64,
    /// Values a get received that did not verify (forgeries answered to gets).
    pub bad_values: u64,
}

/// Failed lookups by cause.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct FailureCauses {
    /// The answer holds a node that left before the lookup ended.
    pub departed_in_result: usize,
    /// A true closest node was missed that had not finished joining when the lookup began.
    pub joined_during_lookup: usize,
    /// Anything else.
    pub other: usize,
}

enum Op {
    Lookup,
    Put(usize),
    /// The second version of put `i`'s record.
    Update(usize),
    Get(usize),
    Churn,
    /// Node `i`'s session ends.
    Leave(usize),
}

/// Operations ordered by time, then by the order they were scheduled in.
#[derive(Default)]
struct Timetable {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    ops: Vec<Option<Op>>,
}

impl Timetable {
    fn push(&mut self, at: Instant, op: Op) {
        self.heap.push(Reverse((at, self.ops.len())));
        self.ops.push(Some(op));
    }

    fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    fn pop(&mut self) -> Option<(Instant, Op)> {
        let Reverse((at, i)) = self.heap.pop()?;
        Some((at, self.ops[i].take().expect("each op is popped once")))
    }
}

enum Pending {
    Lookup { target: NodeId },
    Put(usize),
    Update(usize),
    Get(usize),
}

struct PutCase {
    key: Key,
    /// Every version put, oldest first (one for unsigned records).
    versions: Vec<Vec<u8>>,
    /// The random name of a signed record.
    salt: [u8; 32],
    from: usize,
    /// The honest holders when the last put finished, and the expiry each gave the record.
    holders: Vec<(usize, Instant)>,
}

/// The key node `n` of the run with `seed` signs its records with (made up from both, so runs repeat).
fn signing_key(seed: u64, n: usize) -> dht_core::SigningKey {
    let secret = Key::from_name(&[seed.to_le_bytes(), (n as u64).to_le_bytes()].concat());
    dht_core::SigningKey::from_bytes(secret.as_bytes())
}

/// Peak resident set size of this process, from `/proc/self/status` (0 if unavailable).
pub fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn percentile<T: Copy + Ord + Default>(values: &mut [T], p: f64) -> T {
    if values.is_empty() {
        return T::default();
    }
    values.sort_unstable();
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

struct Trace(u64);

impl Trace {
    fn mix(&mut self, v: u64) {
        for b in v.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

struct Swarm {
    sim: Sim,
    /// When each node ever added finished joining (its bootstrap lookup ended), by index.
    ready: Vec<Option<Instant>>,
    /// Bootstrap lookups still running.
    joining: BTreeSet<(usize, QueryId)>,
    alive: AliveSet,
    live: Vec<usize>,
    slot: BTreeMap<usize, usize>,
    seed_node: usize,
    malicious: f64,
}

impl Swarm {
    fn join(&mut self) -> usize {
        let i = self.sim.add_node();
        if i != self.seed_node && self.malicious > 0.0 {
            let draw = self.sim.rng().next_u64() as f64 / u64::MAX as f64;
            if draw < self.malicious {
                self.sim.set_malicious(i);
            }
        }
        let seed = Contact::bare(self.sim.id(self.seed_node));
        if i == self.seed_node {
            self.ready.push(Some(self.sim.now()));
        } else {
            self.ready.push(None);
            if let Some(q) = self.sim.with_node(i, |n, now| n.bootstrap(now, vec![seed])) {
                self.joining.insert((i, q));
            }
        }
        self.alive.insert(self.sim.id(i));
        self.slot.insert(i, self.live.len());
        self.live.push(i);
        i
    }

    /// The refusals of the live nodes, summed.
    fn refusals(&self) -> Refusals {
        let mut r = Refusals::default();
        for &i in &self.live {
            if let Some(s) = self.sim.node(i).map(|n| n.stats()) {
                r.stale += s.refused_stale;
                r.bad_signature += s.refused_bad_signature;
                r.invalid += s.refused_invalid;
                r.bad_values += s.bad_values;
            }
        }
        r
    }

    /// Whether node `id` is malicious.
    fn is_liar(&self, id: &NodeId) -> bool {
        self.sim.index_of(id).is_some_and(|i| self.sim.is_malicious(i))
    }

    /// Whether node `id` had finished joining at `t`.
    fn ready_by(&self, id: &NodeId, t: Instant) -> bool {
        self.ready[self.sim.index_of(id).expect("live ids are known")].is_some_and(|r| r <= t)
    }

    /// Takes the events reported so far, noting finished joins; returns the others.
    fn take_events(&mut self) -> Vec<crate::SimEvent> {
        let mut events = self.sim.take_events();
        events.retain(|ev| match &ev.event {
            Event::LookupFinished { query, .. } if self.joining.remove(&(ev.node, *query)) => {
                self.ready[ev.node] = Some(ev.at);
                false
            }
            _ => true,
        });
        events
    }

    fn leave(&mut self, i: usize) {
        let pos = self.slot.remove(&i).expect("a leaving node is live");
        self.live.swap_remove(pos);
        if let Some(&moved) = self.live.get(pos) {
            self.slot.insert(moved, pos);
        }
        self.alive.remove(&self.sim.id(i));
        self.sim.kill(i);
        // A departed node's bootstrap never reports.
        self.joining.retain(|(node, _)| *node != i);
    }

    fn random_live(&mut self, except: &[usize]) -> usize {
        loop {
            let i = self.live[(self.sim.rng().next_u64() % self.live.len() as u64) as usize];
            if !except.contains(&i) || self.live.len() <= except.len() {
                return i;
            }
        }
    }

    /// A random live honest node (not in `except` unless nothing else is left).
    fn random_honest(&mut self, except: &[usize]) -> usize {
        for _ in 0..10_000 {
            let i = self.random_live(except);
            if !self.sim.is_malicious(i) {
                return i;
            }
        }
        self.seed_node
    }

    /// A swarm of the seed node alone.
    fn new(params: &Params) -> Result<Swarm, dht_core::ConfigError> {
        let mut swarm = Swarm {
            sim: Sim::new(params.sim.clone())?,
            ready: Vec::new(),
            joining: BTreeSet::new(),
            alive: AliveSet::default(),
            live: Vec::new(),
            slot: BTreeMap::new(),
            seed_node: 0,
            malicious: params.malicious,
        };
        swarm.seed_node = swarm.join();
        Ok(swarm)
    }

    /// Bootstrap: the other nodes join one every `join_interval_ms`, each a self-lookup through the seed
    /// node; then ten virtual seconds settle the swarm.
    fn bootstrap(&mut self, params: &Params, bar: &indicatif::ProgressBar) {
        bar.set_message("joining");
        let join_every = Duration::from_millis(params.join_interval_ms);
        let window = self.sim.lookahead();
        let mut join_at = self.sim.now() + join_every;
        let mut window_end = self.sim.now() + window;
        for n in 1..params.nodes {
            if window.is_zero() {
                self.sim.run_until(join_at);
            } else {
                // A newcomer reaches others only through messages, which take at least `window`: the joins
                // due before the end of the next window go first (each at its own time), then the window is
                // handled as one, which lets the simulator spread it over threads.
                while join_at >= window_end {
                    self.sim.run_before(window_end);
                    self.sim.skip_to(window_end);
                    window_end = window_end + window;
                }
                self.sim.skip_to(join_at);
            }
            self.join();
            join_at = join_at + join_every;
            if n % 1024 == 0 {
                self.take_events();
                bar.inc(1024);
            }
        }
        let settle = self.sim.now() + Duration::from_secs(10);
        self.sim.run_until(settle);
        self.take_events();
        bar.set_position(params.nodes as u64);
    }

    /// When a session that starts now ends (drawn from `w`), if before `end`.
    fn session_end(&mut self, w: &WeibullChurn, end: Instant) -> Option<Instant> {
        let u = 1.0 - self.sim.rng().next_u64() as f64 / u64::MAX as f64;
        let leaves = self.sim.now() + w.session(u);
        (leaves < end).then_some(leaves)
    }
}

/// The operation phase's clock: it starts when the swarm has settled and lasts `ms`.
struct Phase {
    start: Instant,
    ms: u64,
}

impl Phase {
    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    fn end(&self) -> Instant {
        self.at(self.ms)
    }

    /// Gets (of the uniform model) start in the last quarter.
    fn get_start_ms(&self) -> u64 {
        self.ms * 3 / 4
    }
}

/// The operation phase's timetable: lookups, puts (and with Weibull churn every get and departure), and
/// uniform churn at random instants. Gets of the uniform model are added as their puts finish.
fn schedule(swarm: &mut Swarm, params: &Params, churn_count: usize) -> (Phase, Timetable) {
    let ms = match params.weibull {
        Some(w) => (w.hours * 3_600_000.0) as u64,
        None => (params.lookups.max(params.puts).max(1) as u64) * params.lookup_interval_ms,
    };
    let lookup_every = match params.weibull {
        Some(_) => ms / params.lookups.max(1) as u64,
        None => params.lookup_interval_ms,
    };
    let phase = Phase { start: swarm.sim.now(), ms };
    let mut ops = Timetable::default();
    for i in 0..params.lookups {
        ops.push(phase.at(i as u64 * lookup_every), Op::Lookup);
    }
    for i in 0..params.puts {
        let put_ms = match params.weibull {
            // All records go in during the first minute; every one is read back at the end.
            Some(_) => i as u64 * 60_000 / params.puts as u64,
            None => i as u64 * ms / 4 / params.puts as u64,
        };
        ops.push(phase.at(put_ms), Op::Put(i));
        if params.weibull.is_some() {
            ops.push(phase.at(ms), Op::Get(i));
        }
    }
    if let Some(w) = params.weibull {
        for i in swarm.live.clone() {
            if i != swarm.seed_node {
                if let Some(leaves) = swarm.session_end(&w, phase.end()) {
                    ops.push(leaves, Op::Leave(i));
                }
            }
        }
    }
    // Departures at random instants (uniform over the phase), so they do not fall in step with lookups.
    for _ in 0..churn_count {
        let at = swarm.sim.rng().next_u64() % ms.max(1);
        ops.push(phase.at(at), Op::Churn);
    }
    (phase, ops)
}

fn progress_bar(params: &Params, churn_count: usize) -> indicatif::ProgressBar {
    if !params.progress {
        return indicatif::ProgressBar::hidden();
    }
    let total = (params.nodes + params.lookups + params.puts * 2 + churn_count) as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .expect("static template is valid"),
    );
    bar
}

/// What the judged outcomes add up to.
#[derive(Default)]
struct Tally {
    lookups_ok: usize,
    lookups_ok_present: usize,
    lookups_done: usize,
    hops: Vec<u32>,
    latencies: Vec<u64>,
    msgs: u64,
    acks: Vec<usize>,
    put_latencies: Vec<u64>,
    gets_ok: usize,
    gets_done: usize,
    forged_accepted: usize,
    stale_accepted: usize,
    departed: usize,
    why: FailureCauses,
}

/// The operation phase under way.
struct Operation<'a> {
    params: &'a Params,
    swarm: Swarm,
    bar: indicatif::ProgressBar,
    phase: Phase,
    ops: Timetable,
    cases: Vec<PutCase>,
    pending: BTreeMap<(usize, QueryId), Pending>,
    trace: Trace,
    tally: Tally,
    /// Operations that will have to be done (grows as Weibull newcomers get their departures).
    op_count: usize,
    ops_done: usize,
}

/// Runs the experiment.
pub fn run(params: &Params) -> Result<Report, dht_core::ConfigError> {
    let started = std::time::Instant::now();
    let mut swarm = Swarm::new(params)?;
    let churn_count = (params.churn * params.nodes as f64).round() as usize;
    let bar = progress_bar(params, churn_count);
    swarm.bootstrap(params, &bar);
    bar.set_message("operating");
    let (phase, ops) = schedule(&mut swarm, params, churn_count);
    // Gets of the uniform model, and updates, are scheduled as the puts before them finish.
    let later = if params.weibull.is_some() { 0 } else { params.puts } + if params.updates { params.puts } else { 0 };
    let op_count = ops.ops.len() + later;
    let mut operation = Operation {
        params,
        swarm,
        bar,
        phase,
        ops,
        cases: Vec::new(),
        pending: BTreeMap::new(),
        trace: Trace(0xcbf2_9ce4_8422_2325),
        tally: Tally::default(),
        op_count,
        ops_done: 0,
    };
    operation.run();
    Ok(operation.report(started))
}

impl Operation<'_> {
    /// Starts the operations at their times and judges their outcomes, until every one has reported, or
    /// for at most two virtual minutes after the last one started.
    fn run(&mut self) {
        let mut drain_until: Option<Instant> = None;
        loop {
            self.judge_outcomes();
            if self.ops_done >= self.op_count && self.pending.is_empty() {
                break;
            }
            let Some(t) = self.ops.next_at() else {
                // Only queries in flight: let them report, for at most two virtual minutes.
                let limit = *drain_until.get_or_insert(self.swarm.sim.now() + Duration::from_secs(120));
                if self.swarm.sim.now() >= limit || !self.swarm.sim.step() {
                    break;
                }
                continue;
            };
            if self.swarm.sim.now() < t {
                // Outcomes up to `t` are judged (above) before the next operation changes the swarm.
                self.swarm.sim.run_until(t);
                continue;
            }
            if let Some((_, op)) = self.ops.pop() {
                self.start(op);
            }
        }
        self.bar.finish_and_clear();
        // Queries that never reported within the limit count as failures.
        for p in self.pending.values() {
            match p {
                Pending::Lookup { .. } => self.tally.lookups_done += 1,
                Pending::Get(_) => self.tally.gets_done += 1,
                Pending::Put(_) | Pending::Update(_) => {}
            }
        }
    }

    /// Judges the outcomes reported so far.
    fn judge_outcomes(&mut self) {
        for ev in self.swarm.take_events() {
            let (q, node) = match &ev.event {
                Event::LookupFinished { query, .. }
                | Event::PutFinished { query, .. }
                | Event::GetFinished { query, .. } => (*query, ev.node),
                _ => continue,
            };
            let Some(p) = self.pending.remove(&(node, q)) else { continue };
            self.ops_done += 1;
            self.bar.inc(1);
            self.trace.mix(node as u64);
            self.trace.mix(ev.at.as_millis());
            match (p, ev.event) {
                (Pending::Lookup { target }, Event::LookupFinished { closest, stats, .. }) => {
                    let got: Vec<NodeId> = closest.iter().map(|c| c.id).collect();
                    let ok = self.judge_lookup(node, target, &got, ev.at - stats.duration);
                    self.trace.mix(u64::from(ok) << 32 | u64::from(stats.hops));
                    self.tally.hops.push(stats.hops);
                    self.tally.latencies.push(stats.duration.as_millis() as u64);
                    self.tally.msgs += u64::from(stats.requests + stats.responses);
                }
                (Pending::Put(i) | Pending::Update(i), Event::PutFinished { acks, stats, .. }) => {
                    self.trace.mix(acks as u64);
                    self.tally.acks.push(acks);
                    self.tally.put_latencies.push(stats.duration.as_millis() as u64);
                    self.put_finished(i, ev.at);
                }
                (Pending::Get(i), Event::GetFinished { record, .. }) => {
                    let versions = &self.cases[i].versions;
                    let got = record.map(|r| r.value);
                    let ok = got.as_ref() == versions.last();
                    let older = got.as_ref().is_some_and(|v| versions[..versions.len() - 1].contains(v));
                    self.tally.forged_accepted += usize::from(got.is_some() && !ok && !older);
                    self.tally.stale_accepted += usize::from(older);
                    self.trace.mix(u64::from(ok));
                    self.tally.gets_done += 1;
                    self.tally.gets_ok += usize::from(ok);
                }
                _ => {}
            }
        }
    }

    /// Judges a lookup by `node` for `target` that began at `started_at` and found `got`: the k closest
    /// peers (the node looking up is not among its own answer). Truth: the k closest live nodes at the end,
    /// other than the one looking up ("strict"); and the same among nodes that had finished joining when the
    /// lookup began ("present").
    fn judge_lookup(&mut self, node: usize, target: NodeId, got: &[NodeId], started_at: Instant) -> bool {
        let k = self.params.sim.node.k;
        let swarm = &self.swarm;
        let me = swarm.sim.id(node);
        let mut truth = swarm.alive.closest(&target, 2 * k + 1);
        truth.retain(|id| *id != me);
        // A node still joining when the lookup began may be missed, or found if it is close.
        let mut present = truth.clone();
        present.retain(|id| swarm.ready_by(id, started_at) || got.contains(id));
        present.truncate(k);
        truth.truncate(k);
        // With liars about, a lookup succeeds when no honest node of the truth is missing (liars in or out
        // of the answer do not matter: a careful lookup leaves them out).
        let judge = |truth: &[NodeId]| {
            if self.params.malicious > 0.0 {
                truth.iter().all(|id| got.contains(id) || swarm.is_liar(id))
            } else {
                got == truth
            }
        };
        let ok = judge(&truth);
        let tally = &mut self.tally;
        tally.lookups_ok_present += usize::from(judge(&present));
        if !ok {
            if got.iter().any(|id| !swarm.alive.contains(id)) {
                tally.why.departed_in_result += 1;
            } else if truth.iter().filter(|id| !got.contains(id)).any(|id| !swarm.ready_by(id, started_at)) {
                tally.why.joined_during_lookup += 1;
            } else {
                tally.why.other += 1;
            }
        }
        tally.lookups_done += 1;
        tally.lookups_ok += usize::from(ok);
        ok
    }

    /// Starts an operation whose time has come.
    fn start(&mut self, op: Op) {
        match op {
            Op::Lookup => {
                let from = self.swarm.random_honest(&[]);
                let target = self.swarm.sim.random_id();
                if let Some(q) = self.swarm.sim.with_node(from, |n, now| n.find_node(now, target)) {
                    self.pending.insert((from, q), Pending::Lookup { target });
                }
            }
            Op::Put(i) => self.start_put(i),
            Op::Update(i) => self.start_update(i),
            Op::Get(i) => {
                let from = self.swarm.random_honest(&[self.cases[i].from]);
                let key = self.cases[i].key;
                if let Some(q) = self.swarm.sim.with_node(from, |n, now| n.get(now, key)) {
                    self.pending.insert((from, q), Pending::Get(i));
                }
            }
            Op::Leave(victim) => self.session_ends(victim),
            Op::Churn => self.churn(),
        }
    }

    fn start_put(&mut self, i: usize) {
        let swarm = &mut self.swarm;
        let from = swarm.random_honest(&[]);
        let salt = *swarm.sim.random_id().as_bytes();
        let mut value = vec![0u8; self.params.value_size];
        swarm.sim.rng().fill_bytes(&mut value);
        self.cases.push(PutCase { key: Key::from_bytes(salt), versions: vec![value], salt, from, holders: Vec::new() });
        let record = self.version(i);
        self.cases[i].key = record.key;
        if let Some(q) = self.swarm.sim.with_node(from, |n, now| n.put(now, record)) {
            self.pending.insert((from, q), Pending::Put(i));
        }
    }

    /// The newest version of put `i`'s record, as its kind makes it.
    fn version(&self, i: usize) -> Record {
        let case = &self.cases[i];
        let value = case.versions.last().expect("a case has a version").clone();
        match self.params.put_kind {
            PutKind::Signed => {
                let seq = case.versions.len() as u64;
                Record::signed(&signing_key(self.params.sim.seed, case.from), &case.salt, seq, value)
                    .expect("32-byte salts are allowed")
            }
            PutKind::Immutable => Record::immutable(value),
            PutKind::Unchecked => Record::unchecked(Key::from_bytes(case.salt), value),
        }
    }

    /// Put `i`'s version 2, from the node that put version 1 (if still live).
    fn start_update(&mut self, i: usize) {
        let from = self.cases[i].from;
        let mut value = vec![0u8; self.params.value_size];
        self.swarm.sim.rng().fill_bytes(&mut value);
        self.cases[i].versions.push(value);
        let record = self.version(i);
        match self.swarm.sim.with_node(from, |n, now| n.put(now, record)) {
            Some(q) => {
                self.pending.insert((from, q), Pending::Update(i));
            }
            // Its node left: neither the update nor the get will run.
            None => self.ops_done += 2,
        }
    }

    /// Put `i`'s put (or update) finished at `at`: its honest holders are noted, and what comes next is
    /// scheduled (the update, or the get of the uniform model).
    fn put_finished(&mut self, i: usize, at: Instant) {
        self.cases[i].holders = self.honest_holders(i);
        let updating = self.params.updates && self.cases[i].versions.len() == 1;
        if updating {
            self.ops.push(at + Duration::from_secs(1), Op::Update(i));
        } else if self.params.weibull.is_none() {
            let spread = i as u64 * (self.phase.ms / 4) / self.params.puts as u64;
            let when = self.phase.at(self.phase.get_start_ms() + spread).max(at + Duration::from_secs(1));
            self.ops.push(when, Op::Get(i));
        }
    }

    /// The honest live nodes among the 2k closest to put `i`'s key that hold its newest version, and the
    /// expiry each holds it with.
    fn honest_holders(&self, i: usize) -> Vec<(usize, Instant)> {
        let case = &self.cases[i];
        let newest = case.versions.last();
        let target = NodeId::from_key(&case.key);
        let sim = &self.swarm.sim;
        self.swarm
            .alive
            .closest(&target, 2 * self.params.sim.node.k)
            .into_iter()
            .filter_map(|id| sim.index_of(&id))
            .filter(|&n| !sim.is_malicious(n))
            .filter_map(|n| {
                let (record, expires) = sim.store_of(n).get(&case.key)?;
                (Some(&record.value) == newest).then_some((n, expires))
            })
            .collect()
    }

    /// Holders noted when each put finished that are live and honest but no longer hold the record, or hold
    /// it with an earlier expiry.
    fn shortened(&self) -> usize {
        let sim = &self.swarm.sim;
        let lost = |key: &Key, &(n, expires): &(usize, Instant)| {
            sim.is_alive(n) && sim.store_of(n).get(key).is_none_or(|(_, e)| e < expires)
        };
        self.cases.iter().map(|c| c.holders.iter().filter(|h| lost(&c.key, h)).count()).sum()
    }

    /// The queries of node `victim`, which left: they never report.
    fn orphans(&self, victim: usize) -> Vec<(usize, QueryId)> {
        self.pending.range((victim, QueryId(0))..=(victim, QueryId(u64::MAX))).map(|(k, _)| *k).collect()
    }

    /// Weibull churn: node `victim`'s session ends; a newcomer takes its place and gets a session of its own.
    fn session_ends(&mut self, victim: usize) {
        self.ops_done += 1;
        if !self.swarm.sim.is_alive(victim) {
            return;
        }
        self.swarm.leave(victim);
        for key in self.orphans(victim) {
            // A lookup or get it ran is not counted, its put stays judged by the get at the end (a put
            // never finished schedules no update).
            if let Some(Pending::Put(_)) = self.pending.remove(&key) {
                self.ops_done += usize::from(self.params.updates);
            }
            self.ops_done += 1;
        }
        let newcomer = self.swarm.join();
        self.tally.departed += 1;
        if let Some(w) = self.params.weibull {
            if let Some(leaves) = self.swarm.session_end(&w, self.phase.end()) {
                self.ops.push(leaves, Op::Leave(newcomer));
                self.op_count += 1;
            }
        }
    }

    /// Uniform churn: a random node other than the seed node leaves; a newcomer takes its place.
    fn churn(&mut self) {
        let victim = self.swarm.random_live(&[self.swarm.seed_node]);
        self.swarm.leave(victim);
        for key in self.orphans(victim) {
            // Not counted; a put whose node left never schedules its update and get: they count as done.
            match self.pending.remove(&key) {
                Some(Pending::Put(_)) => self.ops_done += 1 + usize::from(self.params.updates),
                Some(Pending::Update(_)) => self.ops_done += 1,
                _ => {}
            }
            self.ops_done += 1;
        }
        self.swarm.join();
        self.tally.departed += 1;
        self.ops_done += 1;
        self.bar.inc(1);
    }

    fn report(mut self, started: std::time::Instant) -> Report {
        let shortened = self.shortened();
        let (params, t) = (self.params, &mut self.tally);
        let rss = peak_rss_bytes();
        let ratio = |ok: usize, n: usize| if n == 0 { 0.0 } else { ok as f64 / n as f64 };
        let mean = |sum: f64, n: usize| if n == 0 { 0.0 } else { sum / n as f64 };
        Report {
            nodes: params.nodes,
            lookups: t.lookups_done,
            seed: params.sim.seed,
            churn: params.churn,
            loss: params.sim.loss,
            success_rate: ratio(t.lookups_ok, t.lookups_done),
            success_rate_present: ratio(t.lookups_ok_present, t.lookups_done),
            hops_p50: percentile(&mut t.hops, 0.50),
            hops_p99: percentile(&mut t.hops, 0.99),
            msgs_per_lookup: mean(t.msgs as f64, t.lookups_done),
            latency_ms_p50: percentile(&mut t.latencies, 0.50),
            latency_ms_p95: percentile(&mut t.latencies, 0.95),
            puts: t.acks.len(),
            put_acks_mean: mean(t.acks.iter().sum::<usize>() as f64, t.acks.len()),
            put_latency_ms_p50: percentile(&mut t.put_latencies, 0.50),
            put_latency_ms_p90: percentile(&mut t.put_latencies, 0.90),
            get_success_rate: ratio(t.gets_ok, t.gets_done),
            malicious: params.malicious,
            forged_accepted: t.forged_accepted,
            stale_accepted: t.stale_accepted,
            shortened,
            records_retrievable_rate: params.weibull.map(|_| ratio(t.gets_ok, t.gets_done)),
            departed: t.departed,
            messages_total: self.swarm.sim.stats().sent,
            virtual_s: self.swarm.sim.elapsed_ms() as f64 / 1000.0,
            wall_s: started.elapsed().as_secs_f64(),
            peak_rss_bytes: rss,
            rss_bytes_per_node: rss / params.nodes.max(1) as u64,
            lookup_failures: t.why,
            refused: self.swarm.refusals(),
            trace_hash: format!("{:016x}", self.trace.0),
        }
    }
}
