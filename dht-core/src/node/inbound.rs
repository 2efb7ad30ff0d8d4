//! Answering peers: their requests, and the storage operations some of them wait on.

use super::records::{RecordMeta, StorePurpose};
use super::Node;
use crate::event::{Event, StoreOp, StoreResult};
use crate::id::{Key, NodeId};
use crate::message::{Contact, Request, RequestId, Response, StoreRefusal};
use crate::record::Record;
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
            Request::Store { record, ttl_secs, cas } => self.handle_store(now, from, id, *record, (ttl_secs, cas)),
        }
    }

    /// A peer's store: refused at once, or written and acknowledged once durable.
    fn handle_store(
        &mut self,
        now: Instant,
        from: Contact,
        id: RequestId,
        record: Record,
        (ttl_secs, cas): (u32, Option<u64>),
    ) {
        let key = record.key;
        let ttl = Duration::from_secs(u64::from(ttl_secs));
        let checked =
            self.records.check_store(now, &mut self.outputs, (&from.id, &record), (ttl, cas), &mut self.stats);
        let meta = match checked {
            Ok(meta) => meta,
            Err(reason) => {
                if reason == StoreRefusal::Busy && self.records.needs_reading(&key) {
                    let purpose = StorePurpose::LearnVersion { key };
                    self.records.push_op(&mut self.outputs, StoreOp::Get { key }, Some(purpose));
                }
                if reason == StoreRefusal::BadSignature {
                    self.misbehaved(from.id, "a record whose signature does not verify");
                }
                self.event(Event::StoreRefused { key, from: from.id, reason });
                self.respond(from, id, Response::StoreAck { refused: Some(reason) });
                return;
            }
        };
        let purpose = StorePurpose::InboundStore { from, request: id, key, meta };
        self.records.push_op(&mut self.outputs, StoreOp::Put { record, expires: meta.expires }, Some(purpose));
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
            self.records.write_failed(key, &meta);
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
        let target = NodeId::from_key(&key);
        let body = match (result, self.records.meta(&key)) {
            (StoreResult::Value(Some(record)), Some(meta)) if record.key == key => {
                let closer = if record.signed.is_some() { self.closer_for(&target, &from.id) } else { Vec::new() };
                Response::Value {
                    record: Box::new(record),
                    ttl_secs: super::ttl_secs(meta.expires.saturating_since(now)),
                    closer,
                }
            }
            _ => self.nodes_for(&target, &from.id),
        };
        self.respond(from, request, body);
    }

    /// The contacts we hand out for `target`, as an answer.
    pub(super) fn nodes_for(&self, target: &NodeId, requester: &NodeId) -> Response {
        Response::Nodes { closer: self.closer_for(target, requester) }
    }

    /// The contacts we hand out for `target`.
    fn closer_for(&self, target: &NodeId, requester: &NodeId) -> Vec<Contact> {
        // Peers whose last request to them failed are suspected gone: they are not handed out, so departed
        // peers do not crowd live ones out of answers. Ask for twice as many only when suspects are present.
        let want = self.config.k.min(self.config.max_contacts_per_reply);
        let usable = |e: &crate::routing::Entry| e.failures == 0 && &e.id != requester;
        let mut entries = self.table.closest_entries(target, want + 1);
        if entries.iter().filter(|e| usable(e)).count() < want.min(entries.len()) {
            entries = self.table.closest_entries(target, want * 2);
        }
        entries.iter().filter(|e| usable(e)).take(want).map(|e| e.contact()).collect()
    }

    pub(super) fn respond(&mut self, to: Contact, id: RequestId, body: Response) {
        self.outputs.push_back(crate::event::Output::Send { to, msg: crate::message::Message::Response { id, body } });
    }
}
