//! Running queries: starting lookups, feeding them answers, and finishing them.

use super::{random_id_in_bucket, ttl_secs, Node, Purpose, PutProgress, Query, QueryKind};
use crate::event::{Event, QueryId, QueryStats};
use crate::id::{Distance, NodeId};
use crate::lookup::{Lookup, LookupParams, Next};
use crate::message::{Contact, Record, Request, Response};
use crate::time::Instant;

impl Node {
    pub(super) fn start_query(
        &mut self,
        now: Instant,
        target: NodeId,
        seeds: Vec<Contact>,
        kind: QueryKind,
    ) -> QueryId {
        let id = QueryId(self.next_query);
        self.next_query += 1;
        let params = LookupParams {
            k: self.config.k,
            alpha: self.config.alpha,
            max_candidates: self.config.max_lookup_candidates,
            stall_after: self.config.stall_after,
            distrust_after: self.config.distrust_after,
            paths: self.config.lookup_paths,
        };
        self.table.touch(&target, now);
        let mut lookup = Lookup::new(target, seeds, params);
        if self.config.widen_in_region {
            if let Some(radius) = self.region_radius() {
                lookup.set_region_radius(radius);
            }
        }
        let query = Query {
            kind,
            lookup,
            started: now,
            waiting_local: false,
            extra_requests: 0,
            extra_responses: 0,
            extra_failures: 0,
        };
        self.queries.insert(id, query);
        id
    }

    pub(super) fn start_put(&mut self, now: Instant, record: Record, report: bool) -> QueryId {
        let ttl = self.config.record_ttl;
        self.start_put_for(now, record, ttl, report)
    }

