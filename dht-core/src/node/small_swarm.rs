//! A swarm smaller than k. When a lookup reached every peer it heard of and fewer than k answered, a
//! lookup for any other target would find the same peers: puts soon after store at them directly instead
//! of looking their key up again, so a file's thousands of chunk puts cost one message each on a link,
//! not two. What is known is forgotten when a new peer enters the table, when a request to anyone fails or
//! goes slow, and after [`SMALL_SWARM_TTL`]; a put after that looks up again (and learns it again).
//! Swarms of k or more peers never take this path: there a lookup finds k peers.

use super::Node;
use crate::lookup::Lookup;
use crate::message::Contact;
use crate::time::Instant;
use core::time::Duration;

/// How long the peers a lookup found stand for the whole swarm.
pub(super) const SMALL_SWARM_TTL: Duration = Duration::from_secs(10);

/// Every peer of a swarm smaller than k, as a lookup found them.
#[derive(Debug, Clone)]
pub(super) struct SmallSwarm {
    peers: Vec<Contact>,
    until: Instant,
}

impl Node {
    /// A lookup ended: if it reached everyone and found fewer than k, those are the swarm for a while.
    pub(super) fn learn_swarm_size(&mut self, now: Instant, lookup: &Lookup) {
        // A lookup that asked nobody (one made from this knowledge) teaches nothing new.
        if lookup.requests() > 0 && lookup.reached_everyone() {
            self.small_swarm = Some(SmallSwarm { peers: lookup.closest(), until: now + SMALL_SWARM_TTL });
        }
    }

    /// Something changed (a new peer, a failed request): the next put looks up again.
    pub(super) fn forget_swarm_size(&mut self) {
        self.small_swarm = None;
    }

    /// Every peer there is, when the swarm is known to be smaller than k (a put stores at all of them, so
    /// no lookup is needed; `Lookup::known` orders them for its target).
    pub(super) fn whole_small_swarm(&self, now: Instant) -> Option<Vec<Contact>> {
        self.small_swarm.as_ref().filter(|s| now < s.until).map(|s| s.peers.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{drain, id, node_knowing, request, sends, t};
    use super::*;
    use crate::message::{Message, Request, Response};
    use crate::record::Record;
    use crate::Config;

    /// Puts `n`'s record from `node` at `at` ms, answering every request at once (nodes: no closer peers;
    /// stores: acknowledged); returns the kinds of requests sent, in order ("find" / "store").
    fn put_answered(node: &mut Node, at: u64, n: u8) -> Vec<&'static str> {
        node.put(t(at), Record::immutable(vec![n; 8]));
        let mut kinds = Vec::new();
        let mut pending = sends(&drain(node));
        while let Some((to, msg)) = pending.pop() {
            let (rid, body) = request(&msg);
            let reply = match body {
                Request::FindNode { .. } => {
                    kinds.push("find");
                    Response::Nodes { closer: vec![] }
                }
                Request::Store { .. } => {
                    kinds.push("store");
                    Response::StoreAck { refused: None }
                }
                other => panic!("unexpected {other:?}"),
            };
            node.handle_message(t(at + 1), Contact::bare(to), Message::Response { id: rid, body: reply });
            pending.extend(sends(&drain(node)));
        }
        kinds.sort_unstable();
        kinds
    }

    #[test]
    fn puts_in_a_swarm_smaller_than_k_skip_the_lookup_until_something_changes() {
        let mut node = node_knowing(Config::default(), &[1, 2]);
        // The first put looks its key up: both peers answer and know nobody else.
        assert_eq!(put_answered(&mut node, 0, 1), ["find", "find", "store", "store"]);
        // So the swarm is these two: the next puts store at once.
        assert_eq!(put_answered(&mut node, 100, 2), ["store", "store"]);
        assert_eq!(put_answered(&mut node, 200, 3), ["store", "store"]);
        // A new peer: look up again (and learn the swarm again).
        node.add_contact(t(300), Contact::bare(id(3)));
        drain(&mut node);
        assert_eq!(put_answered(&mut node, 400, 4), ["find", "find", "find", "store", "store", "store"]);
        assert_eq!(put_answered(&mut node, 500, 5), ["store", "store", "store"]);
        // What it knows lasts SMALL_SWARM_TTL, lookups made from it do not renew it.
        let later = 500 + SMALL_SWARM_TTL.as_millis() as u64;
        assert_eq!(put_answered(&mut node, later, 6), ["find", "find", "find", "store", "store", "store"]);
    }

    #[test]
    #[allow(clippy::field_reassign_with_default)] // `Config` is non-exhaustive
    fn a_failed_request_or_a_swarm_of_k_means_lookups_again() {
        let mut cfg = Config::default();
        cfg.request_retries = 0;
        let mut node = node_knowing(cfg.clone(), &[1, 2]);
        assert_eq!(put_answered(&mut node, 0, 1), ["find", "find", "store", "store"]);
        // A lookup whose request times out: the next put looks up again.
        node.find_node(t(100), id(9));
        drain(&mut node);
        let deadline = node.poll_timeout().expect("a request deadline");
        node.handle_timeout(deadline);
        drain(&mut node);
        let at = deadline.as_millis() - t(0).as_millis() + 10;
        assert!(put_answered(&mut node, at, 2).contains(&"find"));

        // With k peers the lookups never stop.
        cfg.k = 2;
        let mut node = node_knowing(cfg, &[1, 2]);
        for (at, n) in [(0, 1), (100, 2)] {
            assert_eq!(put_answered(&mut node, at, n), ["find", "find", "store", "store"]);
        }
    }
}
