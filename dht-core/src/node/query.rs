//! One running query: its lookup and what kind of query it is, as explicit states.

use crate::event::QueryStats;
use crate::id::Key;
use crate::lookup::Lookup;
use crate::message::{Contact, StoreRefusal};
use crate::record::Record;
use crate::time::Instant;

/// A query: a lookup, plus what its kind does with the result.
#[derive(Debug)]
pub(super) struct Query {
    pub(super) lookup: Lookup,
    pub(super) started: Instant,
    pub(super) kind: QueryKind,
    /// A put of ours waits for its own write to be durable before it reports.
    pub(super) local_write: LocalWrite,
}

/// Where a put's write to our own store stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LocalWrite {
    /// None to wait for (or done).
    Done,
    Pending,
    Failed,
}

#[derive(Debug)]
pub(super) enum QueryKind {
    FindNode,
    /// The self-lookup of a join: reports like `FindNode` (unless it is a retry of a join that reached
    /// nobody), then refreshes the buckets beyond.
    Bootstrap {
        report: bool,
    },
    /// A bucket refresh or periodic self-lookup: no event.
    Refresh,
    Put(Put),
    Get(Get),
}

/// A put looks up the k closest to its key, then stores at them and waits for their answers.
#[derive(Debug)]
pub(super) enum Put {
    Looking { record: Record, ttl_secs: u32, cas: Option<u64>, report: bool },
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
    /// The telling refusal: a failed compare-and-swap or a newer version held, the highest `seq` reported.
    pub(super) conflict: Option<StoreRefusal>,
}

impl StoreRound {
    pub(super) fn is_over(&self) -> bool {
        self.acked + self.refused + self.failed >= self.attempted
    }

    /// A peer refused the store for `reason`.
    pub(super) fn refused(&mut self, reason: StoreRefusal) {
        self.refused += 1;
        let seq = |r: Option<StoreRefusal>| match r {
            Some(StoreRefusal::CasFailed { current } | StoreRefusal::Stale { current }) => Some(current),
            _ => None,
        };
        if seq(Some(reason)).is_some_and(|new| seq(self.conflict).is_none_or(|old| new > old)) {
            self.conflict = Some(reason);
        }
    }
}

/// A get reads the local store first (when the record is held), then looks up its key. An unsigned
/// record ends it; signed versions are gathered until the quorum (or the k closest) have answered, and the
/// newest wins.
#[derive(Debug)]
pub(super) struct Get {
    pub(super) key: Key,
    pub(super) phase: GetPhase,
    /// The record found: the first unsigned one, or the signed one of the highest `seq`.
    pub(super) found: Option<Record>,
    /// Seconds the found record has left at the peer that sent it.
    pub(super) found_ttl: Option<u32>,
    /// The closest peer that answered without the value: the found value is cached there.
    pub(super) lacking: Option<Contact>,
    /// Peers that answered with a signed version, and its `seq`: those behind the newest are sent it.
    pub(super) versions: Vec<(Contact, u64)>,
    /// Signed values seen (the local one included).
    pub(super) values: usize,
}

impl Get {
    pub(super) fn new(key: Key, phase: GetPhase) -> Self {
        Get { key, phase, found: None, found_ttl: None, lacking: None, versions: Vec::new(), values: 0 }
    }

    /// A valid record (from `from`, or local when `None`), with the seconds it has left. Whether the get
    /// has what it needs: an unsigned record, or `quorum` signed values (0: never, the lookup decides).
    pub(super) fn offer(
        &mut self,
        from: Option<Contact>,
        record: Record,
        ttl_secs: Option<u32>,
        quorum: usize,
    ) -> bool {
        let Some(seq) = record.seq() else {
            if self.found.as_ref().is_some_and(|f| f.signed.is_some()) {
                // An unsigned value under a signed record's key says nothing of it.
                return false;
            }
            self.found = Some(record);
            self.found_ttl = ttl_secs;
            return true;
        };
        if let Some(from) = from {
            self.versions.push((from, seq));
        }
        self.values += 1;
        if self.found.as_ref().and_then(Record::seq).is_none_or(|best| seq > best) {
            self.found = Some(record);
            self.found_ttl = ttl_secs;
        }
        quorum > 0 && self.values >= quorum
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GetPhase {
    /// Waiting for the local store's read; the lookup is not driven before it answers.
    ReadingLocal,
    /// Asking the network.
    Looking,
}

impl Query {
    /// Whether a put is over: its stores answered and its own write done.
    pub(super) fn put_over(&self) -> bool {
        matches!(&self.kind, QueryKind::Put(Put::Storing { round, .. }) if round.is_over())
            && self.local_write != LocalWrite::Pending
    }

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
