//! One running query: its lookup and what kind of query it is, as explicit states.

use crate::event::QueryStats;
use crate::id::Key;
use crate::lookup::Lookup;
use crate::message::{Contact, Record};
use crate::time::Instant;

/// A query: a lookup, plus what its kind does with the result.
#[derive(Debug)]
pub(super) struct Query {
    pub(super) lookup: Lookup,
    pub(super) started: Instant,
    pub(super) kind: QueryKind,
}

#[derive(Debug)]
pub(super) enum QueryKind {
    FindNode,
    /// The self-lookup of a join: reports like `FindNode`, then refreshes the buckets beyond.
    Bootstrap,
    /// A bucket refresh or periodic self-lookup: no event.
    Refresh,
    Put(Put),
    Get(Get),
}

/// A put looks up the k closest to its key, then stores at them and waits for their answers.
#[derive(Debug)]
pub(super) enum Put {
    Looking { record: Record, ttl_secs: u32, report: bool },
    Storing { record: Record, report: bool, round: StoreRound },
}

/// The stores of a put to the closest peers.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct StoreRound {
    /// Stores sent.
    pub(super) attempted: usize,
    /// Stores acknowledged.
    pub(super) acked: usize,
    /// Stores answered with a refusal.
    pub(super) refused: usize,
    /// Stores that timed out or got an answer of the wrong kind.
    pub(super) failed: usize,
}

impl StoreRound {
    pub(super) fn is_over(&self) -> bool {
        self.acked + self.refused + self.failed >= self.attempted
    }
}

/// A get reads the local store first (when the record is held), then looks up its key.
#[derive(Debug)]
pub(super) struct Get {
    pub(super) key: Key,
    pub(super) phase: GetPhase,
    pub(super) found: Option<Record>,
    /// The closest peer that answered without the value: the found value is cached there.
    pub(super) lacking: Option<Contact>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GetPhase {
    /// Waiting for the local store's read; the lookup is not driven before it answers.
    ReadingLocal,
    /// Asking the network.
    Looking,
}

impl Query {
    /// Whether the query waits on something other than its lookup (a local read).
    pub(super) fn waits_locally(&self) -> bool {
        matches!(&self.kind, QueryKind::Get(Get { phase: GetPhase::ReadingLocal, .. }))
    }

    /// The counters of the query so far: its lookup's, plus a put's stores.
    pub(super) fn stats(&self, now: Instant) -> QueryStats {
        let round = match &self.kind {
            QueryKind::Put(Put::Storing { round, .. }) => *round,
            _ => StoreRound::default(),
        };
        QueryStats {
            requests: self.lookup.requests() + round.attempted as u32,
            responses: self.lookup.responses() + (round.acked + round.refused) as u32,
            failures: self.lookup.failures() + round.failed as u32,
            hops: self.lookup.hops(),
            duration: now.saturating_since(self.started),
        }
    }
}
