//! The sans-IO Kademlia node: inputs carry `now`, outputs are queued, storage is an output too.

use crate::config::Config;
use crate::event::{Event, Output, QueryId, StoreOp, StoreOpId, StoreResult};
use crate::id::{Key, NodeId, ID_LEN};
use crate::lookup::Lookup;
use crate::message::{Contact, Message, Record, Request, RequestId, Response, StoreRefusal};
use crate::routing::{InsertResult, RoutingTable};
use crate::time::Instant;
use core::time::Duration;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Counters of what peers sent and what was refused; never reset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Requests received.
    pub requests_in: u64,
    /// Responses received that matched a request.
    pub responses_in: u64,
    /// Requests we sent that timed out.
    pub timeouts: u64,
    /// Lookup requests that outlived their adaptive timeout: the lookup went on without them, and their
    /// answer still counted if it came before `request_timeout`.
    pub slow_requests: u64,
    /// Of those, the ones answered late (and used).
    pub late_answers: u64,
    /// Responses for no outstanding request, or from the wrong peer.
    pub unexpected_responses: u64,
    /// Responses of the wrong kind for their request.
    pub mismatched_responses: u64,
    /// `Nodes` answers with more contacts than allowed (refused whole).
    pub oversized_replies: u64,
    /// Contacts dropped from answers (our own id, too many or too long addresses).
    pub bad_contacts: u64,
    /// Records refused because of their size.
    pub refused_too_large: u64,
    /// Records refused because the node is full or busy.
    pub refused_full: u64,
    /// Records refused because of their TTL.
    pub refused_bad_ttl: u64,
    /// Records refused because they fail the record policy.
    pub refused_invalid: u64,
    /// Values returned for a key other than the one asked, too large, or failing the record policy.
    pub bad_values: u64,
    /// Storage operations that failed.
    pub store_failures: u64,
    /// Records expired.
    pub expired: u64,
    /// Peers and contacts refused for lacking the ids' proof of work.
    pub weak_ids: u64,
}

#[derive(Debug)]
enum Purpose {
    /// A lookup request of a query.
    Query(QueryId),
    /// One of a put's stores to the closest peers.
    PutStore(QueryId),
    StalePing,
    /// A store to cache a found value, or a republish; the answer only proves liveness.
    FireAndForget,
}

#[derive(Debug)]
struct Outgoing {
    peer: NodeId,
    deadline: Instant,
    purpose: Purpose,
    /// What to send again if this attempt times out, and how many more attempts are allowed.
    resend: Option<(Contact, Request, u8)>,
    /// When this attempt was sent (for round-trip samples).
    sent: Instant,
    /// For a lookup request timed by the adaptive timeout: the full `request_timeout`. At `deadline` the
    /// lookup stops waiting (the peer is slow, not yet failed); an answer before `grace` still counts.
    grace: Option<Instant>,
    /// The lookup stopped waiting for it (its adaptive timeout passed).
    slow: bool,
}

/// Smoothed round-trip time of answered requests, kept as RFC 6298 does for TCP: in ms, `srtt` and
/// `rttvar` updated with gains 1/8 and 1/4.
#[derive(Debug, Clone, Copy)]
struct RttEstimate {
    srtt: f64,
    rttvar: f64,
}

impl RttEstimate {
    fn sample(estimate: Option<RttEstimate>, ms: f64) -> RttEstimate {
        match estimate {
            None => RttEstimate { srtt: ms, rttvar: ms / 2.0 },
            Some(e) => {
                let rttvar = 0.75 * e.rttvar + 0.25 * (e.srtt - ms).abs();
                RttEstimate { srtt: 0.875 * e.srtt + 0.125 * ms, rttvar }
            }
        }
    }

    /// `srtt + 4 rttvar`: the retransmission timeout of RFC 6298.
    fn timeout(&self) -> Duration {
        Duration::from_millis((self.srtt + 4.0 * self.rttvar).ceil() as u64)
    }
}

