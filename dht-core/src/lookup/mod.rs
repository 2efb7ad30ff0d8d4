//! The iterative lookup: one state machine shared by every query kind (find_node, get, put, refresh).
//!
//! Candidates are kept sorted by distance to the target. Up to α requests are in flight; when
//! `stall_after` answers in a row bring nobody closer, the lookup is *stalled* and may have up to k in
//! flight, as the Kademlia paper's final round does. With a region radius set (where the k closest to any
//! point are expected), an answer from inside it widens the lookup the same way, and a candidate inside it
//! that ranks among the k closest so far is asked at once, past α. A lookup with a request budget (a bucket
//! refresh) does neither, nor widen when stalled: it keeps to α. It finishes when the k closest candidates
//! that did not fail have all answered.
//!
//! With d > 1 paths (S/Kademlia's disjoint lookups) the seeds are dealt out to d paths, each contact belongs
//! to the path whose answer brought it first, and every path runs the rules above on its own candidates:
//! no peer is asked by two paths, so a liar on one path cannot steer the others. The lookup ends when every
//! path has; the result is the k closest peers that answered on any path.

use crate::id::{Distance, NodeId};
use crate::message::Contact;

/// Where a candidate stands in a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Known, not asked yet.
    NotContacted,
    /// Asked; no answer yet (the node's per-request timeout turns this into `Failed`).
    Waiting,
    /// Answered.
    Succeeded,
    /// Timed out, refused, or sent an invalid answer.
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    contact: Contact,
    distance: Distance,
    state: PeerState,
    /// 1 for candidates from our own table, else the hops of the peer that told us about it plus one.
    hops: u8,
    /// Index in `introducers` of the peer that told us about it ([`NO_INTRODUCER`] for seeds).
    via: u16,
    /// The disjoint path it belongs to.
    path: u8,
    /// Failed by being slow ([`Lookup::on_slow`]): a late answer still counts.
    late: bool,
    /// Late, and asked again ([`Lookup::on_resent`]): among the k closest, it holds the lookup's end.
    resent: bool,
    /// Waited on while a link to it is set up ([`Lookup::on_dialing`]): late and holding the end like a
    /// resent peer, but not a failure (nor its introducer's) unless it fails.
    dialing: bool,
}

/// The state of one disjoint path.
#[derive(Debug, Clone, Copy, Default)]
struct Path {
    in_flight: u32,
    no_progress: u32,
    stalled: bool,
    finished: bool,
}

/// Most disjoint paths a lookup runs.
pub const MAX_PATHS: usize = 8;

/// `Candidate::via` of seeds (and of contacts past the introducers a lookup tracks).
const NO_INTRODUCER: u16 = u16::MAX;

/// What the peers a candidate came from have introduced so far.
#[derive(Debug, Clone)]
struct Introducer {
    id: NodeId,
    failed: u16,
    answered: u16,
}

/// What the lookup wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send the query's request to this peer.
    Query(Contact),
    /// Requests are in flight; wait for answers or timeouts.
    Wait,
    /// Done: read [`Lookup::closest`].
    Finished,
}

/// Parameters of one lookup.
#[derive(Debug, Clone, Copy)]
pub struct LookupParams {
    /// Number of closest peers wanted (k).
    pub k: usize,
    /// Requests in flight before the lookup stalls (α).
    pub alpha: usize,
    /// Cap on candidates kept per path. Beyond it the farthest candidate goes that is neither waited on nor
    /// among the k closest that answered (failed ones go first), else the newcomer. Keep it well above
    /// 2k + α: a list barely larger than k fills with answers and requests in flight, and then a closer
    /// newcomer has nobody left to push out.
    pub max_candidates: usize,
    /// Answers in a row that bring nobody closer before the lookup stalls and widens to k in flight (not
    /// with a request budget, see [`Lookup::set_request_budget`]).
    pub stall_after: usize,
    /// A peer whose introduced contacts failed this many times, more than twice as often as they answered,
    /// is distrusted: its introductions not asked yet are dropped, and contacts it hands out later are
    /// ignored (0 = never). Made-up contacts handed out by a liar then cost a few timeouts, not the lookup.
    /// (It stays in the result if it answered: under churn honest peers hand out dead contacts too.)
    pub distrust_after: u16,
    /// Disjoint paths (1 = a plain Kademlia lookup; at most [`MAX_PATHS`]).
    pub paths: usize,
}

