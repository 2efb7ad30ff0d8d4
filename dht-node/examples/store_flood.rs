//! A hostile peer for the storage-flood test of `cargo xtask e2e`: registers a fresh identity with a
//! signaling server, opens a WebRTC link to the node `--target`, and stores records there as fast as the
//! link lets it for `--secs` seconds — immutable records of `--size` random bytes, each at the longest time
//! to live a node accepts — then prints one JSON line: stores sent, stored, refused by reason.
//!
//! `cargo run -p dht-node --example store_flood -- --signaling ws://HOST:PORT/ws --target ID [--secs 20]
//! [--size 4096] [--udp 127.0.0.1:0]`

use clap::Parser;
use dht_core::{Contact, Message, NodeId, Record, Request, RequestId, Response};
use dht_driver::Transport;
use dht_link::Identity;
use futures::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use transport_webrtc::{RtcConfig, WebRtcTransport};

#[derive(Parser)]
struct Args {
    /// The signaling server both nodes are registered on.
    #[arg(long)]
    signaling: String,
    /// The node to flood (hex id).
    #[arg(long)]
    target: NodeId,
    /// How long to flood, in seconds.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Bytes of each record's value (at least 16).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..))]
    size: u32,
    /// Local UDP address for WebRTC host candidates.
    #[arg(long, default_value = "127.0.0.1:0")]
    udp: String,
    /// A certificate (PEM) to trust for a wss:// signaling server.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, flood(args))
}

async fn flood(args: Args) -> Result<(), String> {
    let identity = Identity::generate().map_err(|e| e.to_string())?;
    // Values differ from run to run (our id) and from store to store (a counter): each is a new record.
    let run = identity.node_id();
    let tls_roots = match &args.ca {
        Some(file) => transport_webrtc::read_pem_certificates(file)?,
        None => Vec::new(),
    };
    let config =
        RtcConfig { udp_addrs: vec![args.udp.clone()], tls_roots, ..RtcConfig::loopback(args.signaling.clone()) };
    let transport = WebRtcTransport::start(identity, vec![], config).await.map_err(|e| e.to_string())?;
    let target = Contact { id: args.target, addrs: vec![transport_webrtc::address(&args.signaling)] };
    let link = transport.dial(&target).await.map_err(|e| format!("dial: {e}"))?;
    let (mut tx, mut rx) = (link.tx, link.rx);
    let ttl_secs = u32::try_from(dht_core::Config::default().max_record_ttl.as_secs()).unwrap_or(u32::MAX);
    let started = Instant::now();
    let end = started + Duration::from_secs(args.secs);
    let (mut sent, mut stored) = (0u64, 0u64);
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut value = vec![0u8; args.size as usize];
    value[8..16].copy_from_slice(&run.as_bytes()[..8]);
    let tally = |msg: Message, stored: &mut u64, refused: &mut BTreeMap<String, u64>| {
        if let Message::Response { body: Response::StoreAck { refused: why }, .. } = msg {
            match why {
                None => *stored += 1,
                Some(r) => *refused.entry(format!("{r:?}")).or_default() += 1,
            }
        }
    };
    while Instant::now() < end {
        value[..8].copy_from_slice(&sent.to_le_bytes());
        let store = Request::Store { record: Box::new(Record::immutable(value.clone())), ttl_secs, cas: None };
        let request = Message::Request { id: RequestId(sent), body: store };
        tokio::select! {
            r = tx.send(request) => {
                if r.is_err() {
                    break;
                }
                sent += 1;
            }
            m = rx.next() => match m {
                Some(m) => tally(m, &mut stored, &mut refused),
                None => break,
            },
        }
        while let Some(Some(m)) = futures::FutureExt::now_or_never(rx.next()) {
            tally(m, &mut stored, &mut refused);
        }
    }
    // The answers still on their way.
    let drain_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(m)) = tokio::time::timeout_at(drain_until, rx.next()).await {
        tally(m, &mut stored, &mut refused);
    }
    let summary = serde_json::json!({
        "sent": sent,
        "stored": stored,
        "refused": refused,
        "bytes_per_record": args.size,
        "secs": started.elapsed().as_secs_f64(),
    });
    println!("{summary}");
    Ok(())
}
