//! Running queries: starting lookups, feeding them answers, and finishing them.

use super::query::{Get, GetPhase, LocalWrite, Put, Query, QueryKind, StoreRound};
use super::requests::Purpose;
use super::{ttl_secs, Node};
use crate::event::{Event, QueryId, QueryStats};
use crate::id::{Distance, NodeId};
use crate::lookup::{Lookup, LookupParams, Next};
use crate::message::{Contact, Request, Response};
use crate::record::Record;
use crate::time::Instant;

impl Node {
    pub(super) fn next_query_id(&mut self) -> QueryId {
        let id = QueryId(self.next_query);
        self.next_query += 1;
        id
    }

    pub(super) fn start_query(
        &mut self,
        now: Instant,
        target: NodeId,
        seeds: Vec<Contact>,
        kind: QueryKind,
    ) -> QueryId {
        self.table.touch(&target, now);
        let mut lookup = Lookup::new(target, seeds, self.lookup_params());
        if self.config.widen_in_region {
            if let Some(radius) = self.region_radius() {
                lookup.set_region_radius(radius);
            }
        }
        self.insert_query(now, lookup, kind)
    }

    fn insert_query(&mut self, now: Instant, lookup: Lookup, kind: QueryKind) -> QueryId {
        let id = self.next_query_id();
        self.queries.insert(id, Query { lookup, started: now, kind, local_write: LocalWrite::Done });
        id
    }

    fn lookup_params(&self) -> LookupParams {
        LookupParams {
            k: self.config.k,
            alpha: self.config.alpha,
            max_candidates: self.config.max_lookup_candidates,
            stall_after: self.config.stall_after,
            distrust_after: self.config.distrust_after,
            paths: self.config.lookup_paths,
        }
    }

    /// A put whose stores ask the peers to keep the record for `ttl` (`cas`: only where the version held
    /// is that `seq`). A record too large or failing the record policy finishes at once with zero acks.
    pub(super) fn start_put(
        &mut self,
        now: Instant,
        record: Record,
        (ttl, cas): (core::time::Duration, Option<u64>),
        report: bool,
    ) -> QueryId {
        if let Err(refusal) = self.records.valid(&record) {
            return self.put_refused(record.key, refusal, report);
        }
        let target = NodeId::from_key(&record.key);
        let ttl_secs = ttl_secs(ttl);
        let kind = QueryKind::Put(Put::Looking { record, ttl_secs, cas, report });
        if let Some(everyone) = self.whole_small_swarm(now) {
            // Every peer there is, known from a lookup moments ago: no need to look the key up.
            let lookup = Lookup::known(target, everyone, self.lookup_params());
            return self.insert_query(now, lookup, kind);
        }
        let seeds = self.table.closest(&target, self.config.k);
        self.start_query(now, target, seeds, kind)
    }

    /// A put that never went out: it finishes at once with zero acks and the reason.
    pub(super) fn put_refused(&mut self, key: crate::id::Key, refusal: crate::StoreRefusal, report: bool) -> QueryId {
        let query = self.next_query_id();
        if report {
            let stats = QueryStats::default();
            let refusal = Some(refusal);
            self.event(Event::PutFinished { query, key, acks: 0, attempted: 0, refusal, stats });
        }
        query
    }

    /// Sends what every running query wants next and finishes those that are done.
    pub(super) fn drive_queries(&mut self, now: Instant) {
        let ids: Vec<QueryId> = self.queries.keys().copied().collect();
        for id in ids {
            self.drive_query(now, id);
        }
    }

    pub(super) fn drive_query(&mut self, now: Instant, id: QueryId) {
        loop {
            let Some(q) = self.queries.get_mut(&id) else { return };
            if q.waits_locally() {
                return;
            }
            if let QueryKind::Put(Put::Storing { .. }) = &q.kind {
                if q.put_over() {
                    self.finish_query(now, id);
                }
                return;
            }
            let request = match &q.kind {
                QueryKind::Get(get) => Request::FindValue { key: get.key },
                _ => Request::FindNode { target: *q.lookup.target() },
            };
            match q.lookup.poll_next() {
                Next::Query(contact) => {
                    let peer = contact.id;
                    if !self.send_request(now, contact, request, Purpose::Query(id)) {
                        if let Some(q) = self.queries.get_mut(&id) {
                            q.lookup.on_failure(&peer);
                        }
                    }
                }
                Next::Wait => return,
                Next::Finished => {
                    self.finish_query(now, id);
                    if !self.queries.contains_key(&id) {
                        return;
                    }
                }
            }
        }
    }

