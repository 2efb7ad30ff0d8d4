//! # transport-webrtc
//!
//! A [`dht_driver::Transport`] over WebRTC data channels, for nodes that cannot listen on TCP (browser
//! tabs) and the native nodes that talk to them.
//!
//! - **Signaling**: a node registers with a signaling server under its node id (proving it holds the key;
//!   the wire protocol is the `signaling-protocol` crate) and exchanges SDP offers and answers with peers
//!   by id ([`Signal`]). ICE is not trickled: each SDP carries its candidates, so one offer and one answer
//!   set a link up.
//! - **Channel**: one ordered, reliable data channel per link, created by the dialer and announced to the
//!   answerer. Bytes go out in messages of at most [`MAX_CHUNK`] bytes (the size every browser takes); the
//!   link's stream codec reassembles larger messages. Sends wait for the channel's buffered amount to
//!   drain below a limit, so nothing queues without bound.
//! - **Authentication**: the same Noise XX handshake as on TCP runs inside the channel, with both SDPs' DTLS
//!   fingerprints in its prologue. The node id is checked end to end: a signaling server that lies about who
//!   is who, or swaps DTLS certificates, only gets links that fail.
//!
//! Addresses look like `rtc:ws://127.0.0.1:8080/ws`: "reachable through this signaling server". A transport
//! dials only peers registered on its own server.
//!
//! The signaling client and the transport logic are shared; a backend supplies the peer connection and the
//! WebSocket: `native` (webrtc-rs and async-tungstenite on tokio) or, on wasm32, `web` (the browser's
//! `RTCPeerConnection` and `WebSocket` through web-sys, tasks on `wasm-bindgen-futures`).
#![warn(missing_docs)]

use dht_core::Address;
use dht_driver::SharedClock;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[cfg(not(target_arch = "wasm32"))]
#[path = "native.rs"]
mod backend;
#[cfg(target_arch = "wasm32")]
#[path = "web.rs"]
mod backend;
mod signaling;
mod transport;

#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
pub use backend::channel_throughput;
#[cfg(not(target_arch = "wasm32"))]
pub use backend::{fetch_ice_servers, read_pem_certificates};
pub use signaling::SignalingClient;
pub use signaling_protocol::PeerInfo;
pub use transport::{Candidate, LinkPath, PathBook, WebRtcTransport};

/// The few runtime services the shared code needs, the same on both targets (time comes from
/// [`RtcConfig::clock`]).
mod rt {
    pub(crate) use crate::backend::spawn;

    /// A random session id: it only pairs an answer with its offer (the handshake decides who is who).
    pub(crate) fn random_u64() -> Result<u64, String> {
        getrandom::u64().map_err(|e| format!("randomness: {e}"))
    }
}

/// Largest data-channel message we send, in bytes (the size all browsers accept).
pub const MAX_CHUNK: usize = 16 * 1024;

/// Address scheme of WebRTC contacts.
pub const SCHEME: &str = "rtc:";

/// The address of nodes reachable through the signaling server at `url`.
pub fn address(url: &str) -> Address {
    Address::new(format!("{SCHEME}{url}"))
}

/// A STUN or TURN server, as `RTCPeerConnection` takes it (`urls` a string or an array of them).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs of one server.
    #[serde(deserialize_with = "one_or_many")]
    pub urls: Vec<String>,
    /// TURN username (e.g. the `expiry:id` of TURN REST credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// ICE servers a node takes at most, URLs per server at most, and the longest text in them.
pub const MAX_ICE_SERVERS: usize = 8;
/// See [`MAX_ICE_SERVERS`].
pub const MAX_ICE_URLS: usize = 8;
/// See [`MAX_ICE_SERVERS`].
pub const MAX_ICE_TEXT: usize = 512;

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Urls::deserialize(d)? {
        Urls::One(u) => vec![u],
        Urls::Many(us) => us,
    })
}

impl IceServer {
    /// A server at `url` without credentials (STUN, or TURN that needs none).
    pub fn url(url: impl Into<String>) -> Self {
        IceServer { urls: vec![url.into()], ..IceServer::default() }
    }

