//! rust-libp2p: one swarm per node over TCP + noise + yamux, with `kad` (server mode) and `identify` (how
//! libp2p nodes learn each other's listen addresses: without it a node that was dialed cannot add the dialer
//! to its routing table). Connections idle for `idle` close. libp2p's default of 0 (a connection lives while
//! a request is in flight) closes connections before identify has run, so tables stay empty and every
//! lookup returns nothing; with 60 s every node stays connected to most others and 200 nodes in one process
//! need more open files than this machine allows (20,000). The comparison uses 10 s.

use crate::{measure, true_closest, Measured, Swarm, K};
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use libp2p::kad::{self, store::MemoryStore, GetClosestPeersError, QueryResult};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId};
use std::collections::HashMap;
use std::time::Duration;

enum Cmd {
    Join(PeerId, Multiaddr, oneshot::Sender<Result<(), String>>),
    Closest(PeerId, oneshot::Sender<Vec<PeerId>>),
}

struct Libp2p {
    nodes: Vec<mpsc::UnboundedSender<Cmd>>,
    keys: Vec<kad::KBucketKey<PeerId>>,
}

impl Swarm for Libp2p {
    async fn lookup(&self, from: usize, target_seed: [u8; 32]) -> Result<bool, String> {
        // A target peer id made from the seed (identity multihash of its bytes), so both sides look up
        // targets from the same plan.
        let mh = libp2p::multihash::Multihash::<64>::wrap(0, &target_seed).map_err(|e| e.to_string())?;
        let target = PeerId::from_multihash(mh).map_err(|_| "bad target".to_string())?;
        let (tx, rx) = oneshot::channel();
        self.nodes[from].unbounded_send(Cmd::Closest(target, tx)).map_err(|_| "node stopped".to_string())?;
        let got = rx.await.map_err(|_| "node stopped".to_string())?;
        let key = kad::KBucketKey::from(target);
        let truth = true_closest(self.keys.len(), from, K, |i| self.keys[i].distance(&key));
        Ok(got.len() == truth.len() && truth.iter().all(|&i| got.contains(self.keys[i].preimage())))
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

type KadSwarm = libp2p::Swarm<Behaviour>;

fn new_swarm(idle: Duration) -> Result<KadSwarm, String> {
    let swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| format!("tcp: {e:?}"))?
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let config = kad::Config::new(kad::PROTOCOL_NAME);
            Behaviour {
                kad: kad::Behaviour::with_config(id, MemoryStore::new(id), config),
                identify: identify::Behaviour::new(identify::Config::new("/compare/1.0.0".into(), key.public())),
            }
        })
        .map_err(|e| format!("behaviour: {e:?}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}

async fn node(mut swarm: KadSwarm, mut commands: mpsc::UnboundedReceiver<Cmd>) {
    let mut joins: HashMap<kad::QueryId, oneshot::Sender<Result<(), String>>> = HashMap::new();
    let mut finds: HashMap<kad::QueryId, oneshot::Sender<Vec<PeerId>>> = HashMap::new();
    loop {
        tokio::select! {
            cmd = commands.next() => match cmd {
                None => return,
                Some(Cmd::Join(peer, addr, tx)) => {
                    swarm.behaviour_mut().kad.add_address(&peer, addr);
                    match swarm.behaviour_mut().kad.bootstrap() {
                        Ok(q) => { joins.insert(q, tx); }
                        Err(e) => { let _ = tx.send(Err(format!("bootstrap: {e:?}"))); }
                    }
                }
                Some(Cmd::Closest(target, tx)) => {

                    let q = swarm.behaviour_mut().kad.get_closest_peers(target);
                    finds.insert(q, tx);
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    for addr in info.listen_addrs {
                        swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                    id, result, step, ..
                })) => {
                    match result {
                        QueryResult::Bootstrap(r) if step.last => {
                            if let Some(tx) = joins.remove(&id) {
                                let _ = tx.send(r.map(|_| ()).map_err(|e| format!("bootstrap: {e:?}")));
                            }
                        }
                        QueryResult::GetClosestPeers(r) => {
                            let peers = match r {
                                Ok(ok) => ok.peers,
                                Err(GetClosestPeersError::Timeout { peers, .. }) => peers,
                            };
                            if let Some(tx) = finds.remove(&id) {
                                let _ = tx.send(peers.into_iter().map(|p| p.peer_id).collect());
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
}

async fn build(n: usize, idle: Duration) -> Result<Libp2p, String> {
    let mut nodes = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut first: Option<(PeerId, Multiaddr)> = None;
    for i in 0..n {
        let mut swarm = new_swarm(idle)?;
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
        let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr");
        swarm.listen_on(listen).map_err(|e| format!("listen: {e:?}"))?;
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let peer = *swarm.local_peer_id();
        let (tx, rx) = mpsc::unbounded();
        tokio::task::spawn_local(node(swarm, rx));
        match &first {
            None => first = Some((peer, addr)),
            Some((p, a)) => {
                let (done_tx, done_rx) = oneshot::channel();
                let _ = tx.unbounded_send(Cmd::Join(*p, a.clone(), done_tx));
                done_rx.await.map_err(|_| "node stopped".to_string())?.map_err(|e| format!("node {i} join: {e}"))?;
            }
        }
        keys.push(kad::KBucketKey::from(peer));
        nodes.push(tx);
    }
    Ok(Libp2p { nodes, keys })
}

pub async fn run(n: usize, lookups: usize, concurrency: usize, seed: u64, idle: Duration) -> Result<Measured, String> {
    measure(n, lookups, concurrency, seed, build(n, idle)).await
}
