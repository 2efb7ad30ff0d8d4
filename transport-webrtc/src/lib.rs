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

use dht_core::{Address, Contact, Instant, Message};
use dht_driver::PeerLink;
use dht_link::{Link, LinkError};
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, SinkExt, StreamExt};
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
pub use signaling::SignalingClient;
pub use signaling_protocol::PeerInfo;
pub use transport::WebRtcTransport;

/// The few runtime services the shared code needs, the same on both targets.
mod rt {
    use std::future::Future;
    use std::time::Duration;

    pub(crate) use crate::backend::spawn;

    /// Milliseconds since the Unix epoch, as the links' deadlines use.
    pub(crate) fn now_ms() -> dht_core::Instant {
        dht_driver::Clock::now(&dht_driver::SystemClock)
    }

    /// A random session id: it only pairs an answer with its offer (the handshake decides who is who).
    pub(crate) fn random_u64() -> Result<u64, String> {
        getrandom::u64().map_err(|e| format!("randomness: {e}"))
    }

    pub(crate) async fn sleep(d: Duration) {
        futures_timer::Delay::new(d).await
    }

    /// `f`, or `Err(())` once `d` has passed.
    pub(crate) async fn timeout<F: Future>(d: Duration, f: F) -> Result<F::Output, ()> {
        use futures::FutureExt;
        futures::select! {
            out = f.fuse() => Ok(out),
            _ = sleep(d).fuse() => Err(()),
        }
    }
}

/// Largest data-channel message we send, in bytes (the size all browsers accept).
pub const MAX_CHUNK: usize = 16 * 1024;

/// Messages ready from the driver that a link packs into shared chunks before it reads from its peer again.
const COALESCE: usize = 32;

/// Address scheme of WebRTC contacts.
pub const SCHEME: &str = "rtc:";

/// The address of nodes reachable through the signaling server at `url`.
pub fn address(url: &str) -> Address {
    Address(format!("{SCHEME}{url}"))
}

/// Options of a WebRTC transport.
#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// The signaling server, e.g. `ws://127.0.0.1:8080/ws`.
    pub signaling_url: String,
    /// ICE servers (`stun:`/`turn:` URLs) for real deployments; empty on loopback and in tests.
    pub ice_servers: Vec<String>,
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
    /// How long a link the driver let go of (replaced, or closed to make room) goes on delivering what
    /// arrives before its connection closes: answers to requests sent on it are still on their way.
    pub linger: Duration,
    /// Messages a peer may send a second on one link, after a burst of `peer_burst` (0 = no limit). Past it
    /// the link stops reading until the budget refills, so one peer cannot take all of the node's time.
    pub peer_rate: u32,
    /// Messages a peer may send at once before `peer_rate` applies.
    pub peer_burst: u32,
}

impl RtcConfig {
    /// Loopback-friendly defaults for `signaling_url`: no ICE servers, host candidates on 127.0.0.1.
    pub fn loopback(signaling_url: impl Into<String>) -> Self {
        RtcConfig {
            signaling_url: signaling_url.into(),
            ice_servers: Vec::new(),
            udp_addrs: vec!["127.0.0.1:0".into()],
            connect_timeout: Duration::from_secs(15),
            link: dht_link::LinkConfig::default(),
            send_buffer_limit: 1 << 20,
            queue: 64,
            max_pending: 64,
            linger: Duration::from_secs(1),
            peer_rate: 1000,
            peer_burst: 2000,
        }
    }
}

/// What two peers tell each other through the signaling server (the `data` of a signal, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Signal {
    /// A new link: the dialer's SDP offer (with its candidates).
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

/// Why a link over a channel ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PipeError {
    #[error("link: {0}")]
    Link(#[from] LinkError),
    #[error("channel closed")]
    Closed,
    #[error("handshake timed out")]
    Timeout,
}

/// A data channel seen as two bounded queues of byte chunks. The backend moves chunks between these and
/// the real channel, waiting when the channel's buffer is full; the link never sees the channel itself.
pub(crate) struct Pipe {
    pub(crate) out: mpsc::Sender<Vec<u8>>,
    pub(crate) inc: mpsc::Receiver<Vec<u8>>,
}

async fn flush(pipe: &mut Pipe, link: &mut Link) -> Result<(), PipeError> {
    flush_above(pipe, link, 0).await
}

/// Writes out what the link holds in chunks while more than `keep` bytes are pending: `keep = MAX_CHUNK - 1`
/// sends full chunks only and leaves a partial tail for the next message to fill.
async fn flush_above(pipe: &mut Pipe, link: &mut Link, keep: usize) -> Result<(), PipeError> {
    while link.pending().len() > keep {
        let n = link.pending().len().min(MAX_CHUNK);
        pipe.out.send(link.pending()[..n].to_vec()).await.map_err(|_| PipeError::Closed)?;
        link.advance(n);
        // Let the task that writes to the channel (and the WebRTC stack under it) run: a queue with room
        // never makes `send` wait, and on a single-threaded executor this loop would starve them.
        yield_now().await;
    }
    Ok(())
}

