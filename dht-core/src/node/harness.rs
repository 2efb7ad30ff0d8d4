//! Two nodes wired to each other for tests (quinn-proto's `Pair` shape): each with its own in-memory store,
//! messages delivered after a fixed one-way delay, [`Pair::drive`] runs both to quiescence.

use super::Node;
use crate::config::Config;
use crate::event::{Event, StoreOp, StoreOpId, StoreResult};
use crate::id::NodeId;
use crate::message::{Contact, Message};
use crate::pump::{MemoryRecords, OutputSink};
use crate::time::Instant;
use core::time::Duration;
use std::collections::VecDeque;

/// A message on its way: to node `to` (0 or 1), from `from`, arriving at `at`.
type InFlight = (Instant, usize, Contact, Message);

/// Two nodes, their stores, the events each reported, and the messages between them.
pub(super) struct Pair {
    pub(super) nodes: [Node; 2],
    pub(super) stores: [MemoryRecords; 2],
    pub(super) events: [Vec<Event>; 2],
    pub(super) now: Instant,
    /// One-way delay of every message.
    pub(super) delay: Duration,
    in_flight: VecDeque<InFlight>,
    /// Messages to anyone but the other node (dropped: such peers do not exist).
    pub(super) lost: usize,
}

struct Sink<'a> {
    me: usize,
    ids: [NodeId; 2],
    local: Contact,
    delay: Duration,
    store: &'a mut MemoryRecords,
    events: &'a mut Vec<Event>,
    in_flight: &'a mut VecDeque<InFlight>,
    lost: &'a mut usize,
}

impl OutputSink for Sink<'_> {
    fn send(&mut self, now: Instant, to: Contact, msg: Message) {
        match self.ids.iter().position(|id| *id == to.id) {
            Some(other) if other != self.me => {
                self.in_flight.push_back((now + self.delay, other, self.local.clone(), msg))
            }
            _ => *self.lost += 1,
        }
    }

    fn store(&mut self, _now: Instant, _id: StoreOpId, op: StoreOp) -> Option<StoreResult> {
        Some(self.store.apply(op))
    }

    fn event(&mut self, _now: Instant, event: Event) {
        self.events.push(event);
    }
}

impl Pair {
    /// Nodes with ids from public keys `[1; 32]` and `[2; 32]` and the given configurations, each knowing
    /// the other, at virtual time `now`; outputs of the introduction already delivered.
    pub(super) fn new(configs: [Config; 2], now: Instant) -> Self {
        let contacts = [1u8, 2].map(|n| Contact::bare(NodeId::from_public_key(&[n; 32])));
        let [a, b] = configs.map(|c| c.validate().expect("a valid test configuration"));
        let nodes = [Node::new(a, contacts[0].clone(), 11, now), Node::new(b, contacts[1].clone(), 12, now)];
        let mut pair = Pair {
            nodes,
            stores: Default::default(),
            events: Default::default(),
            now,
            delay: Duration::from_millis(10),
            in_flight: VecDeque::new(),
            lost: 0,
        };
        pair.nodes[0].add_contact(now, contacts[1].clone());
        pair.nodes[1].add_contact(now, contacts[0].clone());
        pair.drive();
        pair
    }

    /// The ids of the two nodes.
    pub(super) fn ids(&self) -> [NodeId; 2] {
        [*self.nodes[0].local_id(), *self.nodes[1].local_id()]
    }

    /// Drains node `i`'s outputs into the network, its store and its events.
    fn pump(&mut self, i: usize) {
        let ids = self.ids();
        let mut sink = Sink {
            me: i,
            ids,
            local: Contact::bare(ids[i]),
            delay: self.delay,
            store: &mut self.stores[i],
            events: &mut self.events[i],
            in_flight: &mut self.in_flight,
            lost: &mut self.lost,
        };
        self.nodes[i].pump(self.now, &mut sink);
    }

    /// Delivers messages (time moving to each arrival) and runs the timers due before each, until no
    /// message is in flight. Later timers are left for [`Pair::advance`].
    pub(super) fn drive(&mut self) {
        while self.step(None) {}
    }

    /// Moves time forward by `by`: every message and timer due by then in time order, then the messages
    /// still in flight.
    pub(super) fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while self.step(Some(end)) {}
        self.now = self.now.max(end);
        self.drive();
    }

    /// Handles the earliest of the next arrival and the nodes' next timer (a timer only before an arrival
    /// when there is no `limit`, else up to it); `false` when there is none.
    fn step(&mut self, limit: Option<Instant>) -> bool {
        self.pump(0);
        self.pump(1);
        let arrival = self.in_flight.front().map(|m| m.0);
        let timer = (0..2).filter_map(|i| self.nodes[i].poll_timeout().map(|t| (t, i))).min();
        let timer_first = match (timer, arrival) {
            (Some((t, _)), Some(a)) => t < a,
            (Some(_), None) => limit.is_some(),
            (None, _) => false,
        };
        let at = if timer_first { timer.map(|(t, _)| t) } else { arrival };
        match at {
            Some(at) if limit.is_none_or(|l| at <= l) => self.now = self.now.max(at),
            _ => return false,
        }
        match timer {
            Some((_, i)) if timer_first => self.nodes[i].handle_timeout(self.now),
            _ => {
                let (_, to, from, msg) = self.in_flight.pop_front().expect("an arrival was found just above");
                self.nodes[to].handle_message(self.now, from, msg);
            }
        }
        true
    }

    /// Events of node `i` reported since the last call.
    pub(super) fn take_events(&mut self, i: usize) -> Vec<Event> {
        core::mem::take(&mut self.events[i])
    }
}
