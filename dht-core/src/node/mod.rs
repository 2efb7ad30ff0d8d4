//! The sans-IO Kademlia node: inputs carry `now`, outputs are queued, storage is an output too.
//!
//! `Node` is a router over parts that own their state: [`requests`] (ids, deadlines, retries, the RTT
//! estimate), [`records`] (the record index, expiry, replication, republishing, storage operations, the
//! record rules), the running [`query`]s (driven in [`queries`]), the routing table and its
//! [`maintenance`] timers. It routes each input to the part it concerns and reports the earliest of their
//! timers; [`inbound`] answers peers' requests.

mod inbound;
mod maintenance;
mod queries;
mod query;
mod records;
mod requests;
mod room;
mod small_swarm;
mod stats;

pub use stats::NodeStats;

use crate::config::ValidConfig;
use crate::event::{Event, Output, QueryId, StoreOp, StoreOpId, StoreResult};
use crate::id::{Key, NodeId};
use crate::message::{Contact, Message, Request};
use crate::record::Record;
use crate::routing::{InsertResult, RoutingTable};
use crate::time::Instant;
use core::time::Duration;
use maintenance::Maintenance;
use query::{Get, GetPhase, Query, QueryKind};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use records::{Records, StorePurpose};
use requests::{Expired, Purpose, Requests};
use std::collections::{BTreeMap, VecDeque};

/// A Kademlia node as a state machine. See the crate docs for the calling convention.
#[derive(Debug)]
pub struct Node {
    config: ValidConfig,
    local: Contact,
    table: RoutingTable,
    rng: ChaCha8Rng,
    requests: Requests,
    records: Records,
    queries: BTreeMap<QueryId, Query>,
    next_query: u64,
    maintenance: Maintenance,
    /// Every peer there is, while the swarm is known to be smaller than k.
    small_swarm: Option<small_swarm::SmallSwarm>,
    outputs: VecDeque<Output>,
    stats: NodeStats,
}

impl Node {
    /// A node with identity `local` (its id and the addresses it advertises), randomness from `seed`
    /// (draw it from the OS outside tests and simulations: request ids and refresh targets come from it).
    pub fn new(config: ValidConfig, local: Contact, seed: u64, now: Instant) -> Self {
        let table = RoutingTable::new(local.id, config.k, config.replacement_cache)
            .with_ping_after(config.ping_after)
            .with_bucket_growth(config.bucket_growth);
        Node {
            requests: Requests::new(&config),
            records: Records::new(&config),
            maintenance: Maintenance::new(&config, now),
            small_swarm: None,
            config,
            local,
            table,
            rng: ChaCha8Rng::seed_from_u64(seed),
            queries: BTreeMap::new(),
            next_query: 0,
            outputs: VecDeque::new(),
            stats: NodeStats::default(),
        }
    }

    /// Our id.
    pub fn local_id(&self) -> &NodeId {
        &self.local.id
    }

    /// The configuration in force.
    pub fn config(&self) -> &ValidConfig {
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
        self.records.stored_bytes()
    }

    /// Whether a record under `key` is held.
    pub fn holds(&self, key: &Key) -> bool {
        self.records.holds(key)
    }

    /// Whether the record under `key` is one of ours: put here (and not refused) or restored as ours, and
    /// republished from here.
    pub fn is_own(&self, key: &Key) -> bool {
        self.records.is_own(key)
    }

    /// Queries still running.
    pub fn active_queries(&self) -> usize {
        self.queries.len()
    }

    /// Requests waiting for an answer.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    // ---- inputs ----------------------------------------------------------------------------------------

    /// Adds a contact known from a trusted source (a persisted routing table). Peers met on links are added
    /// by [`Node::handle_message`]. May emit a `Ping` of a stale entry.
    pub fn add_contact(&mut self, now: Instant, contact: Contact) {
        let contact = self.sanitize(contact);
        self.observe(now, contact);
    }