    /// Checks a list given by a page or a server: at most [`MAX_ICE_SERVERS`] entries of 1 to
    /// [`MAX_ICE_URLS`] `stun:`, `stuns:`, `turn:` or `turns:` URLs, no text over [`MAX_ICE_TEXT`] bytes.
    pub fn check_list(list: &[IceServer]) -> Result<(), String> {
        if list.len() > MAX_ICE_SERVERS {
            return Err(format!("holds more than {MAX_ICE_SERVERS} servers"));
        }
        for s in list {
            let texts = s.urls.iter().chain(&s.username).chain(&s.credential);
            if s.urls.is_empty() || s.urls.len() > MAX_ICE_URLS || texts.into_iter().any(|t| t.len() > MAX_ICE_TEXT) {
                return Err(format!("entries need 1 to {MAX_ICE_URLS} urls, each text at most {MAX_ICE_TEXT} bytes"));
            }
            let scheme = |u: &String| ["stun:", "stuns:", "turn:", "turns:"].iter().any(|p| u.starts_with(p));
            if let Some(u) = s.urls.iter().find(|u| !scheme(u)) {
                return Err(format!("has {u:?}, not a stun:/turn: URL"));
            }
        }
        Ok(())
    }

    /// The list in a signaling server's `GET /config` document (`{"iceServers": [...]}`), checked.
    pub fn from_config(json: &str) -> Result<Vec<IceServer>, String> {
        #[derive(Deserialize)]
        struct Config {
            #[serde(rename = "iceServers")]
            ice_servers: Vec<IceServer>,
        }
        let config: Config = serde_json::from_str(json).map_err(|e| format!("not an ICE configuration: {e}"))?;
        Self::check_list(&config.ice_servers)?;
        Ok(config.ice_servers)
    }
}

/// Options of a WebRTC transport.
#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// The signaling server, e.g. `ws://127.0.0.1:8080/ws` or `wss://signal.example.org/ws`.
    pub signaling_url: String,
    /// Other signaling servers, tried in order when `signaling_url` does not answer at start, and in turn
    /// when the one the node registered on goes away (at most [`MAX_SIGNALING_SERVERS`] in all). The node's
    /// `rtc:` address names the one it is registered on ([`WebRtcTransport::local_address`]).
    pub more_signaling: Vec<String>,
    /// Certificates (DER) trusted for a `wss://` signaling server besides the system's roots, e.g. a
    /// private CA. Native only: a browser checks certificates against its own trust.
    pub tls_roots: Vec<Vec<u8>>,
    /// ICE servers (STUN, TURN with credentials) for real deployments; empty on loopback and in tests.
    pub ice_servers: Vec<IceServer>,
    /// Local UDP addresses to gather host candidates on (native only), e.g. `127.0.0.1:0`. Empty lets
    /// the library pick every interface.
    pub udp_addrs: Vec<String>,
    /// From sending an offer to an open, authenticated link.
    pub connect_timeout: Duration,
    /// Handshake and message limits of the link inside the channel.
    pub link: dht_link::LinkConfig,
    /// Bytes a data channel may hold unsent before sends wait.
    pub send_buffer_limit: usize,
    /// Messages queued between a link and the driver, each way.
    pub queue: usize,
    /// WebRTC links being set up at once (offers we answer beyond it are refused).
    pub max_pending: usize,
    /// Offers from one peer answered at once (beyond, refused): one peer cannot take every setup slot.
    pub max_pending_per_peer: usize,
    /// Peer connections this transport may make in its lifetime, dialed and answered (`None`: no limit).
    /// Browsers cap a page's connections over its life (Chromium at about 500): once 90 % of the budget is
    /// spent, offers from others are refused, and the rest is kept for our own dials; past it, dials fail
    /// and the node keeps routing through the links it has.
    pub connection_budget: Option<u32>,
    /// How long a link the driver let go of (replaced, or closed to make room) goes on delivering what
    /// arrives before its connection closes: answers to requests sent on it are still on their way.
    pub linger: Duration,
    /// Messages a peer may send a second on one link, after a burst of `peer_burst` (0 = no limit). Past it
    /// the link stops reading until the budget refills, so one peer cannot take all of the node's time.
    pub peer_rate: u32,
    /// Messages a peer may send at once before `peer_rate` applies.
    pub peer_burst: u32,
    /// Where every deadline, linger and the budget's refill take their time (give the node's driver the
    /// same).
    pub clock: SharedClock,
}