/// An iterative closest-peers lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    target: NodeId,
    params: LookupParams,
    candidates: Vec<Candidate>,
    /// The first `npaths` are in use (inline: a lookup is made for every query and must stay cheap).
    paths: [Path; MAX_PATHS],
    npaths: usize,
    /// The path asked first at the next poll (paths take turns).
    turn: usize,
    finished: bool,
    requests: u32,
    /// Requests this lookup may send at most (a bucket refresh needs contacts in range, not convergence).
    budget: Option<u32>,
    /// How far from the target the k closest nodes are expected to lie.
    region: Option<Distance>,
    responses: u32,
    failures: u32,
    introducers: Vec<Introducer>,
    distrusted: Vec<NodeId>,
    /// Failed candidates forgotten to make room; not taken again.
    dropped: Vec<NodeId>,
}

impl Lookup {
    /// A lookup for `target` starting from `seeds` (usually the k closest of our routing table).
    pub fn new(target: NodeId, seeds: impl IntoIterator<Item = Contact>, params: LookupParams) -> Self {
        let params = LookupParams {
            k: params.k.max(1),
            alpha: params.alpha.max(1),
            // Each path keeps as many candidates as a single lookup would.
            max_candidates: params.max_candidates.max(params.k) * params.paths.clamp(1, MAX_PATHS),
            stall_after: params.stall_after.max(1),
            distrust_after: params.distrust_after,
            paths: params.paths.clamp(1, MAX_PATHS),
        };
        let mut lookup = Lookup {
            target,
            params,
            candidates: Vec::new(),
            paths: [Path::default(); MAX_PATHS],
            npaths: params.paths,
            turn: 0,
            finished: false,
            requests: 0,
            budget: None,
            region: None,
            responses: 0,
            failures: 0,
            introducers: Vec::new(),
            distrusted: Vec::new(),
            dropped: Vec::new(),
        };
        for c in seeds {
            lookup.add(c, 1, NO_INTRODUCER, 0);
        }
        // Seeds are dealt out nearest first, so every path starts with some of the closest.
        for (i, c) in lookup.candidates.iter_mut().enumerate() {
            c.path = (i % params.paths) as u8;
        }
        lookup
    }

    /// A lookup over before it starts: `peers` are known to be the closest (all there are), as answered.
    pub fn known(target: NodeId, peers: impl IntoIterator<Item = Contact>, params: LookupParams) -> Self {
        let mut lookup = Lookup::new(target, peers, params);
        for c in &mut lookup.candidates {
            c.state = PeerState::Succeeded;
        }
        lookup.finished = true;
        lookup
    }

    /// The point looked up.
    pub fn target(&self) -> &NodeId {
        &self.target
    }

    fn add(&mut self, contact: Contact, hops: u8, via: u16, path: u8) -> bool {
        if self.distrusted.contains(&contact.id) || self.dropped.contains(&contact.id) {
            return false;
        }
        let distance = contact.id.distance(&self.target);
        let search = |cs: &[Candidate]| cs.binary_search_by_key(&distance, |c| c.distance);
        let mut pos = match search(&self.candidates) {
            Ok(_) => return false,
            Err(pos) => pos,
        };
        if pos >= self.params.max_candidates && self.drop_failed() {
            pos = search(&self.candidates).unwrap_or_else(|p| p);
        }
        if pos >= self.params.max_candidates {
            return false;
        }
        self.candidates.insert(
            pos,
            Candidate {
                contact,
                distance,
                state: PeerState::NotContacted,
                hops,
                via,
                path,
                late: false,
                dialing: false,
                resent: false,
            },
        );
        if self.candidates.len() > self.params.max_candidates && !self.drop_failed() {
            let victim = self.eviction_victim().unwrap_or(pos);
            self.candidates.remove(victim);
            return victim != pos;
        }
        true
    }

    /// The candidate a full list forgets: the farthest one that is neither waited on (its answer must still
    /// be matched) nor one of the k closest that answered (the result so far). A closer newcomer thus
    /// pushes out peers that answered beyond the k closest, not itself; but made-up contacts closer than
    /// anyone, handed out by liars faster than they time out, cannot push real answers out of the result.
    fn eviction_victim(&self) -> Option<usize> {
        let mut answered = self.succeeded().count();
        for (i, c) in self.candidates.iter().enumerate().rev() {
            match c.state {
                PeerState::Waiting => {}
                PeerState::Failed if c.resent => {}
                PeerState::Succeeded if answered <= self.params.k => answered -= 1,
                _ => return Some(i),
            }
        }
        None
    }

