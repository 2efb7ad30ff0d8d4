//! One WebRTC link through the whole stack (signaling, data channel, Noise, codec, driver-facing queues)
//! against a raw webrtc-rs data channel, on loopback, in the same run.
//!
//! `cargo run --release -p transport-webrtc --example link_bench [-- MEGABYTES]`; the last line is one JSON
//! object. Bounded: a few tens of megabytes each way, ten link setups.

use dht_core::{Contact, Key, Message, Record, Request, RequestId};
use dht_driver::Transport;
use dht_link::Identity;
use futures::{SinkExt, StreamExt};
use signaling_server::server::{Server, ServerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport_webrtc::{RtcConfig, WebRtcTransport};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState, SettingEngineBuilder,
};

const VALUE: usize = 32 * 1024;

fn main() {
    let mb: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(32).clamp(1, 256);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let (setup_ms, stack) = local.block_on(&rt, stack(mb));
    let raw = rt.block_on(raw(mb));
    let mut sorted = setup_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let p50 = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    println!("link setup (offer sent → handshake done), {} links: p50 {p50:.0} ms, max {max:.0} ms", sorted.len());
    println!(
        "one link, whole stack: {stack:.1} MB/s; raw webrtc-rs data channel: {raw:.1} MB/s ({:.0}%)",
        100.0 * stack / raw
    );
    println!(
        "{}",
        serde_json::json!({
            "link_setup_ms_p50": p50, "link_setup_ms_max": max, "stack_mb_s": stack, "raw_mb_s": raw,
            "stack_vs_raw": stack / raw, "megabytes": mb,
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

type Rx<T> = futures::channel::mpsc::Receiver<T>;

struct Gather(futures::channel::mpsc::Sender<()>, futures::channel::mpsc::Sender<Arc<dyn DataChannel>>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Gather {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.clone().try_send(());
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.1.clone().try_send(dc);
    }
}

async fn peer() -> (impl PeerConnection, Rx<()>, Rx<Arc<dyn DataChannel>>) {
    let (tx, rx) = futures::channel::mpsc::channel(1);
    let (ctx, crx) = futures::channel::mpsc::channel(1);
    let setting = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_ice_connection_attempts(Some(Duration::from_millis(50)), None)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_setting_engine(setting)
        .with_handler(Arc::new(Gather(tx, ctx)))
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .with_data_channel_send_buffer_limit(1 << 20)
        .build()
        .await
        .unwrap();
    (pc, rx, crx)
}

/// The same bytes over a bare webrtc-rs channel set up the same way: 16 KiB messages, the same send-buffer
/// limit, no signaling server, no Noise.
async fn raw(mb: usize) -> f64 {
    let (pa, mut ga, _) = peer().await;
    let (pb, mut gb, mut announced) = peer().await;
    let init = RTCDataChannelInit { ordered: true, ..Default::default() };
    let da = pa.create_data_channel("raw", Some(init)).await.unwrap();
    let offer = pa.create_offer(None).await.unwrap();
    pa.set_local_description(offer).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), ga.next()).await;
    pb.set_remote_description(pa.local_description().await.unwrap()).await.unwrap();
    let answer = pb.create_answer(None).await.unwrap();
    pb.set_local_description(answer).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), gb.next()).await;
    pa.set_remote_description(pb.local_description().await.unwrap()).await.unwrap();
    let (open_tx, open_rx) = tokio::sync::oneshot::channel();
    let reader = da.clone();
    tokio::spawn(async move {
        let mut open_tx = Some(open_tx);
        while let Some(ev) = reader.poll().await {
            if let DataChannelEvent::OnOpen = ev {
                if let Some(tx) = open_tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    let _ = open_rx.await;
    let db = announced.next().await.expect("the channel reaches the answerer");
    let total = mb * 1024 * 1024;
    let receiver = tokio::spawn(async move {
        let mut got = 0usize;
        while got < total {
            match db.poll().await {
                Some(DataChannelEvent::OnMessage(m)) => got += m.data.len(),
                Some(_) => {}
                None => break,
            }
        }
        got
    });
    let chunk = vec![7u8; 16 * 1024];
    let t = Instant::now();
    let mut sent = 0;
    while sent < total {
        da.send(bytes::BytesMut::from(&chunk[..])).await.unwrap();
        sent += chunk.len();
    }
    let got = receiver.await.unwrap();
    assert!(got >= total);
    total as f64 / t.elapsed().as_secs_f64() / 1e6
}
