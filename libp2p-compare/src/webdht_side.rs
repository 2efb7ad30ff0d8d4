//! webdht: `dht-driver` + `dht-core` over `transport-tcp` (Noise-encrypted links), records in memory.

use crate::{measure, true_closest, Measured, Swarm, K};
use dht_core::{Contact, NodeId};
use dht_driver::{start, DriverConfig, NodeHandle, SystemClock};
use dht_link::Identity;
use kvstore::MemoryStore;
use transport_tcp::{TcpConfig, TcpTransport};

struct Webdht {
    handles: Vec<NodeHandle>,
    ids: Vec<NodeId>,
}

impl Swarm for Webdht {
    async fn lookup(&self, from: usize, target_seed: [u8; 32]) -> Result<bool, String> {
        let target = NodeId::from_bytes(target_seed);
        let found = self.handles[from].find_node(target).await.map_err(|e| e.to_string())?;
        let truth = true_closest(self.ids.len(), from, K, |i| self.ids[i].distance(&target));
        let got: Vec<NodeId> = found.iter().map(|c| c.id).collect();
        Ok(got.len() == truth.len() && truth.iter().all(|&i| got.contains(&self.ids[i])))
    }
}

async fn build(n: usize, seed: u64, max_links: usize) -> Result<Webdht, String> {
    let mut handles = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut first: Option<Contact> = None;
    for i in 0..n {
        let identity = Identity::generate().map_err(|e| e.to_string())?;
        let listen = "127.0.0.1:0".parse().expect("a socket address");
        let t = TcpTransport::bind(listen, identity.clone(), vec![], TcpConfig::default())
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let contact = t.local_contact().clone();
        let config = DriverConfig { max_links, ..DriverConfig::new(contact.clone(), seed.wrapping_add(i as u64)) };
        let (handle, task) = start(config, t, MemoryStore::new(), SystemClock);
        tokio::task::spawn_local(task);
        match &first {
            None => first = Some(contact.clone()),
            Some(seed_contact) => {
                handle.bootstrap(vec![seed_contact.clone()]).await.map_err(|e| format!("node {i} join: {e}"))?;
            }
        }
        ids.push(contact.id);
        handles.push(handle);
    }
    Ok(Webdht { handles, ids })
}

pub async fn run(
    n: usize,
    lookups: usize,
    concurrency: usize,
    seed: u64,
    max_links: usize,
) -> Result<Measured, String> {
    measure(n, lookups, concurrency, seed, build(n, seed, max_links)).await
}