    /// Makes room by forgetting the candidates that failed (they never count again; made-up contacts from
    /// liars would otherwise crowd honest ones out of the list). Returns whether any were dropped.
    fn drop_failed(&mut self) -> bool {
        let before = self.candidates.len();
        let dropped = &mut self.dropped;
        self.candidates.retain(|c| {
            // A resent one is still waited on.
            let keep = c.state != PeerState::Failed || c.resent;
            if !keep {
                dropped.push(c.contact.id);
            }
            keep
        });
        self.candidates.len() < before
    }

    fn find(&mut self, id: &NodeId) -> Option<&mut Candidate> {
        let distance = id.distance(&self.target);
        let pos = self.candidates.binary_search_by_key(&distance, |c| c.distance).ok()?;
        Some(&mut self.candidates[pos])
    }

    /// The next step. Call until it returns [`Next::Wait`] or [`Next::Finished`]; each [`Next::Query`] is a
    /// request the caller must send, and later report with [`Lookup::on_success`] or [`Lookup::on_failure`].
    pub fn poll_next(&mut self) -> Next {
        if self.finished {
            return Next::Finished;
        }
        let d = self.npaths;
        for i in 0..d {
            let p = (self.turn + i) % d;
            if let Some(contact) = self.poll_path(p) {
                self.turn = (p + 1) % d;
                return Next::Query(contact);
            }
        }
        // A path that is not finished after its poll has requests in flight.
        if self.paths[..d].iter().all(|p| p.finished) {
            self.finished = true;
            Next::Finished
        } else {
            Next::Wait
        }
    }

    /// The next peer path `p` asks, if it may ask one now; marks the path finished when it is done.
    fn poll_path(&mut self, p: usize) -> Option<Contact> {
        let region = self.region.filter(|_| self.budget.is_none());
        let path = &mut self.paths[p];
        if path.finished {
            return None;
        }
        // A budgeted lookup keeps to α whatever happens: its budget is spread over waves.
        let parallelism = if path.stalled && self.budget.is_none() { self.params.k } else { self.params.alpha };
        let mut succeeded = 0;
        let mut waiting_closer = false;
        // Candidates so far that did not fail: those nearer than the one at hand.
        let mut live = 0;
        for c in self.candidates.iter_mut().filter(|c| usize::from(c.path) == p) {
            let nearer = live;
            if c.state != PeerState::Failed {
                live += 1;
            }
            match c.state {
                PeerState::Succeeded => {
                    succeeded += 1;
                    if succeeded >= self.params.k {
                        // Done once no closer peer may still answer.
                        path.finished = !waiting_closer;
                        return None;
                    }
                }
                PeerState::NotContacted => {
                    if self.budget.is_some_and(|b| self.requests >= b) {
                        break;
                    }
                    // One of the k closest so far that lies inside the radius where the k closest are
                    // expected is asked at once, past α: it is likely part of the result, whose answers the
                    // lookup waits for anyway, and its answer brings the rest of the neighbourhood.
                    let expected = nearer < self.params.k && region.is_some_and(|r| c.distance <= r);
                    if !expected && path.in_flight as usize >= parallelism {
                        return None;
                    }
                    c.state = PeerState::Waiting;
                    path.in_flight += 1;
                    self.requests += 1;
                    return Some(c.contact.clone());
                }
                PeerState::Waiting => waiting_closer = true,
                // A lost message, maybe: its resend may still put it in the result.
                PeerState::Failed if c.resent => waiting_closer = true,
                PeerState::Failed => {}
            }
        }
        path.finished = path.in_flight == 0 && !waiting_closer;
        None
    }

