//! Keeping the routing table current: the join (tried again while it reaches nobody), the periodic
//! self-lookup, bucket refreshes, and shedding of deep buckets' stale entries.

use super::query::QueryKind;
use super::Node;
use crate::config::Config;
use crate::event::{Event, QueryId};
use crate::id::{NodeId, ID_LEN};
use crate::message::Contact;
use crate::time::Instant;
use core::time::Duration;
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

/// The table's timers.
#[derive(Debug)]
pub(super) struct Maintenance {
    /// The next periodic self-lookup (set once the node has joined).
    self_lookup_at: Option<Instant>,
    /// When deep buckets next shed the entries beyond k not heard from lately (`Config::shed_after`).
    shed_at: Option<Instant>,
    /// A lower bound of when the next bucket refresh is due (buckets only get fresher between checks, so a
    /// stale value just means one early, harmless wake-up). Kept so `poll_timeout` does not walk the buckets.
    pub(super) refresh_at: Option<Instant>,
    /// The seeds of the last join (at most k), for trying it again.
    pub(super) seeds: Vec<Contact>,
    /// When a join that reached nobody is tried again, and the pause after that one if it fails too.
    pub(super) rejoin_at: Option<Instant>,
    rejoin_pause: Duration,
}

/// The pause before a join that reached nobody is tried again; it doubles with each failed try, up to
/// [`REJOIN_MAX`].
const REJOIN_FIRST: Duration = Duration::from_secs(1);
const REJOIN_MAX: Duration = Duration::from_secs(300);

impl Maintenance {
    pub(super) fn new(config: &Config, now: Instant) -> Self {
        let shed = config.bucket_growth > 0 && config.shed_after > Duration::ZERO;
        Maintenance {
            self_lookup_at: None,
            shed_at: shed.then(|| now + config.shed_after),
            refresh_at: None,
            seeds: Vec::new(),
            rejoin_at: None,
            rejoin_pause: REJOIN_FIRST,
        }
    }

    /// The earliest of the table's timers.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        [self.refresh_at, self.self_lookup_at, self.shed_at, self.rejoin_at].into_iter().flatten().min()
    }
}

impl Node {
    /// Runs the table's timers that are due: shedding, the self-lookup, bucket refreshes.
    pub(super) fn handle_maintenance(&mut self, now: Instant) {
        if self.maintenance.rejoin_at.is_some_and(|t| t <= now) {
            self.maintenance.rejoin_at = None;
            let seeds = self.maintenance.seeds.clone();
            self.join(now, seeds, false);
        }
        if self.maintenance.shed_at.is_some_and(|t| t <= now) {
            self.maintenance.shed_at = Some(now + self.config.shed_after);
            for id in self.table.shed_stale(now, self.config.shed_after) {
                self.event(Event::PeerRemoved { id });
            }
        }
        if self.maintenance.self_lookup_at.is_some_and(|t| t <= now) {
            self.schedule_self_lookup(now);
            let target = self.local.id;
            let seeds = self.table.closest(&target, self.config.k);
            self.start_query(now, target, seeds, QueryKind::Refresh);
        }
        self.refresh_buckets(now);
    }

    /// Starts a join: a lookup of our own id from the closest we know and `seeds` (reported when `report`).
    pub(super) fn join(&mut self, now: Instant, seeds: Vec<Contact>, report: bool) -> QueryId {
        let target = self.local.id;
        let mut initial = self.table.closest(&target, self.config.k);
        initial.extend(seeds);
        self.start_query(now, target, initial, QueryKind::Bootstrap { report })
    }

    /// A join ended, having reached someone or nobody: the latter is tried again after a pause that grows
    /// with each failed try (a node whose every answer was lost, or whose seeds are down, stays out of the
    /// swarm otherwise: nobody knows it, and lookups for ids near its own miss it).
    pub(super) fn joined(&mut self, now: Instant, reached: bool) {
        let m = &mut self.maintenance;
        if reached {
            m.rejoin_at = None;
            m.rejoin_pause = REJOIN_FIRST;
        } else if !m.seeds.is_empty() || !self.table.is_empty() {
            m.rejoin_at = Some(now + m.rejoin_pause);
            m.rejoin_pause = (m.rejoin_pause * 2).min(REJOIN_MAX);
        }
    }

    /// Schedules the next periodic self-lookup, jittered so that nodes started together spread out.
    pub(super) fn schedule_self_lookup(&mut self, now: Instant) {
        let base = self.config.self_lookup_interval;
        if base.is_zero() {
            self.maintenance.self_lookup_at = None;
            return;
        }
        let jitter_ms = u64::try_from(base.as_millis() / 4).unwrap_or(u64::MAX).max(1);
        let jitter = Duration::from_millis(self.rng.next_u64() % jitter_ms);
        self.maintenance.self_lookup_at = Some(now + base - jitter);
    }

    /// A peer entered the table: the refresh timer starts with the first.
    pub(super) fn on_peer_added(&mut self) {
        if self.maintenance.refresh_at.is_none() {
            self.maintenance.refresh_at = self.next_refresh();
        }
    }

    /// When the next bucket refresh is due.
    fn next_refresh(&self) -> Option<Instant> {
        if self.table.is_empty() {
            return None;
        }
        (0..self.table.bucket_count())
            .filter_map(|i| self.table.last_touched(i))
            .min()
            .map(|t| t + self.config.refresh_interval)
    }

    /// Starts a lookup of a random id in every bucket idle for `refresh_interval`.
    fn refresh_buckets(&mut self, now: Instant) {
        if self.maintenance.refresh_at.is_none_or(|t| t > now) {
            return;
        }
        for index in 0..self.table.bucket_count() {
            let due = self.table.last_touched(index).is_some_and(|t| t + self.config.refresh_interval <= now);
            if due {
                self.refresh_bucket(now, index);
            }
        }
        self.maintenance.refresh_at = self.next_refresh();
    }

    /// Looks up a random id in bucket `index` (which marks the bucket fresh).
    pub(super) fn refresh_bucket(&mut self, now: Instant, index: usize) {
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

/// A uniformly random id whose distance to `local` falls in bucket `index`.
pub(super) fn random_id_in_bucket(rng: &mut ChaCha8Rng, local: &NodeId, index: usize) -> NodeId {
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
