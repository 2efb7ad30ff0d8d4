//! Requests in flight: ids, deadlines, retries (and whether lookups hold their end for a resend), the
//! slow-then-failed grace of lookup requests, and the round-trip estimate their timeouts adapt to.

use super::NodeStats;
use crate::config::Config;
use crate::event::{Output, QueryId};
use crate::id::NodeId;
use crate::message::{Contact, Message, Request, RequestId};
use crate::time::Instant;
use core::time::Duration;
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Why a request was sent: where its answer (or its failure) goes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Purpose {
    /// A lookup request of a query.
    Query(QueryId),
    /// One of a put's stores to the closest peers.
    PutStore(QueryId),
    /// A check of a full bucket's stalest entry before a newcomer may take its place.
    StalePing,
    /// A store to cache a found value; the answer only proves liveness.
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
    /// The other attempt of the same request, when this one was sent again or is the resend: an answer to
    /// either ends both. A replaced attempt keeps waiting until its full timeout (its answer may only be
    /// late), then goes without a word; the resend reports the failure.
    sibling: Option<RequestId>,
    /// Replaced by a resend: it reports nothing when it times out.
    replaced: bool,
    /// A lookup request's resend: the lookup went on without the peer at the first timeout, and may hold
    /// its end for this attempt. It waits its own adaptive timeout; another follows only where resends
    /// were answered lately ([`ResendOdds::hold_again`]).
    background: bool,
    /// It waits on a link being set up to its peer ([`Requests::dialing`]): its deadline is the connect
    /// timeout, and it is not sent again (unless that link comes and is lost: [`Requests::link_lost`]).
    dialing: bool,
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

/// A deadline that passed, as [`Requests::next_expired`] reports it.
#[derive(Debug)]
pub(super) enum Expired {
    /// A lookup request outlived its adaptive timeout: the lookup goes on without `peer`, whose answer
    /// still counts until the full `request_timeout`.
    Slow { peer: NodeId, query: QueryId },
    /// A lookup request timed out and was sent once more, where resends tend to be answered: the lookup
    /// goes on without `peer` but does not finish while the resend may still bring it into the result (a
    /// lost message, not a departed peer). Elsewhere the resend reports [`Expired::Slow`].
    Resent { peer: NodeId, query: QueryId },
    /// A request failed for good (no attempts left).
    Failed { peer: NodeId, purpose: Purpose },
}

/// How likely a lookup request sent again is to be answered, from the outcomes seen lately: on lossy
/// paths nearly always, so a lookup holds its end for the resends among its k closest; where timeouts mean
/// departed peers or made-up contacts almost never, so it does not. Outcomes count with a decay (about the
/// last twenty weigh) on top of a prior of half an answer and one failure: a node without history holds,
/// one failure stops it, one answer restarts it.
#[derive(Debug, Clone, Copy, Default)]
struct ResendOdds {
    answered: f64,
    failed: f64,
}

impl ResendOdds {
    /// Weight an outcome keeps at each later one.
    const DECAY: f64 = 0.95;
    /// Counts before any outcome: answered, failed.
    const PRIOR: (f64, f64) = (0.5, 1.0);
    /// At or above it, lookups hold their end for resends.
    const HOLD_AT: f64 = 0.3;

    fn sample(&mut self, answered: bool) {
        self.answered = self.answered * Self::DECAY + f64::from(u8::from(answered));
        self.failed = self.failed * Self::DECAY + f64::from(u8::from(!answered));
    }

    fn hold(&self) -> bool {
        let (a, f) = Self::PRIOR;
        (self.answered + a) / (self.answered + self.failed + a + f) >= Self::HOLD_AT
    }

    /// Whether a resend that went unanswered is worth another, held the same way: only on evidence (resends
    /// answered lately), not on the prior alone, so that a node new to a swarm with departed peers pays for
    /// one resend each, not two.
    fn hold_again(&self) -> bool {
        self.answered >= 0.5 && self.hold()
    }
}

/// The requests this node waits on.
#[derive(Debug)]
pub(super) struct Requests {
    pending: BTreeMap<RequestId, Outgoing>,
    deadlines: BTreeSet<(Instant, RequestId)>,
    rtt: Option<RttEstimate>,
    resend_odds: ResendOdds,
    max_pending: usize,
    retries: u8,
    timeout: Duration,
    min_timeout: Duration,
    connect_timeout: Duration,
    adaptive: bool,
}

impl Requests {
    pub(super) fn new(config: &Config) -> Self {
        Requests {
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            rtt: None,
            resend_odds: ResendOdds::default(),
            max_pending: config.max_pending_requests,
            retries: config.request_retries,
            timeout: config.request_timeout,
            min_timeout: config.min_request_timeout,
            connect_timeout: config.connect_timeout,
            adaptive: config.adaptive_timeout,
        }
    }

    /// Sends a request under a fresh id; `false` (nothing sent) when `max_pending_requests` are in flight.
    pub(super) fn send(
        &mut self,
        now: Instant,
        rng: &mut ChaCha8Rng,
        out: &mut VecDeque<Output>,
        to: Contact,
        body: Request,
        purpose: Purpose,
    ) -> bool {
        if self.pending.len() >= self.max_pending {
            return false;
        }
        let retries = match purpose {
            Purpose::Query(_) | Purpose::PutStore(_) => self.retries,
            // A long-lived entry is not evicted for one lost message: its ping goes twice.
            Purpose::StalePing => 1,
            Purpose::FireAndForget => 0,
        };
        self.dispatch(now, rng, out, (to, body, retries), purpose, false);
        true
    }

    /// Queues one attempt of a request under a fresh id, with its deadline.
    fn dispatch(
        &mut self,
        now: Instant,
        rng: &mut ChaCha8Rng,
        out: &mut VecDeque<Output>,
        (to, body, retries_left): (Contact, Request, u8),
        purpose: Purpose,
        background: bool,
    ) -> RequestId {
        let mut id = RequestId(rng.next_u64());
        while self.pending.contains_key(&id) {
            id = RequestId(rng.next_u64());
        }
        let deadline = now + self.timeout_for(&purpose);
        let resend = (retries_left > 0).then(|| (to.clone(), body.clone(), retries_left));
        let full = now + self.timeout;
        let grace = (matches!(purpose, Purpose::Query(_)) && resend.is_none() && !background && full > deadline)
            .then_some(full);
        let outgoing = Outgoing {
            peer: to.id,
            deadline,
            purpose,
            resend,
            sent: now,
            grace,
            slow: false,
            sibling: None,
            replaced: false,
            background,
            dialing: false,
        };
        self.pending.insert(id, outgoing);
        self.deadlines.insert((deadline, id));
        out.push_back(Output::Send { to, msg: Message::Request { id, body } });
        id
    }

    /// How long to wait for an answer: lookup requests adapt to the round trips seen (RFC 6298, between
    /// `min_request_timeout` and `request_timeout`); stores, which wait on the peer's disk, and the pings
    /// that decide whether a stale entry makes way for a newcomer get the full `request_timeout`: fast
    /// answers from others (a swarm of sybils next door) must not shrink the time an old, farther peer has
    /// to answer before it loses its place.
    fn timeout_for(&self, purpose: &Purpose) -> Duration {
        let max = self.timeout;
        match (purpose, self.rtt) {
            (Purpose::Query(_), Some(rtt)) if self.adaptive => rtt.timeout().clamp(self.min_timeout.min(max), max),
            _ => max,
        }
    }

    /// An answer to request `id` came from `from`: the request is over and its purpose returned. `None`
    /// (counted as unexpected) for an id we do not wait on, or an answer from another peer than asked.
    pub(super) fn on_response(
        &mut self,
        now: Instant,
        from: &NodeId,
        id: RequestId,
        stats: &mut NodeStats,
    ) -> Option<Purpose> {
        if self.pending.get(&id).is_none_or(|o| o.peer != *from) {
            stats.unexpected_responses += 1;
            return None;
        }
        let out = self.pending.remove(&id).expect("the request is pending: checked just above");
        if let Some(other) = out.sibling {
            self.forget(other);
        }
        if matches!(out.purpose, Purpose::Query(_) | Purpose::StalePing) {
            let ms = now.saturating_since(out.sent).as_millis() as f64;
            self.rtt = Some(RttEstimate::sample(self.rtt, ms));
        }
        if out.slow || out.background {
            stats.late_answers += 1;
        }
        if matches!(out.purpose, Purpose::Query(_)) && (out.background || out.replaced) {
            self.resend_odds.sample(true);
        }
        self.deadlines.remove(&(out.deadline, id));
        stats.responses_in += 1;
        Some(out.purpose)
    }

    /// The next deadline passed by `now` that the node must act on, in deadline order; requests with
    /// attempts left are sent again on the way. Call until `None`.
    pub(super) fn next_expired(
        &mut self,
        now: Instant,
        rng: &mut ChaCha8Rng,
        out: &mut VecDeque<Output>,
        stats: &mut NodeStats,
    ) -> Option<Expired> {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(req) = self.pending.get_mut(&id) else { continue };
            if let Some(grace) = req.grace.take() {
                // Slow, not failed: the lookup goes on without this peer, whose answer still counts until
                // the full timeout (a loaded peer or path is not a dead one).
                req.deadline = grace;
                req.slow = true;
                self.deadlines.insert((grace, id));
                stats.slow_requests += 1;
                if let Purpose::Query(query) = req.purpose {
                    return Some(Expired::Slow { peer: req.peer, query });
                }
                continue;
            }
            let mut req = self.pending.remove(&id).expect("the request is pending: looked up just above");
            if req.replaced {
                // Its resend is on its way and will report.
                if let Some(other) = req.sibling.and_then(|s| self.pending.get_mut(&s)) {
                    other.sibling = None;
                }
                continue;
            }
            stats.timeouts += 1;
            if req.background {
                // A resend unanswered in its time: the odds of the next one fall (a late answer raises them).
                self.resend_odds.sample(false);
            }
            // One that waited on a dial is not sent again: the link never came.
            let resend =
                req.resend.take().filter(|_| !req.dialing && (!req.background || self.resend_odds.hold_again()));
            match resend {
                Some((to, body, left @ 1..)) => {
                    // A lookup does not wait on a resend: the peer may have left, and the lookup goes on. A
                    // store's resend is waited for (the put counts its acks).
                    let query = match req.purpose {
                        Purpose::Query(query) => Some(query),
                        _ => None,
                    };
                    let resend = self.dispatch(now, rng, out, (to, body, left - 1), req.purpose, query.is_some());
                    // The first attempt's answer may be late, not lost: it still counts until its full timeout.
                    let full = req.sent + self.timeout;
                    if full > now {
                        if let Some(older) = req.sibling {
                            self.forget(older);
                        }
                        let replaced =
                            Outgoing { deadline: full, sibling: Some(resend), replaced: true, resend: None, ..req };
                        self.pending.insert(id, replaced);
                        self.deadlines.insert((full, id));
                        if let Some(r) = self.pending.get_mut(&resend) {
                            r.sibling = Some(id);
                        }
                    }
                    if let (Some(query), false) = (query, req.background) {
                        stats.slow_requests += 1;
                        let peer = req.peer;
                        let held = self.resend_odds.hold();
                        return Some(if held {
                            Expired::Resent { peer, query }
                        } else {
                            Expired::Slow { peer, query }
                        });
                    }
                }
                _ => {
                    if let Some(other) = req.sibling {
                        self.forget(other);
                    }
                    return Some(Expired::Failed { peer: req.peer, purpose: req.purpose });
                }
            }
        }
        None
    }

    /// The requests to `peer` wait on a link being set up: each (but attempts already replaced by a resend)
    /// now waits up to the connect timeout from `now` and is not sent again. Returns the lookups whose
    /// requests were still on time: they go on without `peer` but hold their end for its answer. Repeated
    /// calls leave requests already waiting on the link as they are.
    pub(super) fn dialing(&mut self, now: Instant, peer: &NodeId) -> Vec<QueryId> {
        let deadline = now + self.connect_timeout;
        let mut held = Vec::new();
        for (id, o) in self.pending.iter_mut().filter(|(_, o)| o.peer == *peer && !o.replaced && !o.dialing) {
            self.deadlines.remove(&(o.deadline, *id));
            o.deadline = o.deadline.max(deadline);
            self.deadlines.insert((o.deadline, *id));
            o.grace = None;
            o.dialing = true;
            if let (Purpose::Query(query), false, false) = (o.purpose, o.slow, o.background) {
                held.push(query);
            }
        }
        held
    }

    /// `peer` cannot be reached (the link to it could not be set up): every request to it ends now. Returns
    /// the purposes of the requests that failed, one per request (its attempts count once).
    pub(super) fn unreachable(&mut self, peer: &NodeId, stats: &mut NodeStats) -> Vec<Purpose> {
        let ids: Vec<RequestId> = self.pending.iter().filter(|(_, o)| o.peer == *peer).map(|(id, _)| *id).collect();
        let mut failed = Vec::new();
        for id in ids {
            let Some(o) = self.pending.remove(&id) else { continue };
            self.deadlines.remove(&(o.deadline, id));
            if o.replaced {
                // Its resend is among the requests to `peer`: that one reports.
                continue;
            }
            if let Some(other) = o.sibling {
                self.forget(other);
            }
            stats.unreachable += 1;
            failed.push(o.purpose);
        }
        failed
    }

    /// The link the requests to `peer` went on closed: their answers cannot come on it, so each attempt
    /// now meets its deadline, as though its time had run out (no grace for a slow answer): resent where it
    /// has attempts left (over a new link), failed where not. Returns how many requests were lost with the
    /// link (an attempt replaced by its resend is not one more); the next [`Requests::next_expired`] reports
    /// them.
    pub(super) fn link_lost(&mut self, now: Instant, peer: &NodeId, stats: &mut NodeStats) -> usize {
        let mut lost = 0;
        for (id, o) in self.pending.iter_mut().filter(|(_, o)| o.peer == *peer) {
            self.deadlines.remove(&(o.deadline, *id));
            o.deadline = now;
            o.grace = None;
            // The link it waited on came, and went: it may go again over a new one.
            o.dialing = false;
            self.deadlines.insert((now, *id));
            lost += usize::from(!o.replaced);
        }
        stats.lost_with_link += lost as u64;
        lost
    }

    /// Drops a pending attempt without a word (its sibling answered or failed).
    fn forget(&mut self, id: RequestId) {
        if let Some(o) = self.pending.remove(&id) {
            self.deadlines.remove(&(o.deadline, id));
        }
    }

    /// The earliest deadline.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Requests in flight.
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }
}