#[derive(Debug)]
enum StorePurpose {
    InboundStore {
        from: Contact,
        request: RequestId,
        key: Key,
        expires: Instant,
        size: u32,
    },
    InboundFindValue {
        from: Contact,
        request: RequestId,
        key: Key,
    },
    LocalPublish {
        key: Key,
        expires: Instant,
        size: u32,
    },
    LocalGet {
        query: QueryId,
    },
    Republish {
        key: Key,
    },
    /// A held record read back to store it again at the k closest (replication by holders).
    Replicate {
        key: Key,
        expires: Instant,
    },
}

#[derive(Debug)]
enum QueryKind {
    FindNode,
    /// The self-lookup of a join: reports like `FindNode`, then refreshes the buckets beyond.
    Bootstrap,
    /// Bucket refresh: no event.
    Refresh,
    Put {
        record: Record,
        ttl_secs: u32,
        storing: Option<PutProgress>,
        report: bool,
    },
    Get {
        key: Key,
        found: Option<Record>,
        lacking: Option<Contact>,
    },
}

#[derive(Debug, Default)]
struct PutProgress {
    attempted: usize,
    answered: usize,
    acks: usize,
}

#[derive(Debug)]
struct Query {
    kind: QueryKind,
    lookup: Lookup,
    started: Instant,
    /// A get waiting for the local store before going to the network.
    waiting_local: bool,
    extra_requests: u32,
    extra_responses: u32,
    extra_failures: u32,
}

#[derive(Debug, Clone, Copy)]
struct RecordMeta {
    expires: Instant,
    size: u32,
    /// When this node stores it again at the k closest, unless someone stores it here first.
    replicate_at: Option<Instant>,
}

/// A Kademlia node as a state machine. See the crate docs for the calling convention.
#[derive(Debug)]
pub struct Node {
    config: Config,
    local: Contact,
    table: RoutingTable,
    rng: ChaCha8Rng,
    next_query: u64,
    next_store_op: u64,
    requests: BTreeMap<RequestId, Outgoing>,
    deadlines: BTreeSet<(Instant, RequestId)>,
    queries: BTreeMap<QueryId, Query>,
    records: BTreeMap<Key, RecordMeta>,
    expiries: BTreeSet<(Instant, Key)>,
    published: BTreeMap<Key, Instant>,
    /// When each held record is next stored again at the k closest (entries are checked against
    /// `records`' own time, so stale ones are skipped).
    replications: BTreeSet<(Instant, Key)>,
    store_ops: BTreeMap<StoreOpId, StorePurpose>,
    inbound_store_ops: usize,
    outputs: VecDeque<Output>,
    stats: NodeStats,
    next_self_lookup: Option<Instant>,
    /// When deep buckets next shed the entries beyond k not heard from lately (`Config::shed_after`).
    next_shed: Option<Instant>,
    rtt: Option<RttEstimate>,
    /// A lower bound of when the next bucket refresh is due (buckets only get fresher between checks, so a
    /// stale value just means one early, harmless wake-up). Kept so `poll_timeout` does not walk the buckets.
    refresh_at: Option<Instant>,
}

impl Node {
    /// A node with identity `local` (its id and the addresses it advertises), randomness from `seed`.
    pub fn new(config: Config, local: Contact, seed: u64, now: Instant) -> Self {
        let shed = config.bucket_growth > 0 && config.shed_after > Duration::ZERO;
        let next_shed = shed.then(|| now + config.shed_after);
        let table = RoutingTable::new(local.id, config.k, config.replacement_cache)
            .with_ping_after(config.ping_after)
            .with_bucket_growth(config.bucket_growth);
        Node {
            config,
            local,
            table,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_query: 0,
            next_store_op: 0,
            requests: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            queries: BTreeMap::new(),
            records: BTreeMap::new(),
            expiries: BTreeSet::new(),
            published: BTreeMap::new(),
            replications: BTreeSet::new(),
            store_ops: BTreeMap::new(),
            inbound_store_ops: 0,
            outputs: VecDeque::new(),
            stats: NodeStats::default(),
            next_self_lookup: None,
            next_shed,
            rtt: None,
            refresh_at: None,
        }
    }