/// Returns `Pending` once (after asking to be polled again), so other tasks on the executor get a turn.
fn yield_now() -> impl std::future::Future<Output = ()> {
    let mut yielded = false;
    futures::future::poll_fn(move |cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
}

/// Queues `msg` on the link; a message the codec refuses (too large) is dropped with a warning, any other
/// error ends the link.
fn send_one(link: &mut Link, msg: &Message, remote: &Contact) -> Result<(), PipeError> {
    match link.send(msg) {
        Ok(()) => Ok(()),
        Err(LinkError::Codec(e)) => {
            tracing::warn!(peer = %remote.id, "message not sent: {e}");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Delivers what still arrives on a link the driver let go of, for `linger`, then returns (closing it).
async fn drain_then_close(
    pipe: &mut Pipe,
    link: &mut Link,
    to_driver: &mut mpsc::Sender<Message>,
    linger: Duration,
    now: fn() -> Instant,
) -> Result<(), PipeError> {
    let mut deadline = futures_timer::Delay::new(linger).fuse();
    loop {
        futures::select! {
            _ = deadline => return Ok(()),
            chunk = pipe.inc.next() => {
                let Some(chunk) = chunk else { return Ok(()) };
                for msg in link.feed(&chunk, now())? {
                    to_driver.send(msg).await.map_err(|_| PipeError::Closed)?;
                }
            }
        }
    }
}

/// What [`run_link`] needs of the transport's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkParams {
    pub queue: usize,
    pub handshake_timeout: Duration,
    pub linger: Duration,
    pub peer_rate: u32,
    pub peer_burst: u32,
}

impl LinkParams {
    pub(crate) fn of(c: &RtcConfig) -> Self {
        LinkParams {
            queue: c.queue,
            handshake_timeout: c.link.handshake_timeout,
            linger: c.linger,
            peer_rate: c.peer_rate,
            peer_burst: c.peer_burst,
        }
    }
}

/// Runs the handshake, hands the open link to `ready`, then carries messages both ways until either side
/// ends. `now` reads the clock (milliseconds, as the link's deadlines use).
pub(crate) async fn run_link(
    mut pipe: Pipe,
    mut link: Link,
    params: LinkParams,
    now: fn() -> Instant,
    ready: oneshot::Sender<PeerLink>,
) -> Result<(), PipeError> {
    let LinkParams { queue, handshake_timeout, linger, peer_rate, peer_burst } = params;
    let mut early = Vec::new();
    let handshake = async {
        loop {
            flush(&mut pipe, &mut link).await?;
            if link.is_open() {
                return Ok::<(), PipeError>(());
            }
            let Some(chunk) = pipe.inc.next().await else {
                return Err(link.finish().err().map(PipeError::Link).unwrap_or(PipeError::Closed));
            };
            early.extend(link.feed(&chunk, now())?);
        }
    };
    futures::select! {
        r = handshake.fuse() => r?,
        _ = futures_timer::Delay::new(handshake_timeout).fuse() => return Err(PipeError::Timeout),
    }
    let remote: Contact = link.remote().cloned().ok_or(PipeError::Link(LinkError::NotReady))?;
    let (to_link_tx, mut to_link_rx) = mpsc::channel::<Message>(queue);
    let (mut to_driver_tx, to_driver_rx) = mpsc::channel::<Message>(queue);
    if ready.send(PeerLink { remote: remote.clone(), tx: to_link_tx, rx: to_driver_rx }).is_err() {
        return Err(PipeError::Closed);
    }
    let mut budget = dht_driver::MessageBudget::new(peer_rate, peer_burst, now().as_millis());
    let _ = budget.take(early.len(), now().as_millis());
    for msg in early {
        to_driver_tx.send(msg).await.map_err(|_| PipeError::Closed)?;
    }
    loop {
        futures::select! {
            chunk = pipe.inc.next() => {
                let Some(chunk) = chunk else {
                    link.finish()?;
                    return Err(PipeError::Closed);
                };
                let msgs = link.feed(&chunk, now())?;
                let wait = budget.take(msgs.len(), now().as_millis());
                for msg in msgs {
                    // Waiting here is the backpressure: we stop reading while the driver is behind.
                    to_driver_tx.send(msg).await.map_err(|_| PipeError::Closed)?;
                }
                if !wait.is_zero() {
                    // Over the peer's budget: read nothing from it until the budget refills.
                    futures_timer::Delay::new(wait).await;
                }
            }
            out = to_link_rx.next() => {
                let Some(msg) = out else {
                    // The driver let go of this link: keep delivering (answers in flight) for a while, send
                    // nothing more, then close.
                    return drain_then_close(&mut pipe, &mut link, &mut to_driver_tx, linger, now).await;
                };
                send_one(&mut link, &msg, &remote)?;
                // Messages the driver has ready share chunks: a 32 KiB message would otherwise go out as two
                // full chunks and a ~50-byte tail, each a data-channel message of its own. The tail waits
                // only while another message is ready to fill it, and at most `COALESCE` messages are taken
                // in a row so that what arrives from the peer is read in between.
                for _ in 1..COALESCE {
                    flush_above(&mut pipe, &mut link, MAX_CHUNK - 1).await?;
                    match to_link_rx.try_recv() {
                        Ok(msg) => send_one(&mut link, &msg, &remote)?,
                        Err(mpsc::TryRecvError::Closed) => {
                            // The driver let go (the queue now reads as ended, and `select!` skips ended
                            // streams, so this is the only place to see it).
                            flush(&mut pipe, &mut link).await?;
                            return drain_then_close(&mut pipe, &mut link, &mut to_driver_tx, linger, now).await;
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                    }
                }
                flush(&mut pipe, &mut link).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

    /// Milliseconds since the first call (plus one): the links' clock in these tests.
    fn now() -> Instant {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        Instant::from_millis(1 + START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64)
    }

    /// Two links over a pair of in-memory pipes with tiny chunks, open, on a local pool.
    fn linked_pair(linger: Duration) -> (futures::executor::LocalPool, PeerLink, PeerLink, [dht_core::NodeId; 2]) {
        linked_pair_with(linger, 0, 1)
    }

    fn linked_pair_with(
        linger: Duration,
        peer_rate: u32,
        peer_burst: u32,
    ) -> (futures::executor::LocalPool, PeerLink, PeerLink, [dht_core::NodeId; 2]) {
        use dht_link::{Identity, LinkConfig};
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let cfg = LinkConfig::default();
        let la = Link::initiator(&a, Some(b.node_id()), b"p", vec![], &cfg, now()).unwrap();
        let lb = Link::responder(&b, b"p", vec![], &cfg, now()).unwrap();
        let (a_out, b_inc) = mpsc::channel(4);
        let (b_out, a_inc) = mpsc::channel(4);
        let (ra, wa) = oneshot::channel();
        let (rb, wb) = oneshot::channel();
        let t = Duration::from_secs(5);
        let params = LinkParams { queue: 4, handshake_timeout: t, linger, peer_rate, peer_burst };
        let mut pool = futures::executor::LocalPool::new();
        use futures::task::LocalSpawnExt;
        let sp = pool.spawner();
        sp.spawn_local(run_link(Pipe { out: a_out, inc: a_inc }, la, params, now, ra).map(|_| ())).unwrap();
        sp.spawn_local(run_link(Pipe { out: b_out, inc: b_inc }, lb, params, now, rb).map(|_| ())).unwrap();
        let (pa, pb) = pool.run_until(async { (wa.await.unwrap(), wb.await.unwrap()) });
        (pool, pa, pb, [a.node_id(), b.node_id()])
    }

    /// The handshake and a message larger than many chunks go through.
    #[test]
    fn links_run_over_chunked_pipes() {
        let (mut pool, mut pa, mut pb, [a, b]) = linked_pair(Duration::from_secs(1));
        assert_eq!(pa.remote.id, b);
        assert_eq!(pb.remote.id, a);
        let record = dht_core::Record { key: dht_core::Key::from_bytes([1; 32]), value: vec![7; 100_000] };
        let msg =
            Message::Request { id: dht_core::RequestId(9), body: dht_core::Request::Store { record, ttl_secs: 60 } };
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
        use dht_link::{Identity, LinkConfig};
        use futures::task::LocalSpawnExt;
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let cfg = LinkConfig::default();
        let la = Link::initiator(&a, Some(b.node_id()), b"p", vec![], &cfg, now()).unwrap();
        let lb = Link::responder(&b, b"p", vec![], &cfg, now()).unwrap();
        let (a_out, mut tap) = mpsc::channel::<Vec<u8>>(64);
        let (mut tap_out, b_inc) = mpsc::channel(64);
        let (b_out, a_inc) = mpsc::channel(64);
        let (ra, wa) = oneshot::channel();
        let (rb, wb) = oneshot::channel();
        let t = Duration::from_secs(5);
        let params = LinkParams { queue: 16, handshake_timeout: t, linger: t, peer_rate: 0, peer_burst: 1 };
        let mut pool = futures::executor::LocalPool::new();
        let sp = pool.spawner();
        sp.spawn_local(run_link(Pipe { out: a_out, inc: a_inc }, la, params, now, ra).map(|_| ())).unwrap();
        sp.spawn_local(run_link(Pipe { out: b_out, inc: b_inc }, lb, params, now, rb).map(|_| ())).unwrap();
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
                let record = dht_core::Record { key: dht_core::Key::from_bytes([i; 32]), value: vec![i; 20_000] };
                Message::Request {
                    id: dht_core::RequestId(i.into()),
                    body: dht_core::Request::Store { record, ttl_secs: 60 },
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