    /// `peer` answered with `closer` contacts. Answers from peers not waited on are ignored, except late
    /// answers from peers given up on as slow ([`Lookup::on_slow`]), which count as if on time.
    pub fn on_success(&mut self, peer: &NodeId, closer: impl IntoIterator<Item = Contact>) {
        let Some(c) = self.find(peer) else { return };
        let late = match c.state {
            PeerState::Waiting => false,
            PeerState::Failed if c.late => true,
            _ => return,
        };
        c.state = PeerState::Succeeded;
        c.late = false;
        c.resent = false;
        // A peer waited on while its link was set up was not counted as failed.
        let dialing = std::mem::take(&mut c.dialing);
        let hops = c.hops.saturating_add(1);
        let via = c.via;
        let p = c.path;
        if late {
            if !dialing {
                self.failures -= 1;
                if let Some(i) = self.introducers.get_mut(usize::from(via)) {
                    i.failed = i.failed.saturating_sub(1);
                }
            }
        } else {
            self.paths[usize::from(p)].in_flight -= 1;
        }
        self.responses += 1;
        if let Some(i) = self.introducers.get_mut(usize::from(via)) {
            i.answered += 1;
        }
        let me = self.introducer_index(*peer);
        let closest_before = self.closest_on(p);
        for contact in closer {
            self.add(contact, hops, me, p);
        }
        let progressed = self.closest_on(p) < closest_before;
        let in_region = self.in_region(&peer.distance(&self.target));
        let path = &mut self.paths[usize::from(p)];
        if in_region {
            // A peer within the expected radius of the k closest answered: the neighbourhood is reached,
            // and the rest of the k closest are asked at once.
            path.stalled = true;
            return;
        }
        if progressed {
            path.no_progress = 0;
            path.stalled = false;
        } else {
            path.no_progress += 1;
            if path.no_progress as usize >= self.params.stall_after {
                path.stalled = true;
            }
        }
    }

    /// Distance of path `p`'s closest candidate.
    fn closest_on(&self, p: u8) -> Option<Distance> {
        self.candidates.iter().find(|c| c.path == p).map(|c| c.distance)
    }

    /// `peer` has not answered within the expected round trip: the lookup goes on as if it failed, but an
    /// answer that still comes counts ([`Lookup::on_success`]).
    pub fn on_slow(&mut self, peer: &NodeId) {
        if self.state_of(peer) != Some(PeerState::Waiting) {
            return;
        }
        self.on_failure(peer);
        if let Some(c) = self.find(peer) {
            c.late = true;
        }
    }

    /// `peer` has not answered within the expected round trip and was asked again: the lookup goes on as
    /// if it failed ([`Lookup::on_slow`]), but does not finish while it ranks among the k closest and the
    /// resend may still be answered ([`Lookup::on_success`] or [`Lookup::on_failure`] ends the wait).
    pub fn on_resent(&mut self, peer: &NodeId) {
        if self.state_of(peer) != Some(PeerState::Waiting) {
            return;
        }
        self.on_slow(peer);
        if let Some(c) = self.find(peer) {
            c.resent = true;
        }
    }

    /// `peer`'s request waits on a link being set up to it (a first contact): the lookup asks others
    /// meanwhile (the peer no longer counts against α) but does not finish while the peer ranks among the k
    /// closest and may still answer ([`Lookup::on_success`] counts it, [`Lookup::on_failure`] ends the
    /// wait). Unlike a slow peer, it counts as a failure, its introducer's too, only if it fails: every
    /// contact a browser node learns needs a link first, and its introducer is no liar for that.
    pub fn on_dialing(&mut self, peer: &NodeId) {
        let Some(c) = self.find(peer).filter(|c| c.state == PeerState::Waiting) else { return };
        c.state = PeerState::Failed;
        c.late = true;
        c.resent = true;
        c.dialing = true;
        let p = c.path;
        self.paths[usize::from(p)].in_flight -= 1;
    }

    /// `peer` failed to answer usefully (timeout, refusal, invalid answer).
    pub fn on_failure(&mut self, peer: &NodeId) {
        let Some(c) = self.find(peer) else { return };
        if c.resent {
            // The resend failed too: the lookup stops waiting for it.
            c.resent = false;
            if std::mem::take(&mut c.dialing) {
                // Its link could not be set up: a failure, counted now.
                let via = c.via;
                self.count_failure(via);
            }
            return;
        }
        if c.state != PeerState::Waiting {
            return;
        }
        c.state = PeerState::Failed;
        let via = c.via;
        let p = c.path;
        self.paths[usize::from(p)].in_flight -= 1;
        self.count_failure(via);
    }

