//! What the page is shown: peers, the routing table and events as plain serializable values.

use dht_core::{Contact, NodeId};
use dht_driver::NodeEvent;
use serde::Serialize;

/// A peer as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerView {
    /// Full node id, hex.
    pub id: String,
    /// The first 8 bytes, hex.
    pub short: String,
    /// `native` when the peer listens on TCP (a server), `browser` when it is reachable only over WebRTC.
    pub kind: &'static str,
    /// Routing-table bucket of the peer as seen from `own`: leading zero bits of the XOR distance (0 holds
    /// the farthest half of the id space).
    pub bucket: Option<usize>,
    /// Its advertised addresses.
    pub addrs: Vec<String>,
    /// How the live link to it travels (`None` without a live link).
    pub path: Option<PathView>,
}

/// A live link's path as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathView {
    /// `host` (direct), `srflx` / `prflx` (direct through a NAT) or `relay` (through TURN): see
    /// `transport_webrtc::LinkPath::kind`.
    pub kind: &'static str,
    /// Our candidate's type.
    pub local: &'static str,
    /// The peer's candidate's type.
    pub remote: &'static str,
    /// `udp` or `tcp`.
    pub protocol: String,
    /// Milliseconds from the first offer to the authenticated link.
    pub setup_ms: u64,
    /// Of those, until the SDP exchange was done (see `transport_webrtc::LinkPath::signaled_ms`).
    pub signaled_ms: u64,
    /// This node dialed the link (rather than answered).
    pub dialed: bool,
    /// Relays its setup's signals passed over the DHT's links (0: through the signaling server).
    pub relays: u8,
}

/// `native` for peers with a TCP address, `browser` for the rest (tabs cannot listen on TCP).
pub fn peer_kind(contact: &Contact) -> &'static str {
    if contact.addrs.iter().any(|a| a.as_str().starts_with("tcp:")) {
        "native"
    } else {
        "browser"
    }
}

impl PeerView {
    /// The view of `contact` from the node `own`, with the path of a live link to it (`path_of`).
    pub fn new(own: &NodeId, contact: &Contact, path_of: impl Fn(&NodeId) -> Option<PathView>) -> Self {
        PeerView {
            id: format!("{:#}", contact.id),
            short: contact.id.to_string(),
            kind: peer_kind(contact),
            bucket: own.distance(&contact.id).bucket_index(),
            addrs: contact.addrs.iter().map(|a| a.as_str().to_string()).collect(),
            path: path_of(&contact.id),
        }
    }
}

/// One non-empty bucket of the routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketView {
    /// Its index (leading zero bits of the distance: 0 holds the farthest half of the id space).
    pub bucket: usize,
    /// Its peers.
    pub peers: Vec<PeerView>,
}

/// The routing table as `(bucket, contacts)` pairs, seen from `own`.
pub fn table_view(
    own: &NodeId,
    table: &[(usize, Vec<Contact>)],
    path_of: impl Fn(&NodeId) -> Option<PathView>,
) -> Vec<BucketView> {
    table
        .iter()
        .map(|(bucket, contacts)| BucketView {
            bucket: *bucket,
            peers: contacts.iter().map(|c| PeerView::new(own, c, &path_of)).collect(),
        })
        .collect()
}

