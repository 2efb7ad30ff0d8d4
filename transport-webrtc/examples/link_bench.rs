//! One WebRTC link through the whole stack (signaling, data channel, Noise, codec, driver-facing queues)
//! on loopback: link setup time and one-way throughput, next to one bare data channel (webrtc-rs with the
//! transport's chunking, nothing above it) in the same run.
//!
//! `cargo run --release -p transport-webrtc --example link_bench [-- MEGABYTES]`; the last line is one JSON
//! object. Bounded: a few tens of megabytes, ten link setups.

use dht_core::{Contact, Key, Message, Record, Request, RequestId};
use dht_driver::Transport;
use dht_link::Identity;
use futures::{SinkExt, StreamExt};
use signaling_server::server::{Server, ServerConfig};
use std::time::Instant;
use transport_webrtc::{RtcConfig, WebRtcTransport};

const VALUE: usize = 32 * 1024;

fn main() {
    let mb: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(32).clamp(1, 256);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    // The same machine, the same run: one bare channel (no signaling, Noise, codec or driver queues), first,
    // so nothing left over from the stack's links shares the thread with it.
    let raw = local
        .block_on(&rt, transport_webrtc::channel_throughput(&RtcConfig::loopback("ws://unused"), mb))
        .expect("a bare channel");
    let (setup_ms, stack) = local.block_on(&rt, stack(mb));
    let mut sorted = setup_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let p50 = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    println!("link setup (offer sent → handshake done), {} links: p50 {p50:.0} ms, max {max:.0} ms", sorted.len());
    println!("one link, whole stack: {stack:.1} MB/s one way ({mb} MiB in 32 KiB records)");
    println!("one bare data channel: {raw:.1} MB/s one way; whole stack / bare = {:.2}", stack / raw);
    println!(
        "{}",
        serde_json::json!({
            "link_setup_ms_p50": p50, "link_setup_ms_max": max, "stack_mb_s": stack, "raw_mb_s": raw,
            "stack_raw_ratio": stack / raw, "megabytes": mb,
        })
    );
}

async fn stack(mb: usize) -> (Vec<f64>, f64) {
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), ServerConfig::default()).await.unwrap();
    let url = format!("ws://{}/ws", server.local_addr().unwrap());
    tokio::spawn(server.run(std::future::pending()));
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
    let (mut la, mut lb) = links.pop().unwrap();
    drop(links);
    let total = mb * 1024 * 1024 / VALUE;
    let receiver = tokio::task::spawn_local(async move {
        let mut got = 0usize;
        while got < total {
            match lb.rx.next().await {
                Some(_) => got += 1,
                None => break,
            }
        }
        got
    });
    let t = Instant::now();
    for i in 0..total {
        let record = Record { key: Key::from_bytes([i as u8; 32]), value: vec![i as u8; VALUE] };
        let msg = Message::Request { id: RequestId(i as u64), body: Request::Store { record, ttl_secs: 60 } };
        la.tx.send(msg).await.expect("link open");
    }
    let got = receiver.await.unwrap();
    assert_eq!(got, total, "every message arrived");
    (setups, (total * VALUE) as f64 / t.elapsed().as_secs_f64() / 1e6)
}