    /// Tells the core about a record already in the store (after a restart), so it serves and expires it;
    /// `own`: one this node published, republished from now on and never evicted for others' records.
    /// Records past `expires` are dropped with a `Remove`.
    pub fn restore_record(&mut self, now: Instant, key: Key, expires: Instant, size: usize, own: bool) {
        self.records.restore(now, &mut self.rng, &mut self.outputs, (key, expires, size, own));
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
                let Some(purpose) = self.requests.on_response(now, &from.id, id, &mut self.stats) else { return };
                self.observe(now, from.clone());
                // Only the query the answer belongs to can move on.
                match purpose {
                    Purpose::Query(q) => {
                        self.on_query_response(q, from, body);
                        self.drive_query(now, q);
                    }
                    Purpose::PutStore(q) => {
                        self.on_store_answer(q, &from.id, Some(body));
                        self.drive_query(now, q);
                    }
                    Purpose::StalePing | Purpose::FireAndForget => {}
                }
            }
            // The driver's to carry; it says nothing of the routing table.
            Message::Relay(_) => {}
        }
    }

    /// A storage operation finished. Unknown ids are ignored.
    pub fn handle_store_result(&mut self, now: Instant, op: StoreOpId, result: StoreResult) {
        let Some(purpose) = self.records.take_op(op) else { return };
        if let StoreResult::Failed(_) = result {
            self.stats.store_failures += 1;
        }
        match purpose {
            StorePurpose::InboundStore { from, request, key, meta } => {
                self.finish_inbound_store(now, (from, request, key), meta, &result)
            }
            StorePurpose::InboundFindValue { from, request, key } => {
                self.finish_inbound_find_value(now, (from, request, key), result)
            }
            StorePurpose::LocalPublish { key, meta, query } => {
                let ok = result == StoreResult::Done;
                if ok {
                    self.records.index(now, &mut self.rng, key, meta);
                }
                if let Some(query) = query {
                    self.on_local_write(now, query, ok);
                }
            }
            StorePurpose::LocalGet { query } => {
                let value = match result {
                    StoreResult::Value(v) => v,
                    _ => None,
                };
                self.on_local_read(now, query, value);
            }
            StorePurpose::Republish { key } => match result {
                StoreResult::Value(Some(record)) if record.key == key => {
                    let query = self.start_put(now, record, (self.config.record_ttl, None), false);
                    self.drive_query(now, query);
                }
                _ => self.records.unpublish(&key),
            },
            StorePurpose::Replicate { key, expires } => {
                if let StoreResult::Value(Some(record)) = result {
                    if expires > now && record.key == key {
                        let ttl = expires.saturating_since(now);
                        let query = self.start_put(now, record, (ttl, None), false);
                        self.drive_query(now, query);
                    }
                }
                // Next round: the put's store here (if we are among the k closest) or the next interval.
                self.records.reschedule(now, &mut self.rng, key);
            }
            StorePurpose::LearnVersion { key } => {
                if let StoreResult::Value(record) = result {
                    self.records.learn(&mut self.outputs, key, record.as_ref());
                }
            }
        }
    }

    /// The requests sent to `peer` wait on a link the caller is setting up to it (a dial, after the
    /// [`Output::Send`](crate::Output::Send) of a request to a peer it holds no link to). They wait up to
    /// [`Config::connect_timeout`](crate::Config::connect_timeout) instead of a round trip's time and are
    /// not sent again; the lookups that asked `peer` go on without it but hold their end for its answer
    /// (a first contact costs a connection and a handshake, which a round-trip timeout would count as a
    /// departed peer). Call again for requests queued on the same dial later; those already waiting on it
    /// stay as they are.
    pub fn dialing(&mut self, now: Instant, peer: &NodeId) {
        for query in self.requests.dialing(now, peer) {
            self.on_lookup_dialing(query, peer);
        }
        self.drive_queries(now);
    }

    /// The caller could not set up a link to `peer`: the requests waiting on it fail now rather than at
    /// their timeout, as a timeout would fail them.
    pub fn unreachable(&mut self, now: Instant, peer: &NodeId) {
        for purpose in self.requests.unreachable(peer, &mut self.stats) {
            self.forget_swarm_size();
            self.on_request_failed(now, *peer, purpose);
        }
        self.drive_queries(now);
    }

    /// The link to `peer` closed (either end closed it, or it broke) while requests to it may be in
    /// flight: they were lost with it, so each is handled now as its timeout would handle it — sent again
    /// where it has attempts left (the caller then sets up a new link, see [`Node::dialing`]), failed where
    /// not — instead of waiting out a timeout no answer can beat. Harmless when nothing was in flight.
    pub fn link_lost(&mut self, now: Instant, peer: &NodeId) {
        if self.requests.link_lost(now, peer, &mut self.stats) > 0 {
            self.handle_timeout(now);
        }
    }

    /// Deadlines passed: request timeouts, record expiry, republishing, bucket refresh. Early or repeated
    /// calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(expired) = self.requests.next_expired(now, &mut self.rng, &mut self.outputs, &mut self.stats) {
            match expired {
                Expired::Slow { peer, query } => {
                    self.forget_swarm_size();
                    self.on_lookup_failure(query, &peer, true)
                }
                Expired::Resent { peer, query } => {
                    self.forget_swarm_size();
                    self.on_lookup_resent(query, &peer)
                }
                Expired::Failed { peer, purpose } => {
                    self.forget_swarm_size();
                    self.on_request_failed(now, peer, purpose)
                }
            }
        }
        self.records.handle_timeout(now, &mut self.outputs, &mut self.stats);
        self.handle_maintenance(now);
        self.drive_queries(now);
    }

    // ---- commands --------------------------------------------------------------------------------------

    /// Joins the network: a lookup of our own id through `seeds` (unauthenticated contacts, e.g. a
    /// bootstrap node's address). Finishes with [`Event::LookupFinished`] for our id. A join that reaches
    /// nobody is tried again through the same seeds (the first k), with a growing pause, until one answers.
    pub fn bootstrap(&mut self, now: Instant, seeds: Vec<Contact>) -> QueryId {
        let target = self.local.id;
        let seeds: Vec<Contact> = seeds.into_iter().filter(|s| s.id != target).map(|s| self.sanitize(s)).collect();
        self.maintenance.seeds = seeds.iter().take(self.config.k).cloned().collect();
        let id = self.join(now, seeds, true);
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
    /// `republish_interval`. Finishes with [`Event::PutFinished`]. A record refused here (too large,
    /// failing the record policy, older than the version held) finishes at once with zero acks and the
    /// reason.
    pub fn put(&mut self, now: Instant, record: Record) -> QueryId {
        self.put_cas(now, record, None)
    }

    /// [`Node::put`] as a compare-and-swap of a signed record: each holder (and this node) stores it only
    /// if the version it holds is `cas` (or it holds none); a holder that holds another refuses with
    /// [`crate::StoreRefusal::CasFailed`] and its `seq`, which the put reports.
    pub fn put_cas(&mut self, now: Instant, record: Record, cas: Option<u64>) -> QueryId {
        let ttl = self.config.record_ttl;
        let write = match self.records.publish(now, &mut self.outputs, &record, (ttl, cas)) {
            Ok(op) => op,
            Err(refusal) => return self.put_refused(record.key, refusal, true),
        };
        let id = self.start_put(now, record, (ttl, cas), true);
        if let Some(q) = self.queries.get_mut(&id) {
            // The put reports once its own write is durable too.
            q.local_write = query::LocalWrite::Pending;
            self.records.attach(write, id);
        }
        self.drive_queries(now);
        id
    }

    /// Looks `key` up: locally first, then at the peers closest to it. An unsigned record ends the get at
    /// the first valid value; for a signed one it asks on until `get_quorum` values (or the k closest) have
    /// answered and returns the highest `seq`, sending it to the holders that answered with older ones.
    /// The record is cached at the closest peer that lacked it. Finishes with [`Event::GetFinished`].
    pub fn get(&mut self, now: Instant, key: Key) -> QueryId {
        let target = NodeId::from_key(&key);
        let seeds = self.table.closest(&target, self.config.k);
        let held = self.records.holds(&key);
        // A held record is read first; the lookup is not driven before the read answers.
        let phase = if held { GetPhase::ReadingLocal } else { GetPhase::Looking };
        let kind = QueryKind::Get(Get::new(key, phase));
        let id = self.start_query(now, target, seeds, kind);
        if held {
            let purpose = StorePurpose::LocalGet { query: id };
            self.records.push_op(&mut self.outputs, StoreOp::Get { key }, Some(purpose));
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

    /// When [`Node::handle_timeout`] must be called next, `None` if nothing is scheduled: the earliest of
    /// the parts' timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.requests.poll_timeout(), self.records.poll_timeout(), self.maintenance.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
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
        contact.addrs.retain(|a| a.as_str().len() <= max_len);
        contact.addrs.truncate(self.config.max_addrs_per_contact);
        if contact.addrs.len() != before {
            self.stats.bad_contacts += 1;
        }
        contact
    }

    /// A peer proved alive: refresh it in the table, pinging a stale entry when its bucket is full. Ids
    /// without the proof of work the configuration asks for stay out.
    fn observe(&mut self, now: Instant, contact: Contact) {
        let id = contact.id;
        if !id.has_work(self.config.id_difficulty) {
            self.stats.weak_ids += 1;
            return;
        }
        match self.table.insert(contact, now) {
            InsertResult::Inserted => {
                self.forget_swarm_size();
                self.on_peer_added();
                self.event(Event::PeerAdded { id });
            }
            InsertResult::PingStale { stale } => {
                let _ = self.send_request(now, stale, Request::Ping, Purpose::StalePing);
            }
            InsertResult::Updated | InsertResult::Queued | InsertResult::SelfId => {}
        }
    }

    /// Sends a request to `to`, at the addresses our table holds for it when it is there: those came from
    /// the peer itself (its handshake), where `to` may come from a third party's answer, and a failure to
    /// reach addresses someone else handed out must not count against the real peer's entry.
    fn send_request(&mut self, now: Instant, to: Contact, body: Request, purpose: Purpose) -> bool {
        let to = match self.table.get(&to.id) {
            Some(e) if *e.addrs != *to.addrs => {
                self.stats.unverified_addrs += 1;
                e.contact()
            }
            _ => to,
        };
        self.requests.send(now, &mut self.rng, &mut self.outputs, to, body, purpose)
    }

    fn on_request_failed(&mut self, now: Instant, peer: NodeId, purpose: Purpose) {
        match purpose {
            Purpose::StalePing => {
                // The stale entry did not answer: it makes way for the newest waiting contact.
                if self.table.remove(&peer, now).is_some() {
                    self.event(Event::PeerRemoved { id: peer });
                }
                return;
            }
            Purpose::Query(q) => self.on_lookup_failure(q, &peer, false),
            Purpose::PutStore(q) => self.on_store_answer(q, &peer, None),
            Purpose::FireAndForget => {}
        }
        if self.table.record_failure(&peer) >= self.config.max_failures && self.table.remove(&peer, now).is_some() {
            self.event(Event::PeerRemoved { id: peer });
        }
    }
}

/// A time to live in whole seconds, at least 1, as stores carry it.
fn ttl_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
use maintenance::random_id_in_bucket;

#[cfg(test)]
mod hardening_tests;
#[cfg(test)]
mod harness;
#[cfg(test)]
mod join_tests;
#[cfg(test)]
mod record_tests;
#[cfg(test)]
mod tests;