    /// Called when a query's lookup is over (or a put's stores are all answered).
    fn finish_query(&mut self, now: Instant, id: QueryId) {
        let Some(q) = self.queries.remove(&id) else { return };
        if !matches!(q.kind, QueryKind::Put(Put::Storing { .. })) {
            self.learn_swarm_size(now, &q.lookup);
        }
        let stats = q.stats(now);
        let Query { lookup, started, kind, local_write } = q;
        match kind {
            QueryKind::Put(Put::Looking { record, ttl_secs, cas, report }) => {
                let put = (record, ttl_secs, cas, report);
                self.store_at_closest(now, id, (lookup, started, local_write), put)
            }
            QueryKind::Put(Put::Storing { record, report, round }) => {
                if report {
                    let (acks, attempted) = (round.acked, round.attempted);
                    let refusal = match local_write {
                        LocalWrite::Failed => Some(crate::StoreRefusal::StorageFailed),
                        _ => round.conflict,
                    };
                    self.event(Event::PutFinished { query: id, key: record.key, acks, attempted, refusal, stats });
                }
            }
            QueryKind::FindNode => {
                let closest = lookup.closest();
                self.event(Event::LookupFinished { query: id, target: *lookup.target(), closest, stats });
            }
            QueryKind::Bootstrap { report } => self.finish_bootstrap(now, id, &lookup, (stats, report)),
            QueryKind::Refresh => {}
            QueryKind::Get(get) => self.finish_get(now, id, get, stats),
        }
    }

    /// A put's lookup is done: store at the closest peers, then wait for their answers.
    fn store_at_closest(
        &mut self,
        now: Instant,
        id: QueryId,
        (lookup, started, local_write): (Lookup, Instant, LocalWrite),
        (record, ttl_secs, cas, report): (Record, u32, Option<u64>, bool),
    ) {
        let mut round = StoreRound::default();
        for peer in lookup.closest() {
            let body = Request::Store { record: Box::new(record.clone()), ttl_secs, cas };
            if self.send_request(now, peer, body, Purpose::PutStore(id)) {
                round.attempted += 1;
            }
        }
        let kind = QueryKind::Put(Put::Storing { record, report, round });
        let query = Query { lookup, started, kind, local_write };
        let done = query.put_over();
        self.queries.insert(id, query);
        if done {
            self.finish_query(now, id);
        }
    }

    fn finish_bootstrap(&mut self, now: Instant, id: QueryId, lookup: &Lookup, (stats, report): (QueryStats, bool)) {
        let closest = lookup.closest();
        let nearest = closest.first().and_then(|c| self.local.id.distance(&c.id).bucket_index());
        // A join that reached nobody (its seeds down, or every answer lost) is tried again later.
        self.joined(now, !closest.is_empty());
        if report {
            self.event(Event::LookupFinished { query: id, target: *lookup.target(), closest, stats });
        }
        self.schedule_self_lookup(now);
        if let Some(c) = nearest {
            // Buckets the self-lookup already reached need no refresh.
            for index in (0..c).rev().take(self.config.join_refresh_buckets) {
                if self.table.bucket_len(index) == 0 {
                    self.refresh_bucket(now, index);
                }
            }
        }
    }

    /// A get is over: the record found is cached at the closest peer that lacked it, and a signed record
    /// is sent to the peers that answered with older versions (read repair).
    fn finish_get(&mut self, now: Instant, id: QueryId, get: Get, stats: QueryStats) {
        let Get { key, found, found_ttl, lacking, versions, .. } = get;
        if let Some(record) = found.as_ref() {
            let ttl_secs = found_ttl.unwrap_or_else(|| ttl_secs(self.config.record_ttl));
            let newest = record.seq();
            let behind = versions.into_iter().filter(|(_, seq)| newest.is_some_and(|n| *seq < n)).map(|(c, _)| c);
            for peer in lacking.into_iter().chain(behind) {
                let body = Request::Store { record: Box::new(record.clone()), ttl_secs, cas: None };
                let _ = self.send_request(now, peer, body, Purpose::FireAndForget);
            }
        }
        self.event(Event::GetFinished { query: id, key, record: found, stats });
    }

    /// The local store answered a get's read: an unsigned record found ends the lookup before it starts;
    /// a signed one is the version to beat.
    pub(super) fn on_local_read(&mut self, now: Instant, query: QueryId, record: Option<Record>) {
        let quorum = self.config.get_quorum;
        let Some(q) = self.queries.get_mut(&query) else { return };
        if let QueryKind::Get(get) = &mut q.kind {
            get.phase = GetPhase::Looking;
            if let Some(record) = record.filter(|r| r.key == get.key) {
                let ttl = self.records.meta(&get.key).map(|m| super::ttl_secs(m.expires.saturating_since(now)));
                if get.offer(None, record, ttl, quorum) {
                    q.lookup.finish();
                }
            }
        }
        self.drive_query(now, query);
    }