/// An event as the page sees it: `{ type, peer?, key?, reason? }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventView {
    /// `peer_connected`, `peer_disconnected`, `peer_added`, `peer_removed`, `record_stored`,
    /// `peer_misbehaved`, `dial_failed`, `storage_evicted` or `other`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The peer's short id, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The peer's kind, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_kind: Option<&'static str>,
    /// The record's key (short hex), for `record_stored`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What happened, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl EventView {
    fn of(kind: &'static str) -> Self {
        EventView { kind, peer: None, peer_kind: None, key: None, detail: None }
    }

    /// The page's view of a driver event.
    pub fn from_event(ev: &NodeEvent) -> Self {
        match ev {
            NodeEvent::PeerConnected(c) => {
                EventView { peer: Some(c.id.to_string()), peer_kind: Some(peer_kind(c)), ..Self::of("peer_connected") }
            }
            NodeEvent::PeerDisconnected(id) => {
                EventView { peer: Some(id.to_string()), ..Self::of("peer_disconnected") }
            }
            NodeEvent::PeerAdded(id) => EventView { peer: Some(id.to_string()), ..Self::of("peer_added") },
            NodeEvent::PeerRemoved(id) => EventView { peer: Some(id.to_string()), ..Self::of("peer_removed") },
            NodeEvent::RecordStored { key, from } => {
                EventView { peer: Some(from.to_string()), key: Some(key.to_string()), ..Self::of("record_stored") }
            }
            NodeEvent::PeerMisbehaved { from, reason } => EventView {
                peer: Some(from.to_string()),
                detail: Some((*reason).to_string()),
                ..Self::of("peer_misbehaved")
            },
            NodeEvent::DialFailed { peer, reason } => {
                EventView { peer: Some(peer.to_string()), detail: Some(reason.clone()), ..Self::of("dial_failed") }
            }
            other => EventView { detail: Some(format!("{other:?}")), ..Self::of("other") },
        }
    }

    /// Records evicted from storage to stay within the budget or the browser's quota.
    pub fn evicted(total: u64) -> Self {
        EventView {
            detail: Some(format!("storage full: {total} records evicted so far")),
            ..Self::of("storage_evicted")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dht_core::Address;

    fn contact(n: u8, addrs: &[&str]) -> Contact {
        Contact { id: NodeId::from_public_key(&[n; 32]), addrs: addrs.iter().map(|a| Address::new(*a)).collect() }
    }

    #[test]
    fn kinds_follow_the_addresses() {
        assert_eq!(peer_kind(&contact(1, &["tcp:127.0.0.1:4000", "rtc:ws://x/ws"])), "native");
        assert_eq!(peer_kind(&contact(2, &["rtc:ws://x/ws"])), "browser");
        assert_eq!(peer_kind(&contact(3, &[])), "browser");
    }

    #[test]
    fn views_place_peers_in_their_buckets() {
        let own = NodeId::from_public_key(&[0; 32]);
        let peers = [contact(1, &["tcp:127.0.0.1:1"]), contact(2, &["rtc:ws://x/ws"])];
        for p in &peers {
            let v = PeerView::new(&own, p, |_| None);
            assert_eq!(v.path, None);
            assert_eq!(v.bucket, own.distance(&p.id).bucket_index());
            assert_eq!(v.id.len(), 64);
            assert!(v.id.starts_with(&v.short));
        }
        let b = peers[0].id.distance(&own).bucket_index().unwrap();
        let direct = PathView {
            kind: "host",
            local: "host",
            remote: "host",
            protocol: "udp".into(),
            setup_ms: 12,
            signaled_ms: 4,
            dialed: false,
            relays: 1,
        };
        let view = table_view(&own, &[(b, vec![peers[0].clone()])], |_| Some(direct.clone()));
        assert_eq!(view[0].peers[0].path, Some(direct));
        assert_eq!(view.len(), 1);
        assert_eq!(view[0].peers[0].kind, "native");
    }

    #[test]
    fn events_name_their_kind() {
        let c = contact(1, &["rtc:ws://x/ws"]);
        let v = EventView::from_event(&NodeEvent::PeerConnected(c.clone()));
        assert_eq!((v.kind, v.peer_kind), ("peer_connected", Some("browser")));
        let v = EventView::from_event(&NodeEvent::RecordStored { key: dht_core::Key::from_name(b"k"), from: c.id });
        assert_eq!(v.kind, "record_stored");
        assert!(v.key.is_some());
        assert_eq!(EventView::evicted(3).kind, "storage_evicted");
    }
}