    /// A put whose stores ask the peers to keep the record for `ttl`.
    pub(super) fn start_put_for(
        &mut self,
        now: Instant,
        record: Record,
        ttl: core::time::Duration,
        report: bool,
    ) -> QueryId {
        let target = NodeId::from_key(&record.key);
        if record.value.len() > self.config.max_record_size
            || !self.config.record_policy.accepts(&record.key, &record.value)
        {
            let query = QueryId(self.next_query);
            self.next_query += 1;
            if report {
                let stats = QueryStats::default();
                self.event(Event::PutFinished { query, key: record.key, acks: 0, attempted: 0, stats });
            }
            return query;
        }
        let seeds = self.table.closest(&target, self.config.k);
        let ttl_secs = ttl_secs(ttl);
        self.start_query(now, target, seeds, QueryKind::Put { record, ttl_secs, storing: None, report })
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
            if q.waiting_local {
                return;
            }
            if let QueryKind::Put { storing: Some(p), .. } = &q.kind {
                if p.answered >= p.attempted {
                    self.finish_query(now, id);
                }
                return;
            }
            let request = match &q.kind {
                QueryKind::Get { key, .. } => Request::FindValue { key: *key },
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

    fn stats_of(q: &Query, now: Instant) -> QueryStats {
        QueryStats {
            requests: q.lookup.requests() + q.extra_requests,
            responses: q.lookup.responses() + q.extra_responses,
            failures: q.lookup.failures() + q.extra_failures,
            hops: q.lookup.hops(),
            duration: now.saturating_since(q.started),
        }
    }

    /// Called when a query's lookup is over (or a put's stores are all answered).
    fn finish_query(&mut self, now: Instant, id: QueryId) {
        let Some(mut q) = self.queries.remove(&id) else { return };
        let stats = Self::stats_of(&q, now);
        match &mut q.kind {
            QueryKind::Put { record, ttl_secs, storing: storing @ None, .. } => {
                // Lookup done: store at the closest peers, then wait for their acks.
                let closest = q.lookup.closest();
                let mut progress = PutProgress::default();
                for peer in closest {
                    let body = Request::Store { record: record.clone(), ttl_secs: *ttl_secs };
                    if self.send_request(now, peer, body, Purpose::PutStore(id)) {
                        progress.attempted += 1;
                    }
                }
                q.extra_requests += progress.attempted as u32;
                let done = progress.attempted == 0;
                *storing = Some(progress);
                self.queries.insert(id, q);
                if done {
                    self.finish_query(now, id);
                }
            }
            QueryKind::Put { record, storing: Some(p), report, .. } => {
                if *report {
                    self.event(Event::PutFinished {
                        query: id,
                        key: record.key,
                        acks: p.acks,
                        attempted: p.attempted,
                        stats,
                    });
                }
            }
            QueryKind::FindNode => {
                let closest = q.lookup.closest();
                self.event(Event::LookupFinished { query: id, target: *q.lookup.target(), closest, stats });
            }
            QueryKind::Bootstrap => {
                let closest = q.lookup.closest();
                let nearest = closest.first().and_then(|c| self.local.id.distance(&c.id).bucket_index());
                self.event(Event::LookupFinished { query: id, target: *q.lookup.target(), closest, stats });
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
            QueryKind::Refresh => {}
            QueryKind::Get { key, found, lacking } => {
                if let (Some(record), Some(peer)) = (found.as_ref(), lacking.take()) {
                    let ttl_secs = ttl_secs(self.config.record_ttl);
                    let body = Request::Store { record: record.clone(), ttl_secs };
                    let _ = self.send_request(now, peer, body, Purpose::FireAndForget);
                }
                self.event(Event::GetFinished { query: id, key: *key, record: found.take(), stats });
            }
        }
    }

    /// A peer answered a query's request.
    pub(super) fn on_query_response(&mut self, now: Instant, id: QueryId, from: Contact, body: Response) {
        let _ = now;
        let body = match body {
            Response::Nodes { closer } => match self.accept_contacts(&from.id, closer) {
                Some(closer) => Response::Nodes { closer },
                None => {
                    if let Some(q) = self.queries.get_mut(&id) {
                        q.lookup.on_failure(&from.id);
                    }
                    return;
                }
            },
            other => other,
        };
        let max_record_size = self.config.max_record_size;
        let policy = self.config.record_policy;
        let Some(q) = self.queries.get_mut(&id) else { return };
        match (&mut q.kind, body) {
            (QueryKind::Put { storing: Some(_), .. }, _) => {
                // A late answer to the put's lookup: nothing more to learn from it.
            }
            (
                QueryKind::FindNode | QueryKind::Bootstrap | QueryKind::Refresh | QueryKind::Put { storing: None, .. },
                Response::Nodes { closer },
            ) => {
                q.lookup.on_success(&from.id, closer);
            }
            (QueryKind::Get { key, lacking, .. }, Response::Nodes { closer }) => {
                let target = NodeId::from_key(key);
                if lacking.as_ref().is_none_or(|l| from.id.distance(&target) < l.id.distance(&target)) {
                    *lacking = Some(from.clone());
                }
                q.lookup.on_success(&from.id, closer);
            }
            (QueryKind::Get { key, found, .. }, Response::Value { record, .. }) => {
                if record.key == *key
                    && record.value.len() <= max_record_size
                    && policy.accepts(&record.key, &record.value)
                {
                    *found = Some(record);
                    q.lookup.on_success(&from.id, []);
                    q.lookup.finish();
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

    /// A peer answered one of a put's stores.
    pub(super) fn on_store_ack(&mut self, id: QueryId, from: Contact, body: Response) {
        let Some(q) = self.queries.get_mut(&id) else { return };
        let QueryKind::Put { storing: Some(p), .. } = &mut q.kind else { return };
        p.answered += 1;
        match body {
            Response::StoreAck { refused } => {
                q.extra_responses += 1;
                p.acks += usize::from(refused.is_none());
            }
            _ => {
                q.extra_failures += 1;
                self.stats.mismatched_responses += 1;
                self.misbehaved(from.id, "answer of the wrong kind");
            }
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

    /// When the next bucket refresh is due.
    pub(super) fn next_refresh(&self) -> Option<Instant> {
        if self.table.is_empty() {
            return None;
        }
        (0..self.table.bucket_count())
            .filter_map(|i| self.table.last_touched(i))
            .min()
            .map(|t| t + self.config.refresh_interval)
    }

    /// Starts a lookup of a random id in every bucket idle for `refresh_interval`.
    pub(super) fn refresh_buckets(&mut self, now: Instant) {
        if self.refresh_at.is_none_or(|t| t > now) {
            return;
        }
        for index in 0..self.table.bucket_count() {
            let due = self.table.last_touched(index).is_some_and(|t| t + self.config.refresh_interval <= now);
            if due {
                self.refresh_bucket(now, index);
            }
        }
        self.refresh_at = self.next_refresh();
    }

    /// Looks up a random id in bucket `index` (which marks the bucket fresh).
    fn refresh_bucket(&mut self, now: Instant, index: usize) {
        let target = random_id_in_bucket(&mut self.rng, &self.local.id, index);
        let seeds = self.table.closest(&target, self.config.k);
        let id = self.start_query(now, target, seeds, QueryKind::Refresh);
        let budget = self.config.refresh_request_budget;
        if let (Some(q), Ok(budget @ 1..)) = (self.queries.get_mut(&id), u32::try_from(budget)) {
            q.lookup.set_request_budget(budget);
        }
        self.drive_query(now, id);
    }
}