    /// A peer answered a query's request.
    pub(super) fn on_query_response(&mut self, id: QueryId, from: Contact, body: Response) {
        let body = match body {
            Response::Nodes { closer } => {
                self.accept_contacts(&from.id, closer).map(|closer| Response::Nodes { closer })
            }
            Response::Value { record, ttl_secs, closer } => {
                self.accept_contacts(&from.id, closer).map(|closer| Response::Value { record, ttl_secs, closer })
            }
            other => Some(other),
        };
        let Some(body) = body else {
            if let Some(q) = self.queries.get_mut(&id) {
                q.lookup.on_failure(&from.id);
            }
            return;
        };
        let Some(q) = self.queries.get_mut(&id) else { return };
        match (&mut q.kind, body) {
            (QueryKind::Put(Put::Storing { .. }), _) => {
                // A late answer to the put's lookup: nothing more to learn from it.
            }
            (
                QueryKind::FindNode
                | QueryKind::Bootstrap { .. }
                | QueryKind::Refresh
                | QueryKind::Put(Put::Looking { .. }),
                Response::Nodes { closer },
            ) => {
                q.lookup.on_success(&from.id, closer);
            }
            (QueryKind::Get(get), Response::Nodes { closer }) => {
                let target = NodeId::from_key(&get.key);
                if get.lacking.as_ref().is_none_or(|l| from.id.distance(&target) < l.id.distance(&target)) {
                    get.lacking = Some(from.clone());
                }
                q.lookup.on_success(&from.id, closer);
            }
            (QueryKind::Get(get), Response::Value { record, ttl_secs, closer }) => {
                if record.key == get.key && self.records.acceptable(&record) {
                    q.lookup.on_success(&from.id, closer);
                    if get.offer(Some(from), *record, Some(ttl_secs), self.config.get_quorum) {
                        q.lookup.finish();
                    }
                } else {
                    q.lookup.on_failure(&from.id);
                    self.stats.bad_values += 1;
                    self.misbehaved(from.id, "value for another key, too large, or failing the record policy");
                }
            }
            (_, _) => {
                q.lookup.on_failure(&from.id);
                self.stats.mismatched_responses += 1;
                self.misbehaved(from.id, "answer of the wrong kind");
            }
        }
    }

    /// Our own write for put `id` is done (or failed): the put may report.
    pub(super) fn on_local_write(&mut self, now: Instant, id: QueryId, ok: bool) {
        let Some(q) = self.queries.get_mut(&id) else { return };
        q.local_write = if ok { LocalWrite::Done } else { LocalWrite::Failed };
        self.drive_query(now, id);
    }

    /// A peer answered one of a put's stores (`None`: the store failed).
    pub(super) fn on_store_answer(&mut self, id: QueryId, from: &NodeId, body: Option<Response>) {
        let Some(q) = self.queries.get_mut(&id) else { return };
        let QueryKind::Put(Put::Storing { round, .. }) = &mut q.kind else { return };
        match body {
            Some(Response::StoreAck { refused: None }) => round.acked += 1,
            Some(Response::StoreAck { refused: Some(reason) }) => round.refused(reason),
            None => round.failed += 1,
            Some(_) => {
                round.failed += 1;
                self.stats.mismatched_responses += 1;
                self.misbehaved(*from, "answer of the wrong kind");
            }
        }
    }

    /// A lookup request failed for good (or was slow: `slow`, and the lookup stops waiting for it).
    pub(super) fn on_lookup_failure(&mut self, id: QueryId, peer: &NodeId, slow: bool) {
        if let Some(q) = self.queries.get_mut(&id) {
            if slow {
                q.lookup.on_slow(peer);
            } else {
                q.lookup.on_failure(peer);
            }
        }
    }

    /// A lookup request to `peer` timed out and went again: the lookup goes on without the peer, but waits
    /// for the resend before it finishes.
    pub(super) fn on_lookup_resent(&mut self, id: QueryId, peer: &NodeId) {
        if let Some(q) = self.queries.get_mut(&id) {
            q.lookup.on_resent(peer);
        }
    }

    /// A lookup request to `peer` waits on a link being set up: the lookup goes on without the peer but
    /// waits for its answer before it finishes (see [`crate::lookup::Lookup::on_dialing`]).
    pub(super) fn on_lookup_dialing(&mut self, id: QueryId, peer: &NodeId) {
        if let Some(q) = self.queries.get_mut(&id) {
            q.lookup.on_dialing(peer);
        }
    }

    /// Checks a `Nodes` answer against the limits: too many contacts refuses it whole; our own id and ids
    /// without the required proof of work are skipped.
    fn accept_contacts(&mut self, from: &NodeId, closer: Vec<Contact>) -> Option<Vec<Contact>> {
        if closer.len() > self.config.max_contacts_per_reply {
            self.stats.oversized_replies += 1;
            self.misbehaved(*from, "too many contacts in an answer");
            return None;
        }
        let local = self.local.id;
        let before = closer.len();
        let difficulty = self.config.id_difficulty;
        let worthy = |c: &Contact| c.id != local && c.id.has_work(difficulty);
        let closer: Vec<Contact> = closer.into_iter().filter(worthy).map(|c| self.sanitize(c)).collect();
        self.stats.weak_ids += (before - closer.len()) as u64;
        Some(closer)
    }

    /// Twice the distance to our k-th closest neighbour: around any point, the k closest nodes are
    /// expected within about this distance (ids are uniform). `None` while we know fewer than k peers.
    fn region_radius(&self) -> Option<Distance> {
        let k = self.config.k;
        let entries = self.table.closest_entries(&self.local.id, k);
        (entries.len() >= k).then(|| entries[k - 1].id.distance(&self.local.id).doubled())
    }
}
