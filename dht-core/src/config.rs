//! Tunables and limits of a node.

use crate::id::Key;
use crate::lookup::MAX_PATHS;
use crate::message::StoreRefusal;
use crate::record::{Record, RecordError, RecordKind};
use crate::routing::MAX_BUCKET_GROWTH;
use core::time::Duration;
use thiserror::Error;

/// An application's check of a record: `true` when `value` may live under `key`.
#[derive(Clone, Copy)]
pub struct Validator(pub fn(&Key, &[u8]) -> bool);

impl core::fmt::Debug for Validator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Validator(fn)")
    }
}

impl PartialEq for Validator {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::fn_addr_eq(self.0, other.0)
    }
}

impl Eq for Validator {}

/// Which records a node stores for others and accepts from a get. A record that fails is refused
/// ([`crate::StoreRefusal::Invalid`], or [`crate::StoreRefusal::BadSignature`]) or, as a get's answer,
/// counted against the peer that sent it while the lookup goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordPolicy {
    /// Immutable records (key = SHA-256 of the value) and records signed by their owner (key = SHA-256 of
    /// the owner's key and salt): nobody can forge, overwrite or roll back another's record. The default.
    #[default]
    Owned,
    /// Also unsigned records under any key, which anyone can overwrite or shorten: only for closed swarms
    /// whose members all trust each other.
    ClosedSwarm,
    /// Immutable and signed records, plus the unsigned ones under other keys that the application's check
    /// accepts.
    Custom(Validator),
}

impl RecordPolicy {
    /// Checks `record`: its kind when it may live here, else why not.
    pub fn check(&self, record: &Record) -> Result<RecordKind, StoreRefusal> {
        let kind = record.verify().map_err(|e| match e {
            RecordError::BadSignature | RecordError::BadOwnerKey => StoreRefusal::BadSignature,
            _ => StoreRefusal::Invalid,
        })?;
        let allowed = match (kind, self) {
            (RecordKind::Immutable | RecordKind::Signed, _) | (RecordKind::Unchecked, RecordPolicy::ClosedSwarm) => {
                true
            }
            (RecordKind::Unchecked, RecordPolicy::Custom(v)) => (v.0)(&record.key, &record.value),
            (RecordKind::Unchecked, RecordPolicy::Owned) => false,
        };
        if allowed {
            Ok(kind)
        } else {
            Err(StoreRefusal::Invalid)
        }
    }

    /// Whether `record` may live here.
    pub fn accepts(&self, record: &Record) -> bool {
        self.check(record).is_ok()
    }
}

