//! One WebRTC link through the whole stack (signaling, data channel, Noise, codec, driver-facing queues)
//! on loopback: link setup time and one-way throughput, next to one bare data channel (webrtc-rs with the
//! transport's chunking, nothing above it) in the same run.
//!
//! `cargo run --release -p transport-webrtc --example link_bench [-- MEGABYTES [ROUNDS]]`; the last line is
//! one JSON object. Throughput moves ±10 % or more from one transfer to the next on this machine, so the
//! bare channel and the stack take turns for ROUNDS rounds (default 5) and the medians are reported, the
//! ratio as the median of each round's ratio. Bounded: ten link setups and 2 × ROUNDS transfers of a few tens
//! of megabytes.

#[path = "../tests/common/mod.rs"]
mod common;

use dht_core::{Contact, Key, Message, Record, Request, RequestId};
use dht_driver::{PeerLink, Transport};
use dht_link::Identity;
use futures::{SinkExt, StreamExt};
use std::time::Instant;
use transport_webrtc::{RtcConfig, WebRtcTransport};

const VALUE: usize = 32 * 1024;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mb: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32).clamp(1, 256);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5).clamp(1, 20);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let (setup_ms, mut la, mut lb, _transports) = links().await;
        let config = RtcConfig::loopback("ws://unused");
        let bare = |burst| transport_webrtc::channel_throughput(&config, mb, burst);
        // Chunks queued all at once, not one per turn: webrtc-rs's SCTP used to crawl at ~5 MB/s on this.
        let burst = bare(true).await.expect("a bare channel");
        let (mut raw, mut stack, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let r = bare(false).await.expect("a bare channel");
            let s = through_stack(&mut la, &mut lb, mb).await;
            raw.push(r);
            stack.push(s);
            ratio.push(s / r);
        }
        let p50 = median(setup_ms.clone());
        let max = setup_ms.iter().copied().fold(0.0, f64::max);
        let (stack_m, raw_m, ratio_m) = (median(stack.clone()), median(raw.clone()), median(ratio.clone()));
        let round = |v: &[f64]| v.iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>();
        println!(
            "link setup (offer sent → handshake done), {} links: p50 {p50:.0} ms, max {max:.0} ms",
            setup_ms.len()
        );
        println!(
            "one link, whole stack: median {stack_m:.1} MB/s one way ({mb} MiB in 32 KiB records; {:?})",
            round(&stack)
        );
        println!("one bare data channel: median {raw_m:.1} MB/s one way ({:?})", round(&raw));
        println!("whole stack / bare, median of {rounds} rounds: {ratio_m:.2} ({:?})", round(&ratio));
        println!("one bare data channel, chunks queued in a burst: {burst:.1} MB/s");
        println!(
            "{}",
            serde_json::json!({
                "link_setup_ms_p50": p50, "link_setup_ms_max": max, "stack_mb_s": stack_m, "raw_mb_s": raw_m,
                "stack_raw_ratio": ratio_m, "raw_burst_mb_s": burst, "megabytes": mb, "rounds": rounds,
            })
        );
    });
}

/// Two transports through an in-process signaling relay, ten links set up one after another; returns the
/// setup times, the two ends of the last link, and the transports (kept while the link is used).
async fn links() -> (Vec<f64>, PeerLink, PeerLink, (WebRtcTransport, WebRtcTransport)) {
    let url = common::relay().await;
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let ta = WebRtcTransport::start(a, vec![], RtcConfig::loopback(&url)).await.unwrap();
    let mut tb = WebRtcTransport::start(b.clone(), vec![], RtcConfig::loopback(&url)).await.unwrap();
    let mut incoming = tb.incoming();
    let cb = Contact { id: b.node_id(), addrs: tb.local_addrs().to_vec() };
    let mut setups = Vec::new();
    let mut links = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let la = ta.dial(&cb).await.expect("dial");
        setups.push(t.elapsed().as_secs_f64() * 1000.0);
        let lb = incoming.next().await.expect("accepted");
        links.push((la, lb));
    }
    let (la, lb) = links.pop().unwrap();
    drop(links);
    (setups, la, lb, (ta, tb))
}

/// `mb` MiB of 32 KiB store requests from `la` to `lb`; MB/s one way.
async fn through_stack(la: &mut PeerLink, lb: &mut PeerLink, mb: usize) -> f64 {
    let total = mb * 1024 * 1024 / VALUE;
    let t = Instant::now();
    let send = async {
        for i in 0..total {
            let record = Record::unchecked(Key::from_bytes([i as u8; 32]), vec![i as u8; VALUE]);
            let msg = Message::Request {
                id: RequestId(i as u64),
                body: Request::Store { record: Box::new(record), ttl_secs: 60, cas: None },
            };
            la.tx.send(msg).await.expect("link open");
        }
    };
    let receive = async {
        let mut got = 0usize;
        while got < total {
            match lb.rx.next().await {
                Some(_) => got += 1,
                None => break,
            }
        }
        got
    };
    let ((), got) = futures::join!(send, receive);
    assert_eq!(got, total, "every message arrived");
    (total * VALUE) as f64 / t.elapsed().as_secs_f64() / 1e6
}