    /// A request failed; counts it against the peer that introduced the contact (`via`), which is
    /// distrusted past [`LookupParams::distrust_after`] failures that outnumber twice its answers.
    fn count_failure(&mut self, via: u16) {
        self.failures += 1;
        let limit = self.params.distrust_after;
        let Some(i) = self.introducers.get_mut(usize::from(via)) else { return };
        i.failed += 1;
        if limit > 0 && i.failed >= limit && i.failed > 2 * i.answered {
            let liar = i.id;
            self.distrust(liar, via);
        }
    }

    /// The index of `id` among the peers that introduced contacts (added on first use).
    fn introducer_index(&mut self, id: NodeId) -> u16 {
        if let Some(p) = self.introducers.iter().position(|i| i.id == id) {
            return p as u16;
        }
        if self.introducers.len() >= usize::from(NO_INTRODUCER) {
            return NO_INTRODUCER;
        }
        self.introducers.push(Introducer { id, failed: 0, answered: 0 });
        (self.introducers.len() - 1) as u16
    }

    /// `liar` handed out contacts that do not answer: forget the ones not asked yet.
    fn distrust(&mut self, liar: NodeId, index: u16) {
        if self.distrusted.contains(&liar) {
            return;
        }
        self.distrusted.push(liar);
        self.candidates.retain(|c| !(c.state == PeerState::NotContacted && c.via == index));
    }

    /// Peers distrusted so far (their introductions failed).
    pub fn distrusted(&self) -> &[NodeId] {
        &self.distrusted
    }

    /// Caps the requests this lookup sends; once spent, it ends when the last answer is in. The budget is
    /// spread over at least two waves (at most half of it in flight, stalled or not, region or not), so the
    /// second wave can follow the first one's answers toward the target.
    pub fn set_request_budget(&mut self, budget: u32) {
        self.budget = Some(budget);
        self.params.alpha = self.params.alpha.min((budget as usize / 2).max(1));
        self.params.k = self.params.k.min(budget as usize).max(1);
    }

    /// Sets the radius within which the k closest nodes to any point are expected (estimated from the
    /// distance to our own k-th closest neighbour). An answer from a peer that close widens the lookup to
    /// k in flight at once instead of after a stall, and a candidate that close is asked as soon as it ranks
    /// among the k closest known, whatever is in flight. Ignored while a request budget is set.
    pub fn set_region_radius(&mut self, radius: Distance) {
        self.region = Some(radius);
    }

    /// Whether a peer this far from the target lies where the k closest are expected. Never for a budgeted
    /// lookup, whose requests are spread over waves (a bucket refresh wants contacts in range, not speed).
    fn in_region(&self, distance: &Distance) -> bool {
        self.region.filter(|_| self.budget.is_none()).is_some_and(|r| *distance <= r)
    }

    /// Ends the lookup now (a get that found its value).
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Whether the lookup is over.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether the lookup ran to its end and reached every peer it heard of: all answered (none failed,
    /// none dropped, none left unasked), fewer than k of them, and no request budget cut it short. Then
    /// these are all the peers there are, as far as anyone it asked knows.
    pub fn reached_everyone(&self) -> bool {
        self.finished
            && self.budget.is_none()
            && self.failures == 0
            && self.dropped.is_empty()
            && self.candidates.len() < self.params.k
            && self.candidates.iter().all(|c| c.state == PeerState::Succeeded)
    }

    /// The k closest peers that answered, nearest first.
    pub fn closest(&self) -> Vec<Contact> {
        self.succeeded().take(self.params.k).map(|c| c.contact.clone()).collect()
    }

    fn succeeded(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates.iter().filter(|c| c.state == PeerState::Succeeded)
    }

    /// Path length to the closest peer that answered (1 = it was in our own table), 0 if none answered.
    pub fn hops(&self) -> u32 {
        self.succeeded().next().map_or(0, |c| u32::from(c.hops))
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Answers received so far.
    pub fn responses(&self) -> u32 {
        self.responses
    }

    /// Failed requests so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The state of `peer` in this lookup.
    pub fn state_of(&self, peer: &NodeId) -> Option<PeerState> {
        let distance = peer.distance(&self.target);
        self.candidates.binary_search_by_key(&distance, |c| c.distance).ok().map(|i| self.candidates[i].state)
    }
}

#[cfg(test)]
mod tests;