/// Everything a node can be tuned by. Limits bound what a peer can make us hold or do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Replication factor and base bucket size (k): the k closest hold a record, a lookup ends on k answers,
    /// and bucket 0 holds k entries (deeper ones more, see `bucket_growth`).
    pub k: usize,
    /// Requests a lookup keeps in flight until it stalls (α).
    pub alpha: usize,
    /// Answers in a row that bring no closer peer before a lookup widens to k requests in flight (the
    /// Kademlia paper's final round, after a round of α answers without progress).
    pub stall_after: usize,
    /// Widen a lookup to k requests in flight as soon as a peer answers from within the radius where the
    /// k closest are expected (twice the distance to our own k-th closest neighbour), instead of waiting
    /// for a stall, and ask a contact inside that radius at once when it ranks among the k closest known:
    /// saves about one round trip per lookup. Bucket refreshes (budgeted lookups) keep to α regardless.
    pub widen_in_region: bool,
    /// How long to wait for an answer before counting the request as failed.
    pub request_timeout: Duration,
    /// How long a request waits for its answer when it waits on a link being set up to its peer (the
    /// caller reports the dial with [`crate::Node::dialing`]): a first contact costs a connection and a
    /// handshake, not one round trip. Lookups go on without such a peer meanwhile but hold their end for it.
    pub connect_timeout: Duration,
    /// Adapt lookup-request timeouts to the round trips seen (`srtt + 4·rttvar`, as TCP does), between
    /// `min_request_timeout` and `request_timeout`. A departed peer then holds a lookup up for a few round
    /// trips instead of the full timeout.
    pub adaptive_timeout: bool,
    /// Lower bound of the adaptive timeout.
    pub min_request_timeout: Duration,
    /// Times a store request that timed out is sent again before the peer counts as failed (covers a lost
    /// message on lossy paths; reliable transports lose messages only with the link). A lookup request is
    /// sent again (when this is above 0) at its adaptive timeout, and the lookup goes on without the
    /// peer at once; while the node sees such resends answered (a lossy path, not a departed peer: the
    /// outcomes of its recent resends decide, and a node without history counts as lossy), the lookup does
    /// not finish while a resent peer among its k closest may still answer; where resends were answered
    /// lately, an unanswered one goes once more (up to this count). 10,000 simulated nodes at 1 % loss:
    /// lookups that find the true k closest 0.46 → 0.98–0.99 (see BENCHMARKS.md).
    pub request_retries: u8,
    /// Contacts waiting per bucket for a stale entry to fail.
    pub replacement_cache: usize,
    /// Bucket `i` (0 = the half of the id space farthest from us) holds up to `k · 2^min(i, bucket_growth)`
    /// entries (0 = k everywhere, as in the paper; at most [`crate::routing::MAX_BUCKET_GROWTH`]). Bucket 0,
    /// half of the id space where any made-up id lands with even odds, stays at k, buckets 1, 2, 3 hold 2k,
    /// 4k, 8k; the deeper ones keep more of the peers that speak to us, so a node near a target knows more of
    /// its neighbourhood and a lookup learns the k closest a round trip sooner (10,000 simulated nodes: p50
    /// 334 → 290 ms with 4).
    pub bucket_growth: u32,
    /// The room `bucket_growth` gives holds peers heard from lately: every `shed_after`, a bucket holding
    /// more than k entries drops those not heard from for that long, stalest first, down to k (a full
    /// bucket checks its stalest entry before replacing it; one with room never would, and departed peers
    /// would pile up in it). Zero keeps them.
    pub shed_after: Duration,
    /// A full bucket checks its stalest entry before letting a newcomer in only if that entry was last
    /// heard from at least this long ago; a peer seen more recently is kept without a ping (the paper's
    /// advice to defer probes). Zero pings every time.
    pub ping_after: Duration,
    /// Failed requests in a row after which a peer leaves the routing table.
    pub max_failures: u8,
    /// Candidates a lookup keeps; beyond it the farthest that is neither waited on nor among the k closest
    /// answers is dropped (see [`crate::lookup::LookupParams::max_candidates`]; keep it well above 2k + α).
    pub max_lookup_candidates: usize,
    /// Largest value accepted, in bytes.
    pub max_record_size: usize,
    /// Records a node keeps for others (its own publications do not count). When full, a peer within its
    /// fair share (this room divided among the peers whose records it holds) makes way by evicting records
    /// of the peer holding the most; a peer beyond it is refused ([`crate::StoreRefusal::Quota`]).
    pub max_records: usize,
    /// Bytes of values a node keeps for others, shared the same way.
    pub max_stored_bytes: u64,
    /// Records of one owner key a node keeps, whoever sends them.
    pub max_owner_records: usize,
    /// Bytes of one owner key's records a node keeps.
    pub max_owner_bytes: u64,
    /// Most contacts accepted in one `Nodes` answer (larger answers are refused whole).
    pub max_contacts_per_reply: usize,
    /// Most addresses kept per contact.
    pub max_addrs_per_contact: usize,
    /// Longest address kept, in bytes.
    pub max_addr_len: usize,
    /// Outgoing requests in flight at once; beyond it new requests fail at once.
    pub max_pending_requests: usize,
    /// Storage operations in flight for peers' requests; beyond it peers' stores are refused.
    pub max_pending_store_ops: usize,
    /// TTL given to records put by this node.
    pub record_ttl: Duration,
    /// Longest TTL accepted from a peer.
    pub max_record_ttl: Duration,
    /// How often this node re-puts the records it published.
    pub republish_interval: Duration,
    /// How often a node looks up its own id once it has joined: it keeps the neighbourhood (the peers that
    /// answer for records near us) free of departed peers and tells newcomers about us. Jittered by up to
    /// a quarter. `Duration::ZERO` disables it.
    pub self_lookup_interval: Duration,
    /// After the bootstrap self-lookup, how many buckets farther than the closest neighbour found get a
    /// refresh lookup, nearest first (the Kademlia join). 0 disables it; 256 refreshes them all.
    pub join_refresh_buckets: usize,
    /// Requests a bucket refresh may send (0 = no cap). A refresh needs live contacts in the bucket's
    /// range, which the first answers from that range give; it need not converge like a lookup.
    pub refresh_request_budget: usize,
    /// A bucket with no lookup through it for this long is refreshed with a lookup of a random id in it.
    pub refresh_interval: Duration,
    /// Which records are stored for others and accepted from gets.
    pub record_policy: RecordPolicy,
    /// Values of a signed record a get waits for before it ends with the newest; 0 asks on until the k
    /// closest have answered. (A get of an immutable or unchecked record ends at the first value.)
    pub get_quorum: usize,
    /// Proof of work every peer id must carry ([`crate::NodeId::work`], leading zero bits): peers below it
    /// never enter the routing table or a lookup, so mass-producing ids costs about 2^d key generations
    /// each. 0 (the default) asks for none.
    pub id_difficulty: u32,
    /// How often a node holding a record stores it again at the k closest nodes to its key (with the
    /// time left to live), so records outlive the nodes that hold them under churn. A store received for the
    /// record pushes this node's turn back by the same interval, so about one holder per interval does the
    /// work. Zero turns this off.
    pub replicate_interval: Duration,
    /// In a lookup, a peer whose introduced contacts failed this many times (and more than twice as often
    /// as they answered) is distrusted: its other introductions are dropped and it leaves the result.
    /// 0 turns this off.
    pub distrust_after: u16,
    /// Disjoint paths per lookup (S/Kademlia): the seeds are dealt out to this many paths that never ask
    /// the same peer, so one liar misleads at most one path; the result is the k closest that answered on
    /// any path. 1 is plain Kademlia; more costs about that many times the requests. At most
    /// [`crate::lookup::MAX_PATHS`].
    pub lookup_paths: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            k: 20,
            alpha: 3,
            stall_after: 3,
            widen_in_region: true,
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            replacement_cache: 4,
            bucket_growth: 4,
            shed_after: Duration::from_secs(15 * 60),
            request_retries: 2,
            adaptive_timeout: true,
            min_request_timeout: Duration::from_millis(200),
            max_failures: 2,
            ping_after: Duration::from_secs(60),
            max_lookup_candidates: 100,
            max_record_size: 64 * 1024,
            max_records: 16_384,
            max_stored_bytes: 256 << 20,
            max_owner_records: 1024,
            max_owner_bytes: 16 << 20,
            max_contacts_per_reply: 20,
            max_addrs_per_contact: 4,
            max_addr_len: 256,
            max_pending_requests: 1024,
            max_pending_store_ops: 256,
            record_ttl: Duration::from_secs(36 * 3600),
            max_record_ttl: Duration::from_secs(48 * 3600),
            republish_interval: Duration::from_secs(22 * 3600),
            refresh_interval: Duration::from_secs(3600),
            join_refresh_buckets: 256,
            self_lookup_interval: Duration::from_secs(300),
            refresh_request_budget: 2,
            record_policy: RecordPolicy::Owned,
            get_quorum: 0,
            distrust_after: 3,
            replicate_interval: Duration::from_secs(3600),
            id_difficulty: 0,
            lookup_paths: 1,
        }
    }
}