impl RtcConfig {
    /// Loopback-friendly defaults for `signaling_url`: no ICE servers, host candidates on 127.0.0.1.
    pub fn loopback(signaling_url: impl Into<String>) -> Self {
        RtcConfig {
            signaling_url: signaling_url.into(),
            tls_roots: Vec::new(),
            more_signaling: Vec::new(),
            ice_servers: Vec::new(),
            udp_addrs: vec!["127.0.0.1:0".into()],
            connect_timeout: Duration::from_secs(15),
            link: dht_link::LinkConfig::default(),
            send_buffer_limit: 1 << 20,
            queue: 64,
            max_pending: 64,
            max_pending_per_peer: 2,
            connection_budget: None,
            linger: Duration::from_secs(1),
            peer_rate: 1000,
            peer_burst: 2000,
            clock: SharedClock::default(),
        }
    }

    /// What the link loop needs of these settings.
    pub(crate) fn link_io(&self) -> dht_link_io::Config {
        dht_link_io::Config {
            queue: self.queue,
            linger: self.linger,
            peer_rate: self.peer_rate,
            peer_burst: self.peer_burst,
        }
    }
}

/// What two peers tell each other through the signaling server (the `data` of a signal, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Signal {
    /// A new link: the dialer's SDP offer (its candidates follow as [`Signal::Candidate`]s).
    Offer {
        /// Chosen by the dialer; the answer carries it back.
        session: u64,
        /// The SDP.
        sdp: String,
    },
    /// The answer to an offer.
    Answer {
        /// The offer's session.
        session: u64,
        /// The SDP.
        sdp: String,
    },
    /// The offer was refused (e.g. too many links being set up).
    Reject {
        /// The offer's session.
        session: u64,
        /// Why.
        reason: String,
    },
    /// One ICE candidate of either side, sent as soon as it is gathered (trickle ICE).
    Candidate {
        /// The offer's session.
        session: u64,
        /// The candidate.
        candidate: IceCandidate,
    },
}

/// Signaling servers a transport tries at most.
pub const MAX_SIGNALING_SERVERS: usize = 8;

/// Candidates one side of a link setup sends at most; more are dropped, by the sender and by the receiver.
pub const MAX_CANDIDATES: usize = 16;

/// One ICE candidate, as `RTCIceCandidateInit` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceCandidate {
    /// The `candidate:` line.
    pub candidate: String,
    /// The media section it belongs to, by id.
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// The media section it belongs to, by index.
    #[serde(default)]
    pub sdp_m_line_index: Option<u16>,
}

impl IceCandidate {
    /// Plausible as a peer's candidate: a `candidate:` line of at most 512 bytes, a short media id.
    pub fn is_plausible(&self) -> bool {
        let line = self.candidate.strip_prefix("a=").unwrap_or(&self.candidate);
        line.starts_with("candidate:")
            && self.candidate.len() <= 512
            && self.sdp_mid.as_ref().is_none_or(|m| m.len() <= 64)
    }
}

