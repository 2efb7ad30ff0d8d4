//! A bare signaling relay on 127.0.0.1 for the tests and the link benchmark: the protocol of
//! `signaling-protocol` (challenge with 8 bits of work, proof and work checked, signals relayed by id, peers, an error for an unknown
//! addressee) and nothing more. The real server, with its limits, is `signaling-server`; the client and it
//! meet in `dht-node`'s WebRTC swarm test and in `cargo xtask e2e`. Keeping it out of this crate's
//! dependencies, test ones included, keeps the client free of server code.

use async_tungstenite::tungstenite::Message;
use dht_core::NodeId;
use futures::StreamExt;
use signaling_protocol::{Challenge, ClientMsg, PeerInfo, ServerMsg, MAX_PEERS_REPLY};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Ws = async_tungstenite::WebSocketStream<async_tungstenite::tokio::TokioAdapter<TcpStream>>;

/// The registered peers: where their messages go, and what they advertised.
type Registry = Arc<Mutex<HashMap<NodeId, (mpsc::UnboundedSender<String>, Vec<String>)>>>;

/// Starts a relay on a free loopback port (its tasks on the current tokio runtime); returns its URL.
pub async fn relay() -> String {
    stoppable_relay().await.url
}

/// A relay that can be stopped: its listener and every connection then close, as when a server goes away.
#[allow(dead_code)] // not every user of this module stops its relay
pub struct Relay {
    pub url: String,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

#[allow(dead_code)]
impl Relay {
    /// Closes the listener and every connection.
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Starts a relay on a free loopback port (its tasks on the current tokio runtime).
pub async fn stoppable_relay() -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let url = format!("ws://{}/ws", listener.local_addr().expect("bound"));
    let registry = Registry::default();
    let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
    let held = tasks.clone();
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let conn = tokio::spawn(serve(stream, registry.clone()));
            held.lock().unwrap().push(conn.abort_handle());
        }
    });
    tasks.lock().unwrap().push(accept.abort_handle());
    Relay { url, tasks }
}

/// The next text message; `None` once the connection is gone or sends something else.
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            _ => return None,
        }
    }
}

async fn serve(stream: TcpStream, registry: Registry) -> Option<()> {
    let mut ws = async_tungstenite::tokio::accept_async(stream).await.ok()?;
    // Every registration here carries 8 bits of work: the client's solving path runs in every test.
    let challenge = Challenge::with_work(8);
    ws.send(Message::text(challenge.message().encode())).await.ok()?;
    let ClientMsg::Register { public_key, proof, addrs, work } = ClientMsg::decode(&next_text(&mut ws).await?).ok()?
    else {
        return None;
    };
    let id = challenge.verify(&public_key, &proof, work).ok()?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    registry.lock().unwrap().insert(id, (tx.clone(), addrs));
    let _ = ws.send(Message::text(ServerMsg::Registered { id: id.into() }.encode())).await;
    loop {
        let reply = tokio::select! {
            text = next_text(&mut ws) => match text.and_then(|t| ClientMsg::decode(&t).ok()) {
                Some(ClientMsg::Signal { to, data }) => relay_one(&registry, id, to.into(), data),
                Some(ClientMsg::Peers { max }) => Some(sample(&registry, id, max)),
                _ => break,
            },
            out = rx.recv() => out,
        };
        if let Some(reply) = reply {
            if ws.send(Message::text(reply)).await.is_err() {
                break;
            }
        }
    }
    let mut reg = registry.lock().unwrap();
    if reg.get(&id).is_some_and(|(t, _)| t.same_channel(&tx)) {
        reg.remove(&id);
    }
    Some(())
}

/// Hands `data` to `to`; the error to send back when nobody by that id is registered.
fn relay_one(registry: &Registry, from: NodeId, to: NodeId, data: String) -> Option<String> {
    let msg = ServerMsg::Signal { from: from.into(), data }.encode();
    match registry.lock().unwrap().get(&to) {
        Some((tx, _)) if tx.send(msg).is_ok() => None,
        _ => Some(ServerMsg::Error { reason: "unknown peer".into(), to: Some(to.into()) }.encode()),
    }
}

fn sample(registry: &Registry, me: NodeId, max: usize) -> String {
    let reg = registry.lock().unwrap();
    let peers = reg
        .iter()
        .filter(|(id, _)| **id != me)
        .take(max.min(MAX_PEERS_REPLY))
        .map(|(id, (_, addrs))| PeerInfo { id: (*id).into(), addrs: addrs.clone() })
        .collect();
    ServerMsg::Peers { peers }.encode()
}