/// A setting no node can run with, as [`Config::validate`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A count or size that must be at least 1 is 0.
    #[error("`{0}` must be at least 1")]
    Zero(&'static str),
    /// A duration that must be positive is zero (a zero interval would fire on every wake-up).
    #[error("`{0}` must be longer than zero")]
    ZeroDuration(&'static str),
    /// A value is above its upper bound.
    #[error("`{name}` is {value}, above its maximum {max}")]
    TooLarge {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A lookup could not hold the k closest peers.
    #[error("`max_lookup_candidates` ({candidates}) is below k ({k})")]
    CandidatesBelowK {
        /// `max_lookup_candidates`.
        candidates: usize,
        /// `k`.
        k: usize,
    },
    /// Our own records would be put with a TTL that peers refuse.
    #[error("`record_ttl` ({ttl:?}) is above `max_record_ttl` ({max:?})")]
    TtlAboveMax {
        /// `record_ttl`.
        ttl: Duration,
        /// `max_record_ttl`.
        max: Duration,
    },
}

/// A [`Config`] that passed [`Config::validate`]: the only kind [`crate::Node::new`] takes. Reads like the
/// `Config` it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidConfig(Config);

impl core::ops::Deref for ValidConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.0
    }
}

impl ValidConfig {
    /// The settings, to change and validate again.
    pub fn into_inner(self) -> Config {
        self.0
    }
}