/// The `a=fingerprint:` values of an SDP, sorted (both sides compute the same prologue from the same SDPs).
pub fn fingerprints(sdp: &str) -> Vec<String> {
    let mut out: Vec<String> = sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=fingerprint:"))
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The Noise prologue of a link set up by `offer` and `answer`: both sides' DTLS fingerprints, so a
/// signaling server that swapped certificates (to sit in the middle of DTLS) breaks the handshake.
pub fn prologue(offer_sdp: &str, answer_sdp: &str) -> Vec<u8> {
    let mut p = b"webdht/rtc/1".to_vec();
    for f in fingerprints(offer_sdp).into_iter().chain(std::iter::once("|".into())).chain(fingerprints(answer_sdp)) {
        p.push(b'\n');
        p.extend_from_slice(f.as_bytes());
    }
    p
}

#[cfg(test)]
mod tests {
    #[test]
    fn trickled_candidates_are_checked() {
        use super::{IceCandidate, Signal};
        let c = |line: &str, mid: Option<&str>| IceCandidate {
            candidate: line.into(),
            sdp_mid: mid.map(Into::into),
            sdp_m_line_index: Some(0),
        };
        let host = "candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host";
        assert!(c(host, Some("0")).is_plausible());
        assert!(c(&format!("a={host}"), None).is_plausible());
        assert!(!c("typ relay", Some("0")).is_plausible(), "not a candidate line");
        assert!(!c(&format!("{host} {}", "x".repeat(512)), Some("0")).is_plausible(), "too long");
        assert!(!c(host, Some(&"m".repeat(65))).is_plausible(), "media id too long");
        // On the wire: a signal of its own, unknown fields refused.
        let signal = Signal::Candidate { session: 7, candidate: c(host, Some("0")) };
        let json = serde_json::to_string(&signal).unwrap();
        assert_eq!(serde_json::from_str::<Signal>(&json).unwrap(), signal);
        let extra = json.replace("\"sdp_mid\"", "\"evil\":1,\"sdp_mid\"");
        assert!(serde_json::from_str::<Signal>(&extra).is_err(), "{extra}");
    }

    #[test]
    fn ice_configurations_are_checked() {
        use super::IceServer;
        let doc = r#"{"iceServers":[{"urls":"stun:192.0.2.1:3478"},
            {"urls":["turn:192.0.2.1:3478?transport=udp"],"username":"9:x","credential":"c"}]}"#;
        let servers = IceServer::from_config(doc).unwrap();
        assert_eq!(servers[0], IceServer::url("stun:192.0.2.1:3478"));
        assert_eq!(servers[1].username.as_deref(), Some("9:x"));
        let bad = |doc: &str| IceServer::from_config(doc).unwrap_err();
        assert!(bad(r#"{"iceServers":[{"urls":"http://x"}]}"#).contains("not a stun:/turn: URL"));
        assert!(bad(r#"{"iceServers":[{"urls":[]}]}"#).contains("1 to 8 urls"));
        let many = format!(r#"{{"iceServers":[{}]}}"#, [r#"{"urls":"stun:x"}"#; 9].join(","));
        assert!(bad(&many).contains("more than 8"));
        let long = format!(r#"{{"iceServers":[{{"urls":"stun:x","username":"{}"}}]}}"#, "u".repeat(513));
        assert!(bad(&long).contains("at most 512 bytes"));
        assert!(bad("<html>").contains("not an ICE configuration"));
    }

    use super::*;

    const OFFER: &str = "v=0\r\na=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\n";
    const ANSWER: &str = "v=0\r\na=fingerprint:sha-256 12:34\r\n";

    #[test]
    fn prologue_binds_both_fingerprints_in_order() {
        assert_eq!(fingerprints(OFFER), vec!["sha-256 ab:cd".to_string()]);
        let p = prologue(OFFER, ANSWER);
        assert_eq!(p, b"webdht/rtc/1\nsha-256 ab:cd\n|\nsha-256 12:34".to_vec());
        assert_ne!(p, prologue(ANSWER, OFFER));
        assert_ne!(p, prologue(OFFER, "v=0\r\na=fingerprint:sha-256 12:35\r\n"));
    }

    #[test]
    fn signals_round_trip_and_reject_junk() {
        for s in [
            Signal::Offer { session: 7, sdp: OFFER.into() },
            Signal::Answer { session: 7, sdp: ANSWER.into() },
            Signal::Reject { session: 7, reason: "busy".into() },
        ] {
            let text = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Signal>(&text).unwrap(), s);
        }
        for junk in ["", "{}", "{\"kind\":\"offer\"}", "{\"kind\":\"offer\",\"session\":-1,\"sdp\":\"\"}", "null"] {
            assert!(serde_json::from_str::<Signal>(junk).is_err(), "{junk}");
        }
    }

    use dht_core::{Message, NodeId};
    use dht_driver::{Clock, PeerLink};
    use dht_link::Link;
    use dht_link_io::ChannelPipe;
    use futures::channel::{mpsc, oneshot};
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;
    use futures::{SinkExt, StreamExt};

    /// Runs a link over `pipe` on `pool` as the transport does (the system clock); its `PeerLink` once open.
    fn spawn_link(
        pool: &LocalPool,
        pipe: ChannelPipe,
        link: Link,
        config: dht_link_io::Config,
    ) -> oneshot::Receiver<PeerLink> {
        let (ready, opened) = oneshot::channel();
        let clock = SharedClock::default();
        let task = async move {
            let Ok(open) = dht_link_io::handshake(pipe, link, &clock).await else { return };
            let (peer, carry) = open.start(config, clock);
            if ready.send(peer).is_ok() {
                let _ = carry.await;
            }
        };
        pool.spawner().spawn_local(task).unwrap();
        opened
    }

    /// Two unopened links between fresh identities.
    fn two_links() -> (Link, Link, [NodeId; 2]) {
        use dht_link::{Identity, LinkConfig};
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let (cfg, now) = (LinkConfig::default(), SharedClock::default().now());
        let la = Link::initiator(&a, Some(b.node_id()), b"p", vec![], &cfg, now).unwrap();
        let lb = Link::responder(&b, b"p", vec![], &cfg, now).unwrap();
        (la, lb, [a.node_id(), b.node_id()])
    }

    /// Two links over a pair of in-memory pipes with small queues, open, on a local pool.
    fn linked_pair(linger: Duration) -> (LocalPool, PeerLink, PeerLink, [NodeId; 2]) {
        linked_pair_with(linger, 0, 1)
    }

    fn linked_pair_with(
        linger: Duration,
        peer_rate: u32,
        peer_burst: u32,
    ) -> (LocalPool, PeerLink, PeerLink, [NodeId; 2]) {
        let (la, lb, ids) = two_links();
        let (a_out, b_inc) = mpsc::channel(4);
        let (b_out, a_inc) = mpsc::channel(4);
        let config = dht_link_io::Config { queue: 4, linger, peer_rate, peer_burst };
        let mut pool = LocalPool::new();
        let wa = spawn_link(&pool, ChannelPipe::new(a_out, a_inc, MAX_CHUNK), la, config);
        let wb = spawn_link(&pool, ChannelPipe::new(b_out, b_inc, MAX_CHUNK), lb, config);
        let (pa, pb) = pool.run_until(async { (wa.await.unwrap(), wb.await.unwrap()) });
        (pool, pa, pb, ids)
    }

    /// The handshake and a message larger than many chunks go through.
    #[test]
    fn links_run_over_chunked_pipes() {
        let (mut pool, mut pa, mut pb, [a, b]) = linked_pair(Duration::from_secs(1));
        assert_eq!(pa.remote.id, b);
        assert_eq!(pb.remote.id, a);
        let record = dht_core::Record::unchecked(dht_core::Key::from_bytes([1; 32]), vec![7; 100_000]);
        let msg = Message::Request {
            id: dht_core::RequestId(9),
            body: dht_core::Request::Store { record: Box::new(record), ttl_secs: 60, cas: None },
        };
        let got = pool.run_until(async {
            pa.tx.send(msg.clone()).await.unwrap();
            pb.rx.next().await.unwrap()
        });
        assert_eq!(got, msg);
    }

    /// Messages queued together share chunks: 8 messages of 20 KB go out in 10 chunks, all full but the
    /// last, instead of a full chunk and a ~4 KB one each.
    #[test]
    fn queued_messages_share_chunks() {
        let (la, lb, _) = two_links();
        let (a_out, mut tap) = mpsc::channel::<Vec<u8>>(64);
        let (mut tap_out, b_inc) = mpsc::channel(64);
        let (b_out, a_inc) = mpsc::channel(64);
        let t = Duration::from_secs(5);
        let config = dht_link_io::Config { queue: 16, linger: t, peer_rate: 0, peer_burst: 1 };
        let mut pool = LocalPool::new();
        let wa = spawn_link(&pool, ChannelPipe::new(a_out, a_inc, MAX_CHUNK), la, config);
        let wb = spawn_link(&pool, ChannelPipe::new(b_out, b_inc, MAX_CHUNK), lb, config);
        let sp = pool.spawner();
        let sizes = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = sizes.clone();
        sp.spawn_local(async move {
            while let Some(chunk) = tap.next().await {
                seen.borrow_mut().push(chunk.len());
                if tap_out.send(chunk).await.is_err() {
                    break;
                }
            }
        })
        .unwrap();
        let (mut pa, mut pb) = pool.run_until(async { (wa.await.unwrap(), wb.await.unwrap()) });
        let handshake_chunks = sizes.borrow().len();
        let msgs: Vec<Message> = (0..8u8)
            .map(|i| {
                let record = dht_core::Record::unchecked(dht_core::Key::from_bytes([i; 32]), vec![i; 20_000]);
                Message::Request {
                    id: dht_core::RequestId(i.into()),
                    body: dht_core::Request::Store { record: Box::new(record), ttl_secs: 60, cas: None },
                }
            })
            .collect();
        let got = pool.run_until(async {
            for m in &msgs {
                pa.tx.send(m.clone()).await.unwrap();
            }
            let mut got = Vec::new();
            while got.len() < msgs.len() {
                got.push(pb.rx.next().await.unwrap());
            }
            got
        });
        assert_eq!(got, msgs);
        let data: Vec<usize> = sizes.borrow()[handshake_chunks..].to_vec();
        let total: usize = data.iter().sum();
        assert_eq!(data.len(), total.div_ceil(MAX_CHUNK), "chunks {data:?}");
        assert!(data[..data.len() - 1].iter().all(|&n| n == MAX_CHUNK), "all full but the last: {data:?}");
    }

    /// A link the driver let go of right after a request still delivers the answer (and, without lingering,
    /// loses it: the check is not vacuous).
    #[test]
    fn answers_still_arrive_on_a_link_let_go_of() {
        for (linger, kept) in [(Duration::from_secs(5), true), (Duration::ZERO, false)] {
            let (mut pool, mut pa, mut pb, _) = linked_pair(linger);
            let got = pool.run_until(async {
                let request = Message::Request { id: dht_core::RequestId(1), body: dht_core::Request::Ping };
                pa.tx.send(request).await.unwrap();
                drop(pa.tx);
                assert!(pb.rx.next().await.is_some());
                futures_timer::Delay::new(Duration::from_millis(50)).await;
                let answer = Message::Response { id: dht_core::RequestId(1), body: dht_core::Response::Pong };
                let _ = pb.tx.send(answer).await;
                pa.rx.next().await
            });
            assert_eq!(got.is_some(), kept, "linger {linger:?}: {got:?}");
        }
    }

    /// Past its burst, a peer's messages are read at the budget's rate, none dropped.
    #[test]
    fn a_peer_over_its_budget_is_read_at_the_budgets_rate() {
        let (mut pool, mut pa, mut pb, _) = linked_pair_with(Duration::from_secs(1), 1000, 100);
        let t0 = std::time::Instant::now();
        let got = pool.run_until(async {
            let send = async {
                for i in 0..1000 {
                    let ping = Message::Request { id: dht_core::RequestId(i), body: dht_core::Request::Ping };
                    pa.tx.send(ping).await.unwrap();
                }
            };
            let receive = async {
                let mut got = 0;
                while got < 1000 && pb.rx.next().await.is_some() {
                    got += 1;
                }
                got
            };
            futures::join!(send, receive).1
        });
        let took = t0.elapsed();
        assert_eq!(got, 1000);
        assert!(took >= Duration::from_millis(600), "900 messages over the burst at 1,000/s took {took:?}");
    }
}