    /// Our id.
    pub fn local_id(&self) -> &NodeId {
        &self.local.id
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The routing table, for inspection and persistence.
    pub fn routing_table(&self) -> &RoutingTable {
        &self.table
    }

    /// Counters of peers' input.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Number of records held (for others and our own).
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// Bytes of values held.
    pub fn stored_bytes(&self) -> u64 {
        self.records.values().map(|m| u64::from(m.size)).sum()
    }

    /// Whether a record under `key` is held.
    pub fn holds(&self, key: &Key) -> bool {
        self.records.contains_key(key)
    }

    /// Queries still running.
    pub fn active_queries(&self) -> usize {
        self.queries.len()
    }

    // ---- inputs ----------------------------------------------------------------------------------------

    /// Adds a contact known from a trusted source (a persisted routing table). Peers met on links are added
    /// by [`Node::handle_message`]. May emit a `Ping` of a stale entry.
    pub fn add_contact(&mut self, now: Instant, contact: Contact) {
        let contact = self.sanitize(contact);
        self.observe(now, contact);
    }

    /// Tells the core about a record already in the store (after a restart), so it serves and expires it.
    /// Records past `expires` are dropped with a `Remove`.
    pub fn restore_record(&mut self, now: Instant, key: Key, expires: Instant, size: usize) {
        if expires <= now {
            self.push_store(StoreOp::Remove { key }, None);
            return;
        }
        self.index_record(
            now,
            key,
            RecordMeta { expires, size: u32::try_from(size).unwrap_or(u32::MAX), replicate_at: None },
        );
    }

    /// A message arrived from `from`, a peer whose id the transport authenticated. Emits answers,
    /// storage operations, follow-up requests and events. Never fails: invalid input is dropped and counted.
    pub fn handle_message(&mut self, now: Instant, from: Contact, msg: Message) {
        if from.id == self.local.id {
            self.misbehaved(from.id, "message claims our own id");
            return;
        }
        let from = self.sanitize(from);
        match msg {
            Message::Request { id, body } => {
                self.stats.requests_in += 1;
                self.observe(now, from.clone());
                self.handle_request(now, from, id, body);
            }
            Message::Response { id, body } => {
                match self.requests.get(&id) {
                    Some(out) if out.peer == from.id => {}
                    _ => {
                        self.stats.unexpected_responses += 1;
                        return;
                    }
                }
                let out = self.requests.remove(&id).expect("checked just above");
                if matches!(out.purpose, Purpose::Query(_) | Purpose::StalePing) {
                    let ms = now.saturating_since(out.sent).as_millis() as f64;
                    self.rtt = Some(RttEstimate::sample(self.rtt, ms));
                }
                if out.slow {
                    self.stats.late_answers += 1;
                }
                self.deadlines.remove(&(out.deadline, id));
                self.stats.responses_in += 1;
                self.observe(now, from.clone());
                // Only the query the answer belongs to can move on.
                match out.purpose {
                    Purpose::Query(q) => {
                        self.on_query_response(now, q, from, body);
                        self.drive_query(now, q);
                    }
                    Purpose::PutStore(q) => {
                        self.on_store_ack(q, from, body);
                        self.drive_query(now, q);
                    }
                    Purpose::StalePing | Purpose::FireAndForget => {}
                }
            }
        }
    }

    /// A storage operation finished. Unknown ids are ignored.
    pub fn handle_store_result(&mut self, now: Instant, op: StoreOpId, result: StoreResult) {
        let Some(purpose) = self.store_ops.remove(&op) else { return };
        if let StoreResult::Failed(_) = result {
            self.stats.store_failures += 1;
        }
        match purpose {
            StorePurpose::InboundStore { from, request, key, expires, size } => {
                self.inbound_store_ops -= 1;
                let refused = if result == StoreResult::Done {
                    self.index_record(now, key, RecordMeta { expires, size, replicate_at: None });
                    self.event(Event::RecordStored { key, from: from.id });
                    None
                } else {
                    Some(StoreRefusal::StorageFailed)
                };
                self.respond(from, request, Response::StoreAck { refused });
            }
            StorePurpose::InboundFindValue { from, request, key } => {
                self.inbound_store_ops -= 1;
                let body = match (result, self.records.get(&key)) {
                    (StoreResult::Value(Some(value)), Some(meta)) => Response::Value {
                        record: Record { key, value },
                        ttl_secs: ttl_secs(meta.expires.saturating_since(now)),
                    },
                    _ => self.nodes_for(&NodeId::from_key(&key), &from.id),
                };
                self.respond(from, request, body);
            }
            StorePurpose::LocalPublish { key, expires, size } => {
                if result == StoreResult::Done {
                    self.index_record(now, key, RecordMeta { expires, size, replicate_at: None });
                }
            }
            StorePurpose::LocalGet { query } => {
                let Some(q) = self.queries.get_mut(&query) else { return };
                q.waiting_local = false;
                if let (StoreResult::Value(Some(value)), QueryKind::Get { key, found, .. }) = (result, &mut q.kind) {
                    *found = Some(Record { key: *key, value });
                    q.lookup.finish();
                }
                self.drive_query(now, query);
            }
            StorePurpose::Republish { key } => {
                if let StoreResult::Value(Some(value)) = result {
                    let query = self.start_put(now, Record { key, value }, false);
                    self.drive_query(now, query);
                } else {
                    self.published.remove(&key);
                }
            }
            StorePurpose::Replicate { key, expires } => {
                if let StoreResult::Value(Some(value)) = result {
                    if expires > now {
                        let query =
                            self.start_put_for(now, Record { key, value }, expires.saturating_since(now), false);
                        self.drive_query(now, query);
                    }
                }
                // Next round: the put's store here (if we are among the k closest) or the next interval.
                if let Some(meta) = self.records.get(&key).copied() {
                    if meta.replicate_at.is_none() {
                        self.index_record(now, key, meta);
                    }
                }
            }
        }
    }

    /// Deadlines passed: request timeouts, record expiry, republishing, bucket refresh. Early or repeated
    /// calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(out) = self.requests.get_mut(&id) else { continue };
            if let Some(grace) = out.grace.take() {
                // Slow, not failed: the lookup goes on without this peer, whose answer still counts until
                // the full timeout (a loaded peer or path is not a dead one).
                out.deadline = grace;
                out.slow = true;
                let (peer, purpose) = (out.peer, &out.purpose);
                if let Purpose::Query(q) = purpose {
                    if let Some(query) = self.queries.get_mut(q) {
                        query.lookup.on_slow(&peer);
                    }
                }
                self.deadlines.insert((grace, id));
                self.stats.slow_requests += 1;
                continue;
            }
            let Some(out) = self.requests.remove(&id) else { continue };
            self.stats.timeouts += 1;
            if let Some(out) = self.retry(now, out) {
                self.on_request_failed(now, out);
            }
        }
        while let Some(&(expires, key)) = self.expiries.first() {
            if expires > now {
                break;
            }
            self.expiries.pop_first();
            if self.records.get(&key).is_some_and(|m| m.expires == expires) {
                self.records.remove(&key);
                self.stats.expired += 1;
                self.push_store(StoreOp::Remove { key }, None);
            }
        }
        while let Some(&(at, key)) = self.replications.first() {
            if at > now {
                break;
            }
            self.replications.pop_first();
            let Some(meta) = self.records.get_mut(&key) else { continue };
            if meta.replicate_at != Some(at) {
                continue;
            }
            meta.replicate_at = None;
            let expires = meta.expires;
            self.push_store(StoreOp::Get { key }, Some(StorePurpose::Replicate { key, expires }));
        }
        let due: Vec<Key> = self.published.iter().filter(|(_, at)| **at <= now).map(|(k, _)| *k).collect();
        for key in due {
            self.published.insert(key, now + self.config.republish_interval);
            self.push_store(StoreOp::Get { key }, Some(StorePurpose::Republish { key }));
        }
        if self.next_shed.is_some_and(|t| t <= now) {
            self.next_shed = Some(now + self.config.shed_after);
            for id in self.table.shed_stale(now, self.config.shed_after) {
                self.event(Event::PeerRemoved { id });
            }
        }
        if self.next_self_lookup.is_some_and(|t| t <= now) {
            self.schedule_self_lookup(now);
            let target = self.local.id;
            let seeds = self.table.closest(&target, self.config.k);
            self.start_query(now, target, seeds, QueryKind::Refresh);
        }
        self.refresh_buckets(now);
        self.drive_queries(now);
    }

    /// Schedules the next periodic self-lookup, jittered so that nodes started together spread out.
    fn schedule_self_lookup(&mut self, now: Instant) {
        let base = self.config.self_lookup_interval;
        if base.is_zero() {
            self.next_self_lookup = None;
            return;
        }
        let jitter_ms = u64::try_from(base.as_millis() / 4).unwrap_or(u64::MAX).max(1);
        let jitter = Duration::from_millis(self.rng.next_u64() % jitter_ms);
        self.next_self_lookup = Some(now + base - jitter);
    }

    // ---- commands --------------------------------------------------------------------------------------

    /// Joins the network: a lookup of our own id through `seeds` (unauthenticated contacts, e.g. a
    /// bootstrap node's address). Finishes with [`Event::LookupFinished`] for our id.
    pub fn bootstrap(&mut self, now: Instant, seeds: Vec<Contact>) -> QueryId {
        let target = self.local.id;
        let mut initial = self.table.closest(&target, self.config.k);
        for seed in seeds {
            if seed.id != target {
                let seed = self.sanitize(seed);
                initial.push(seed);
            }
        }
        let id = self.start_query(now, target, initial, QueryKind::Bootstrap);
        self.drive_queries(now);
        id
    }

    /// Finds the k peers closest to `target`. Finishes with [`Event::LookupFinished`].
    pub fn find_node(&mut self, now: Instant, target: NodeId) -> QueryId {
        let seeds = self.table.closest(&target, self.config.k);
        let id = self.start_query(now, target, seeds, QueryKind::FindNode);
        self.drive_queries(now);
        id
    }

    /// Stores `record` locally and at the k closest peers to its key, and republishes it every
    /// `republish_interval`. Finishes with [`Event::PutFinished`]. Too large a value finishes at once
    /// with zero acks.
    pub fn put(&mut self, now: Instant, record: Record) -> QueryId {
        let key = record.key;
        if record.value.len() <= self.config.max_record_size {
            let expires = now + self.config.record_ttl;
            let size = record.value.len() as u32;
            self.push_store(
                StoreOp::Put { record: record.clone(), expires },
                Some(StorePurpose::LocalPublish { key, expires, size }),
            );
            self.published.insert(key, now + self.config.republish_interval);
        }
        let id = self.start_put(now, record, true);
        self.drive_queries(now);
        id
    }

    /// Looks `key` up: locally first, then at the peers closest to it, stopping at the first value found
    /// and caching it at the closest peer that lacked it. Finishes with [`Event::GetFinished`].
    pub fn get(&mut self, now: Instant, key: Key) -> QueryId {
        let target = NodeId::from_key(&key);
        let seeds = self.table.closest(&target, self.config.k);
        let id = self.start_query(now, target, seeds, QueryKind::Get { key, found: None, lacking: None });
        if self.records.contains_key(&key) {
            // The lookup waits until the local read answers (it is not driven before then).
            if let Some(q) = self.queries.get_mut(&id) {
                q.waiting_local = true;
            }
            self.push_store(StoreOp::Get { key }, Some(StorePurpose::LocalGet { query: id }));
        } else {
            self.drive_queries(now);
        }
        id
    }

    // ---- outputs ---------------------------------------------------------------------------------------

    /// The next output, `None` when drained. Call until `None` after every input or command.
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.outputs.pop_front();
        if out.is_none() && self.outputs.capacity() > 8 {
            // A burst (a lookup widening to k requests) grew the queue; an idle node should not keep it.
            self.outputs.shrink_to(8);
        }
        out
    }

    /// When [`Node::handle_timeout`] must be called next, `None` if nothing is scheduled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.deadlines.first().map(|(t, _)| *t);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.expiries.first().map(|(t, _)| *t));
        consider(self.published.values().min().copied());
        consider(self.replications.first().map(|(t, _)| *t));
        consider(self.refresh_at);
        consider(self.next_self_lookup);
        consider(self.next_shed);
        next
    }

    // ---- internals -------------------------------------------------------------------------------------

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    fn misbehaved(&mut self, from: NodeId, reason: &'static str) {
        self.event(Event::PeerMisbehaved { from, reason });
    }

    /// Caps a contact's addresses to the configured limits.
    fn sanitize(&mut self, mut contact: Contact) -> Contact {
        let before = contact.addrs.len();
        let max_len = self.config.max_addr_len;
        contact.addrs.retain(|a| a.0.len() <= max_len);
        contact.addrs.truncate(self.config.max_addrs_per_contact);
        if contact.addrs.len() != before {
            self.stats.bad_contacts += 1;
        }
        contact
    }

    /// A peer proved alive: refresh it in the table, pinging a stale entry when its bucket is full.
    /// Whether `id` carries the proof of work the configuration asks for.
    fn observe(&mut self, now: Instant, contact: Contact) {
        let id = contact.id;
        if !id.has_work(self.config.id_difficulty) {
            self.stats.weak_ids += 1;
            return;
        }
        match self.table.insert(contact, now) {
            InsertResult::Inserted => {
                if self.refresh_at.is_none() {
                    self.refresh_at = self.next_refresh();
                }
                self.event(Event::PeerAdded { id });
            }
            InsertResult::PingStale { stale } => {
                let _ = self.send_request(now, stale, Request::Ping, Purpose::StalePing);
            }
            InsertResult::Updated | InsertResult::Queued | InsertResult::SelfId => {}
        }
    }

    fn send_request(&mut self, now: Instant, to: Contact, body: Request, purpose: Purpose) -> bool {
        if self.requests.len() >= self.config.max_pending_requests {
            return false;
        }
        let retries = match purpose {
            Purpose::Query(_) | Purpose::PutStore(_) => self.config.request_retries,
            Purpose::StalePing | Purpose::FireAndForget => 0,
        };
        self.dispatch(now, to, body, purpose, retries);
        true
    }

    /// Queues one attempt of a request under a fresh id, with its deadline.
    fn dispatch(&mut self, now: Instant, to: Contact, body: Request, purpose: Purpose, retries_left: u8) {
        let mut id = RequestId(self.rng.next_u64());
        while self.requests.contains_key(&id) {
            id = RequestId(self.rng.next_u64());
        }
        let deadline = now + self.timeout_for(&purpose);
        let resend = (retries_left > 0).then(|| (to.clone(), body.clone(), retries_left));
        let full = now + self.config.request_timeout;
        let grace = (matches!(purpose, Purpose::Query(_)) && resend.is_none() && full > deadline).then_some(full);
        self.requests.insert(id, Outgoing { peer: to.id, deadline, purpose, resend, sent: now, grace, slow: false });
        self.deadlines.insert((deadline, id));
        self.outputs.push_back(Output::Send { to, msg: Message::Request { id, body } });
    }

    /// How long to wait for an answer: lookup requests and pings adapt to the round trips seen (RFC 6298,
    /// between `min_request_timeout` and `request_timeout`); stores, which wait on the peer's disk, get
    /// the full `request_timeout`.
    fn timeout_for(&self, purpose: &Purpose) -> Duration {
        let max = self.config.request_timeout;
        match (purpose, self.rtt) {
            (Purpose::Query(_) | Purpose::StalePing, Some(rtt)) if self.config.adaptive_timeout => {
                rtt.timeout().clamp(self.config.min_request_timeout.min(max), max)
            }
            _ => max,
        }
    }

    /// Sends a timed-out request again, if it has attempts left. Returns the request back otherwise.
    fn retry(&mut self, now: Instant, out: Outgoing) -> Option<Outgoing> {
        let Some((to, body, left @ 1..)) = out.resend else { return Some(out) };
        self.dispatch(now, to, body, out.purpose, left - 1);
        None
    }

    fn respond(&mut self, to: Contact, id: RequestId, body: Response) {
        self.outputs.push_back(Output::Send { to, msg: Message::Response { id, body } });
    }

    fn push_store(&mut self, op: StoreOp, purpose: Option<StorePurpose>) {
        let id = StoreOpId(self.next_store_op);
        self.next_store_op += 1;
        if let Some(p) = purpose {
            self.store_ops.insert(id, p);
        }
        self.outputs.push_back(Output::Store { id, op });
    }

    fn index_record(&mut self, now: Instant, key: Key, mut meta: RecordMeta) {
        meta.replicate_at = self.next_replication(now, meta.expires);
        if let Some(old) = self.records.insert(key, meta) {
            self.expiries.remove(&(old.expires, key));
            if let Some(t) = old.replicate_at {
                self.replications.remove(&(t, key));
            }
        }
        self.expiries.insert((meta.expires, key));
        if let Some(t) = meta.replicate_at {
            self.replications.insert((t, key));
        }
    }

    /// When a record stored (or stored again) now is next replicated by this node: one interval from now,
    /// minus up to a quarter of it at random so the holders of a record do not all fire together (the
    /// first one's stores push the others' times back). `None` when replication is off or the record
    /// expires first.
    fn next_replication(&mut self, now: Instant, expires: Instant) -> Option<Instant> {
        let interval = self.config.replicate_interval;
        if interval.is_zero() {
            return None;
        }
        let jitter_ms = u64::try_from(interval.as_millis() / 4).unwrap_or(u64::MAX).max(1);
        let at = now + interval - Duration::from_millis(self.rng.next_u64() % jitter_ms);
        (at < expires).then_some(at)
    }

    fn nodes_for(&self, target: &NodeId, requester: &NodeId) -> Response {
        // Peers whose last request to them failed are suspected gone: they are not handed out, so departed
        // peers do not crowd live ones out of answers. Ask for twice as many only when suspects are present.
        let want = self.config.k.min(self.config.max_contacts_per_reply);
        let usable = |e: &crate::routing::Entry| e.failures == 0 && &e.id != requester;
        let mut entries = self.table.closest_entries(target, want + 1);
        if entries.iter().filter(|e| usable(e)).count() < want.min(entries.len()) {
            entries = self.table.closest_entries(target, want * 2);
        }
        let closer = entries.iter().filter(|e| usable(e)).take(want).map(|e| e.contact()).collect();
        Response::Nodes { closer }
    }

    fn handle_request(&mut self, now: Instant, from: Contact, id: RequestId, body: Request) {
        match body {
            Request::Ping => self.respond(from, id, Response::Pong),
            Request::FindNode { target } => {
                let body = self.nodes_for(&target, &from.id);
                self.respond(from, id, body);
            }
            Request::FindValue { key } => {
                if self.records.contains_key(&key) && self.inbound_store_ops < self.config.max_pending_store_ops {
                    self.inbound_store_ops += 1;
                    self.push_store(
                        StoreOp::Get { key },
                        Some(StorePurpose::InboundFindValue { from, request: id, key }),
                    );
                } else {
                    let body = self.nodes_for(&NodeId::from_key(&key), &from.id);
                    self.respond(from, id, body);
                }
            }
            Request::Store { record, ttl_secs } => {
                let key = record.key;
                let ttl = Duration::from_secs(u64::from(ttl_secs));
                let refusal = if record.value.len() > self.config.max_record_size {
                    self.stats.refused_too_large += 1;
                    Some(StoreRefusal::TooLarge)
                } else if ttl.is_zero() || ttl > self.config.max_record_ttl {
                    self.stats.refused_bad_ttl += 1;
                    Some(StoreRefusal::BadTtl)
                } else if !self.config.record_policy.accepts(&key, &record.value) {
                    self.stats.refused_invalid += 1;
                    Some(StoreRefusal::Invalid)
                } else if (!self.records.contains_key(&key) && self.records.len() >= self.config.max_records)
                    || self.inbound_store_ops >= self.config.max_pending_store_ops
                {
                    self.stats.refused_full += 1;
                    Some(StoreRefusal::Full)
                } else {
                    None
                };
                if let Some(reason) = refusal {
                    self.event(Event::StoreRefused { key, from: from.id, reason });
                    self.respond(from, id, Response::StoreAck { refused: Some(reason) });
                    return;
                }
                let expires = now + ttl;
                let size = record.value.len() as u32;
                self.inbound_store_ops += 1;
                let purpose = StorePurpose::InboundStore { from, request: id, key, expires, size };
                self.push_store(StoreOp::Put { record, expires }, Some(purpose));
            }
        }
    }

    fn on_request_failed(&mut self, now: Instant, out: Outgoing) {
        match out.purpose {
            Purpose::StalePing => {
                // The stale entry did not answer: it makes way for the newest waiting contact.
                if self.table.remove(&out.peer, now).is_some() {
                    self.event(Event::PeerRemoved { id: out.peer });
                }
                return;
            }
            Purpose::Query(q) => {
                if let Some(query) = self.queries.get_mut(&q) {
                    query.lookup.on_failure(&out.peer);
                }
            }
            Purpose::PutStore(q) => {
                if let Some(Query { kind: QueryKind::Put { storing: Some(p), .. }, extra_failures, .. }) =
                    self.queries.get_mut(&q)
                {
                    p.answered += 1;
                    *extra_failures += 1;
                }
            }
            Purpose::FireAndForget => {}
        }
        if self.table.record_failure(&out.peer) >= self.config.max_failures
            && self.table.remove(&out.peer, now).is_some()
        {
            self.event(Event::PeerRemoved { id: out.peer });
        }
    }
}

fn ttl_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1)
}

mod queries;

/// A uniformly random id whose distance to `local` falls in bucket `index`.
fn random_id_in_bucket(rng: &mut ChaCha8Rng, local: &NodeId, index: usize) -> NodeId {
    let mut d = [0u8; ID_LEN];
    rng.fill_bytes(&mut d);
    let byte = index / 8;
    let bit = 7 - (index % 8);
    for b in d.iter_mut().take(byte) {
        *b = 0;
    }
    let keep_below = (1u16 << bit) as u8 - 1;
    d[byte] = (d[byte] & keep_below) | (1 << bit);
    let mut id = *local.as_bytes();
    for (o, x) in id.iter_mut().zip(d) {
        *o ^= x;
    }
    NodeId::from_bytes(id)
}

#[cfg(test)]
mod tests;