impl Config {
    /// Checks that a node can run with these settings: no count, limit or interval of zero where it
    /// would stop the node or make it spin, nothing above its upper bound, and our own TTL within the one
    /// we accept from peers.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        self.check_counts()?;
        self.check_durations()?;
        self.check_bounds()?;
        Ok(ValidConfig(self))
    }

    fn check_counts(&self) -> Result<(), ConfigError> {
        let counts = [
            ("k", self.k),
            ("alpha", self.alpha),
            ("lookup_paths", self.lookup_paths),
            ("max_record_size", self.max_record_size),
            ("max_records", self.max_records),
            ("max_owner_records", self.max_owner_records),
            ("max_stored_bytes", usize::try_from(self.max_stored_bytes).unwrap_or(usize::MAX)),
            ("max_owner_bytes", usize::try_from(self.max_owner_bytes).unwrap_or(usize::MAX)),
            ("max_contacts_per_reply", self.max_contacts_per_reply),
            ("max_addrs_per_contact", self.max_addrs_per_contact),
            ("max_addr_len", self.max_addr_len),
            ("max_pending_requests", self.max_pending_requests),
            ("max_pending_store_ops", self.max_pending_store_ops),
        ];
        match counts.into_iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(ConfigError::Zero(name)),
            None => Ok(()),
        }
    }

    fn check_durations(&self) -> Result<(), ConfigError> {
        let durations = [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("record_ttl", self.record_ttl),
            ("max_record_ttl", self.max_record_ttl),
            ("republish_interval", self.republish_interval),
            ("refresh_interval", self.refresh_interval),
        ];
        match durations.into_iter().find(|(_, d)| d.is_zero()) {
            Some((name, _)) => Err(ConfigError::ZeroDuration(name)),
            None => Ok(()),
        }
    }

    fn check_bounds(&self) -> Result<(), ConfigError> {
        let too_large =
            |name, value: u64, max: u64| (value > max).then_some(ConfigError::TooLarge { name, value, max });
        let bounds = [
            too_large("lookup_paths", self.lookup_paths as u64, MAX_PATHS as u64),
            too_large("bucket_growth", u64::from(self.bucket_growth), u64::from(MAX_BUCKET_GROWTH)),
            too_large("max_record_ttl (s)", self.max_record_ttl.as_secs(), u64::from(u32::MAX)),
        ];
        if let Some(e) = bounds.into_iter().flatten().next() {
            return Err(e);
        }
        if self.max_lookup_candidates < self.k {
            return Err(ConfigError::CandidatesBelowK { candidates: self.max_lookup_candidates, k: self.k });
        }
        if self.record_ttl > self.max_record_ttl {
            return Err(ConfigError::TtlAboveMax { ttl: self.record_ttl, max: self.max_record_ttl });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::field_reassign_with_default)]
    use super::*;

    fn with(change: impl FnOnce(&mut Config)) -> Result<ValidConfig, ConfigError> {
        let mut c = Config::default();
        change(&mut c);
        c.validate()
    }

    #[test]
    fn the_default_is_valid() {
        assert_eq!(Config::default().validate().map(ValidConfig::into_inner), Ok(Config::default()));
    }

    #[test]
    fn impossible_settings_are_named() {
        assert_eq!(with(|c| c.k = 0).unwrap_err(), ConfigError::Zero("k"));
        assert_eq!(with(|c| c.alpha = 0).unwrap_err(), ConfigError::Zero("alpha"));
        assert_eq!(with(|c| c.max_records = 0).unwrap_err(), ConfigError::Zero("max_records"));
        assert_eq!(with(|c| c.max_pending_store_ops = 0).unwrap_err(), ConfigError::Zero("max_pending_store_ops"));
        assert_eq!(
            with(|c| c.republish_interval = Duration::ZERO).unwrap_err(),
            ConfigError::ZeroDuration("republish_interval")
        );
        assert_eq!(
            with(|c| c.lookup_paths = MAX_PATHS + 1).unwrap_err(),
            ConfigError::TooLarge { name: "lookup_paths", value: MAX_PATHS as u64 + 1, max: MAX_PATHS as u64 }
        );
        assert!(matches!(
            with(|c| c.bucket_growth = 9).unwrap_err(),
            ConfigError::TooLarge { name: "bucket_growth", .. }
        ));
        assert_eq!(
            with(|c| c.max_lookup_candidates = 19).unwrap_err(),
            ConfigError::CandidatesBelowK { candidates: 19, k: 20 }
        );
        let ttl = Duration::from_secs(49 * 3600);
        assert_eq!(
            with(|c| c.record_ttl = ttl).unwrap_err(),
            ConfigError::TtlAboveMax { ttl, max: Duration::from_secs(48 * 3600) }
        );
        assert!(with(|c| c.max_record_ttl = Duration::from_secs(u64::from(u32::MAX) + 1)).is_err());
    }

    #[test]
    fn off_switches_stay_valid() {
        let off = with(|c| {
            c.replicate_interval = Duration::ZERO;
            c.self_lookup_interval = Duration::ZERO;
            c.shed_after = Duration::ZERO;
            c.bucket_growth = 0;
            c.distrust_after = 0;
            c.replacement_cache = 0;
        });
        assert!(off.is_ok());
    }
}
