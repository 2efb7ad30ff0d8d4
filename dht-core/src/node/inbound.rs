//! Answering peers: their requests, and the storage operations some of them wait on.

use super::records::{RecordMeta, StorePurpose};
use super::Node;
use crate::event::{Event, StoreOp, StoreResult};
use crate::id::{Key, NodeId};
use crate::message::{Contact, Record, Request, RequestId, Response, StoreRefusal};
use crate::time::Instant;
use core::time::Duration;

impl Node {
    pub(super) fn handle_request(&mut self, now: Instant, from: Contact, id: RequestId, body: Request) {
        match body {
            Request::Ping => self.respond(from, id, Response::Pong),
            Request::FindNode { target } => {
                let body = self.nodes_for(&target, &from.id);
                self.respond(from, id, body);
            }
            Request::FindValue { key } => {
                if self.records.can_serve(&key) {
                    let purpose = StorePurpose::InboundFindValue { from, request: id, key };
                    self.records.push_op(&mut self.outputs, StoreOp::Get { key }, Some(purpose));
                } else {
                    let body = self.nodes_for(&NodeId::from_key(&key), &from.id);
                    self.respond(from, id, body);
                }
            }
            Request::Store { record, ttl_secs } => self.handle_store(now, from, id, record, ttl_secs),
        }
    }

    /// A peer's store: refused at once, or written and acknowledged once durable.
    fn handle_store(&mut self, now: Instant, from: Contact, id: RequestId, record: Record, ttl_secs: u32) {
        let key = record.key;
        let ttl = Duration::from_secs(u64::from(ttl_secs));
        if let Some(reason) = self.records.check_store(&record, ttl, &mut self.stats) {
            self.event(Event::StoreRefused { key, from: from.id, reason });
            self.respond(from, id, Response::StoreAck { refused: Some(reason) });
            return;
        }
        let expires = now + ttl;
        let size = record.value.len() as u32;
        let purpose = StorePurpose::InboundStore { from, request: id, key, expires, size };
        self.records.push_op(&mut self.outputs, StoreOp::Put { record, expires }, Some(purpose));
    }

    /// A peer's store was written (or failed): index it and answer.
    pub(super) fn finish_inbound_store(
        &mut self,
        now: Instant,
        (from, request, key): (Contact, RequestId, Key),
        meta: RecordMeta,
        result: &StoreResult,
    ) {
        let refused = if *result == StoreResult::Done {
            self.records.index(now, &mut self.rng, key, meta);
            self.event(Event::RecordStored { key, from: from.id });
            None
        } else {
            Some(StoreRefusal::StorageFailed)
        };
        self.respond(from, request, Response::StoreAck { refused });
    }

    /// The value a peer's find-value asked for was read: answer with it, or with contacts when it is gone.
    pub(super) fn finish_inbound_find_value(
        &mut self,
        now: Instant,
        (from, request, key): (Contact, RequestId, Key),
        result: StoreResult,
    ) {
        let body = match (result, self.records.meta(&key)) {
            (StoreResult::Value(Some(value)), Some(meta)) => Response::Value {
                record: Record { key, value },
                ttl_secs: super::ttl_secs(meta.expires.saturating_since(now)),
            },
            _ => self.nodes_for(&NodeId::from_key(&key), &from.id),
        };
        self.respond(from, request, body);
    }

    /// The contacts we hand out for `target`.
    pub(super) fn nodes_for(&self, target: &NodeId, requester: &NodeId) -> Response {
        // Peers whose last request to them failed are suspected gone: they are not handed out, so departed
        // peers do not crowd live ones out of answers. Ask for twice as many only when suspects are present.
        let want = self.config.k.min(self.config.max_contacts_per_reply);
        let usable = |e: &crate::routing::Entry| e.failures == 0 && &e.id != requester;
        let mut entries = self.table.closest_entries(target, want + 1);
        if entries.iter().filter(|e| usable(e)).count() < want.min(entries.len()) {
            entries = self.table.closest_entries(target, want * 2);
        }
        let closer = entries.iter().filter(|e| usable(e)).take(want).map(|e| e.contact()).collect();
        Response::Nodes { closer }
    }

    pub(super) fn respond(&mut self, to: Contact, id: RequestId, body: Response) {
        self.outputs.push_back(crate::event::Output::Send { to, msg: crate::message::Message::Response { id, body } });
    }
}
