//! What the node counts of its peers' input.

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
    /// Requests that failed before their timeout because the link to their peer could not be set up.
    pub unreachable: u64,
    /// Requests whose link closed before they were answered: each then met its deadline at once (sent again
    /// where it had attempts left, failed where not), and counts among `timeouts` too.
    pub lost_with_link: u64,
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
    /// Requests to a peer in our table sent to the addresses it gave us rather than to other addresses a
    /// third party handed out for it.
    pub unverified_addrs: u64,
    /// Records refused because of their size.
    pub refused_too_large: u64,
    /// Records refused because the node is full or busy.
    pub refused_full: u64,
    /// Records refused because of their TTL.
    pub refused_bad_ttl: u64,
    /// Records refused because they fail the record policy.
    pub refused_invalid: u64,
    /// Signed records refused because their signature does not verify.
    pub refused_bad_signature: u64,
    /// Signed records refused because a newer version is held (replays of older versions).
    pub refused_stale: u64,
    /// Signed records refused because they carry another value for the version held.
    pub refused_conflict: u64,
    /// Compare-and-swap stores refused because another version is held.
    pub refused_cas: u64,
    /// Records refused because their sender or owner holds its share of the room for others' records.
    pub refused_quota: u64,
    /// Records refused because a write of their key was under way.
    pub refused_busy: u64,
    /// Values returned for a key other than the one asked, too large, or failing the record policy.
    pub bad_values: u64,
    /// Storage operations that failed.
    pub store_failures: u64,
    /// Records expired.
    pub expired: u64,
    /// Others' records evicted to make room for a source within its fair share.
    pub evicted: u64,
    /// Peers and contacts refused for lacking the ids' proof of work.
    pub weak_ids: u64,
}

impl NodeStats {
    /// Counts a refused store under its reason.
    pub(crate) fn count_refusal(&mut self, reason: crate::StoreRefusal) {
        use crate::StoreRefusal as R;
        let counter = match reason {
            R::TooLarge => &mut self.refused_too_large,
            R::Full | R::StorageFailed => &mut self.refused_full,
            R::BadTtl => &mut self.refused_bad_ttl,
            R::Invalid => &mut self.refused_invalid,
            R::BadSignature => &mut self.refused_bad_signature,
            R::Stale { .. } => &mut self.refused_stale,
            R::Conflict => &mut self.refused_conflict,
            R::CasFailed { .. } => &mut self.refused_cas,
            R::Quota => &mut self.refused_quota,
            R::Busy => &mut self.refused_busy,
        };
        *counter += 1;
    }
}
