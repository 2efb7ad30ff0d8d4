//! Driver nodes on the in-memory transport, on a single-threaded `futures` executor.

use dht_core::{Address, Contact, Key, NodeId};
use dht_driver::memory::MemoryNetwork;
use dht_driver::{start, DriverConfig, NodeEvent, NodeHandle, SystemClock};
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use futures::StreamExt;
use kvstore::MemoryStore;

fn contact(n: u32) -> Contact {
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(&n.to_be_bytes());
    Contact { id: NodeId::from_public_key(&key), addrs: vec![Address::new(format!("mem:{n}"))] }
}

fn spawn_node(pool: &LocalPool, net: &MemoryNetwork, n: u32, store: MemoryStore) -> NodeHandle {
    let local = contact(n);
    let (handle, task) =
        start(DriverConfig::new(local.clone(), u64::from(n)), net.transport(local), store, SystemClock);
    pool.spawner().spawn_local(task).expect("the pool accepts tasks");
    handle
}

#[test]
fn twelve_nodes_join_put_and_get() {
    let mut pool = LocalPool::new();
    let net = MemoryNetwork::new();
    let nodes: Vec<NodeHandle> = (0..12).map(|n| spawn_node(&pool, &net, n, MemoryStore::new())).collect();
    pool.run_until(async {
        let mut events = nodes[0].events();
        for node in &nodes[1..] {
            let closest = node.bootstrap(vec![contact(0)]).await.unwrap();
            assert!(!closest.is_empty());
        }
        // Everyone knows enough peers.
        for node in &nodes {
            let table: usize = node.routing_table().await.unwrap().iter().map(|(_, es)| es.len()).sum();
            assert!(table >= 5, "{} knows only {table} peers", node.id());
        }
        // Signed puts from some nodes, gets of them (by owner and name) from others.
        for i in 0..20u32 {
            let from = &nodes[(i % 12) as usize];
            let outcome = from.put_signed(&i.to_be_bytes(), format!("value {i}").into_bytes(), None).await.unwrap();
            assert!(outcome.acks >= 10 && outcome.seq == Some(1), "put {i}: {outcome:?}");
        }
        for i in 0..20u32 {
            let owner = nodes[(i % 12) as usize].owner();
            let getter = &nodes[((i + 5) % 12) as usize];
            let got = getter.get_signed(owner, &i.to_be_bytes()).await.unwrap().map(|r| r.value);
            assert_eq!(got, Some(format!("value {i}").into_bytes()), "get {i}");
        }
        assert_eq!(nodes[3].get(Key::from_name(b"never put")).await.unwrap(), None);
        // An immutable record, named by its hash.
        let put = nodes[2].put_immutable(b"content".to_vec()).await.unwrap();
        assert_eq!(put.key, Key::from_name(b"content"));
        assert_eq!(nodes[9].get_immutable(put.key).await.unwrap(), Some(b"content".to_vec()));
        // find_node returns the true closest among the 12 (other than the caller).
        let target = contact(100).id;
        let mut expect: Vec<NodeId> = (0..12).map(|n| contact(n).id).filter(|id| *id != nodes[4].id()).collect();
        expect.sort_by_key(|id| id.distance(&target));
        let got: Vec<NodeId> = nodes[4].find_node(target).await.unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(got, expect);
        // Events were reported.
        let mut saw_connect = false;
        while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
            saw_connect |= matches!(e, NodeEvent::PeerConnected(_));
        }
        assert!(saw_connect);
        assert!(nodes[0].peers().await.unwrap().len() >= 5);
    });
}

#[test]
fn a_put_refused_here_does_not_make_the_record_ours() {
    let mut pool = LocalPool::new();
    let net = MemoryNetwork::new();
    let node = spawn_node(&pool, &net, 1, MemoryStore::new());
    pool.run_until(async {
        // A value under a key that is not its hash: the default policy refuses such a record.
        let wrong = dht_core::Record::unchecked(Key::from_name(b"not the hash"), b"value".to_vec());
        let key = wrong.key;
        let outcome = node.put_record(wrong, None).await.unwrap();
        assert!(outcome.refusal.is_some(), "{outcome:?}");
        assert!(!node.is_published(key).await.unwrap(), "a refused record is not ours");
        assert!(node.own_records().await.unwrap().is_empty());
        let good = node.put_immutable(b"value".to_vec()).await.unwrap();
        assert!(node.is_published(good.key).await.unwrap());
    });
}

#[test]
fn oversized_values_are_refused_before_reaching_the_node() {
    let pool = LocalPool::new();
    let net = MemoryNetwork::new();
    let node = spawn_node(&pool, &net, 1, MemoryStore::new());
    let err = futures::executor::block_on(node.put_immutable(vec![0; 70_000])).unwrap_err();
    assert!(matches!(err, dht_driver::DriverError::TooLarge { len: 70_000, .. }), "{err}");
}

#[test]
fn a_restarted_node_keeps_its_records_and_routing_table() {
    let mut pool = LocalPool::new();
    let net = MemoryNetwork::new();
    let store = MemoryStore::new();
    let nodes: Vec<NodeHandle> =
        (0..6).map(|n| spawn_node(&pool, &net, n, if n == 5 { store.clone() } else { MemoryStore::new() })).collect();
    pool.run_until(async {
        for node in &nodes[1..] {
            node.bootstrap(vec![contact(0)]).await.unwrap();
        }
        nodes[5].put_signed(b"kept", b"yes".to_vec(), None).await.unwrap();
        nodes[5].put_immutable(b"a chunk".to_vec()).await.unwrap();
        assert_eq!(nodes[5].own_records().await.unwrap().len(), 2);
        assert_eq!(nodes[5].own_signed_records().await.unwrap().len(), 1);
        nodes[5].shutdown();
    });
    pool.run_until_stalled();
    assert!(futures::executor::block_on(nodes[5].peers()).is_err(), "the old task is gone");
    let again = spawn_node(&pool, &net, 5, store);
    pool.run_until(async {
        let table: usize = again.routing_table().await.unwrap().iter().map(|(_, es)| es.len()).sum();
        assert_eq!(table, 5, "routing table restored");
        let kept = again.get_signed(again.owner(), b"kept").await.unwrap();
        assert_eq!(kept.map(|r| (r.seq(), r.value)), Some((Some(1), b"yes".to_vec())));
        // The next version follows the one found, and the node lists it among its own.
        assert_eq!(again.put_signed(b"kept", b"still".to_vec(), None).await.unwrap().seq, Some(2));
        let own = again.own_signed_records().await.unwrap();
        assert_eq!(
            own.iter().map(|r| (r.seq(), r.value.clone())).collect::<Vec<_>>(),
            vec![(Some(2), b"still".to_vec())]
        );
        assert_eq!(again.own_records().await.unwrap().len(), 2, "the immutable one too");
    });
}

#[test]
fn a_dial_that_reaches_another_identity_is_refused() {
    use dht_driver::Transport;
    let net = MemoryNetwork::new();
    let _b = net.transport(contact(2));
    let a = net.transport(contact(1));
    let impostor = Contact { id: contact(3).id, addrs: contact(2).addrs };
    let err = futures::executor::block_on(a.dial(&impostor)).unwrap_err();
    let (expected, actual) = (contact(3).id, contact(2).id);
    assert!(
        matches!(err, dht_driver::TransportError::WrongPeer { expected: e, actual: a } if e == expected && a == actual),
        "{err}"
    );
}

#[test]
fn the_link_pool_stays_under_its_cap_and_redials_on_demand() {
    let mut pool = LocalPool::new();
    let net = MemoryNetwork::new();
    let nodes: Vec<NodeHandle> = (0..10).map(|n| spawn_node(&pool, &net, n, MemoryStore::new())).collect();
    let small = {
        let local = contact(50);
        let mut config = DriverConfig::new(local.clone(), 50);
        config.max_links = 3;
        let (handle, task) = start(config, net.transport(local), MemoryStore::new(), SystemClock);
        pool.spawner().spawn_local(task).unwrap();
        handle
    };
    pool.run_until(async {
        for node in &nodes[1..] {
            node.bootstrap(vec![contact(0)]).await.unwrap();
        }
        let mut events = small.events();
        small.bootstrap(vec![contact(0)]).await.unwrap();
        assert!(small.peers().await.unwrap().len() <= 3);
        for i in 0..5u32 {
            let out = small.put_immutable(vec![b'p', i as u8]).await.unwrap();
            assert!(out.acks >= 8, "put {i} through a 3-link pool: {out:?}");
            assert!(small.peers().await.unwrap().len() <= 3);
            assert_eq!(nodes[(i as usize) % 10].get_immutable(out.key).await.unwrap(), Some(vec![b'p', i as u8]));
        }
        let mut closed = 0;
        while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
            closed += usize::from(matches!(e, NodeEvent::PeerDisconnected(_)));
        }
        assert!(closed > 0, "least recently used links were closed");
    });
}

#[test]
fn a_node_on_two_transports_bridges_two_networks() {
    use dht_driver::Transports;
    let mut pool = LocalPool::new();
    let (net_a, net_b) = (MemoryNetwork::new(), MemoryNetwork::new());
    // Nodes 0-3 only on network A, 10-13 only on B; node 99 on both, with one address in each.
    let a: Vec<NodeHandle> = (0..4).map(|n| spawn_node(&pool, &net_a, n, MemoryStore::new())).collect();
    let b: Vec<NodeHandle> = (10..14).map(|n| spawn_node(&pool, &net_b, n, MemoryStore::new())).collect();
    let bridge_contact = Contact { id: contact(99).id, addrs: vec![Address::new("mem:99a"), Address::new("mem:99b")] };
    let on_a = Contact { id: bridge_contact.id, addrs: vec![Address::new("mem:99a")] };
    let on_b = Contact { id: bridge_contact.id, addrs: vec![Address::new("mem:99b")] };
    let transports = Transports(vec![Box::new(net_a.transport(on_a)), Box::new(net_b.transport(on_b))]);
    let (bridge, task) = start(DriverConfig::new(bridge_contact, 99), transports, MemoryStore::new(), SystemClock);
    pool.spawner().spawn_local(task).unwrap();
    pool.run_until(async {
        for n in &a[1..] {
            n.bootstrap(vec![contact(0)]).await.unwrap();
        }
        for n in &b[1..] {
            n.bootstrap(vec![contact(10)]).await.unwrap();
        }
        bridge.bootstrap(vec![contact(0), contact(10)]).await.unwrap();
        let peers = bridge.peers().await.unwrap();
        assert!(peers.iter().any(|p| p.id == contact(0).id) && peers.iter().any(|p| p.id == contact(10).id));
        let table: usize = bridge.routing_table().await.unwrap().iter().map(|(_, es)| es.len()).sum();
        assert!(table >= 6, "the bridge knows both sides: {table}");
    });
}

#[test]
fn the_routing_table_is_saved_periodically() {
    use kvstore::Store;
    let mut pool = LocalPool::new();
    let net = MemoryNetwork::new();
    let nodes: Vec<NodeHandle> = (0..4).map(|n| spawn_node(&pool, &net, n, MemoryStore::new())).collect();
    let store = MemoryStore::new();
    let local = contact(7);
    let mut config = DriverConfig::new(local.clone(), 7);
    config.save_interval = std::time::Duration::from_millis(50);
    let (node, task) = start(config, net.transport(local), store.clone(), SystemClock);
    pool.spawner().spawn_local(task).unwrap();
    pool.run_until(async {
        for n in &nodes[1..] {
            n.bootstrap(vec![contact(0)]).await.unwrap();
        }
        node.bootstrap(vec![contact(0)]).await.unwrap();
        futures_timer_sleep(200).await;
        // Without any shutdown, the store already has the table.
        assert_eq!(store.load_contacts().await.unwrap().len(), 4);
    });
}

async fn futures_timer_sleep(ms: u64) {
    use dht_driver::Clock;
    let clock = SystemClock;
    clock.sleep_until(clock.now() + std::time::Duration::from_millis(ms)).await;
}

/// A store written before the list of signed records existed: it has no such list to give.
#[derive(Clone)]
struct WithoutSignedList(MemoryStore);

impl kvstore::Store for WithoutSignedList {
    async fn put_record(
        &self,
        key: Key,
        value: Vec<u8>,
        expires: dht_core::Instant,
    ) -> Result<(), kvstore::StoreError> {
        self.0.put_record(key, value, expires).await
    }
    async fn get_record(&self, key: &Key) -> Result<Option<kvstore::StoredRecord>, kvstore::StoreError> {
        self.0.get_record(key).await
    }
    async fn remove_record(&self, key: &Key) -> Result<(), kvstore::StoreError> {
        self.0.remove_record(key).await
    }
    async fn records(&self) -> Result<Vec<kvstore::RecordInfo>, kvstore::StoreError> {
        self.0.records().await
    }
    async fn remove_expired(&self, now: dht_core::Instant) -> Result<usize, kvstore::StoreError> {
        self.0.remove_expired(now).await
    }
    async fn save_contacts(&self, contacts: &[Contact]) -> Result<(), kvstore::StoreError> {
        self.0.save_contacts(contacts).await
    }
    async fn load_contacts(&self) -> Result<Vec<Contact>, kvstore::StoreError> {
        self.0.load_contacts().await
    }
    async fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), kvstore::StoreError> {
        self.0.put_meta(name, value).await
    }
    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, kvstore::StoreError> {
        if name == dht_driver::PUBLISHED_SIGNED_META {
            return Ok(None);
        }
        self.0.get_meta(name).await
    }
}

#[test]
fn a_store_without_the_list_of_signed_records_gets_one_made_from_its_records() {
    let mut pool = LocalPool::new();
    let net = MemoryNetwork::new();
    let store = MemoryStore::new();
    let local = contact(7);
    let first = spawn_node(&pool, &net, 7, store.clone());
    pool.run_until(async {
        first.put_signed(b"name", b"v".to_vec(), None).await.unwrap();
        first.put_immutable(b"chunk".to_vec()).await.unwrap();
        first.shutdown();
    });
    pool.run_until_stalled();
    let (again, task) =
        start(DriverConfig::new(local.clone(), 7), net.transport(local), WithoutSignedList(store), SystemClock);
    pool.spawner().spawn_local(task).expect("the pool accepts tasks");
    pool.run_until(async {
        let signed = again.own_signed_records().await.unwrap();
        assert_eq!(signed.iter().map(|r| r.value.clone()).collect::<Vec<_>>(), vec![b"v".to_vec()]);
        assert_eq!(again.own_records().await.unwrap().len(), 2);
    });
}

/// A key kept "elsewhere": signs through the async path, or refuses, or signs something else.
struct Platform {
    key: dht_core::SigningKey,
    mode: &'static str,
    signed: std::rc::Rc<std::cell::Cell<u32>>,
}

impl dht_driver::ExternalSigner for Platform {
    fn owner(&self) -> dht_core::OwnerKey {
        dht_core::OwnerKey::of(&self.key)
    }

    fn sign(&self, message: Vec<u8>) -> futures::future::LocalBoxFuture<'static, Result<[u8; 64], String>> {
        use ed25519_dalek::Signer as _;
        self.signed.set(self.signed.get() + 1);
        let result = match self.mode {
            "refuse" => Err("the user said no".to_string()),
            "wrong" => Ok(self.key.sign(b"something else").to_bytes()),
            _ => Ok(self.key.sign(&message).to_bytes()),
        };
        Box::pin(async move { result })
    }
}

#[test]
fn a_key_the_platform_keeps_signs_records_and_cannot_be_exported() {
    let mut pool = LocalPool::new();
    let net = MemoryNetwork::new();
    let other = spawn_node(&pool, &net, 1, MemoryStore::new());
    let signed = std::rc::Rc::new(std::cell::Cell::new(0));
    let key = dht_core::SigningKey::from_bytes(&[9; 32]);
    let node_with = |n: u32, mode: &'static str| {
        let local = contact(n);
        let mut config = DriverConfig::new(local.clone(), u64::from(n));
        config.signer =
            dht_driver::Signer::External(std::rc::Rc::new(Platform { key: key.clone(), mode, signed: signed.clone() }));
        let (handle, task) = start(config, net.transport(local), MemoryStore::new(), SystemClock);
        pool.spawner().spawn_local(task).expect("the pool accepts tasks");
        handle
    };
    let (good, refusing, wrong) = (node_with(2, "sign"), node_with(3, "refuse"), node_with(4, "wrong"));
    pool.run_until(async {
        for node in [&good, &refusing, &wrong] {
            node.bootstrap(vec![contact(1)]).await.unwrap();
        }
        assert_eq!(good.owner(), dht_core::OwnerKey::of(&key));
        assert_eq!(good.signing_key_bytes(), None, "not exportable");
        let put = good.put_signed(b"name", b"v1".to_vec(), None).await.unwrap();
        assert_eq!((put.seq, put.acks), (Some(1), 3));
        let got = other.get_signed(good.owner(), b"name").await.unwrap().expect("found");
        assert_eq!((got.value.as_slice(), got.seq()), (b"v1".as_slice(), Some(1)));
        let err = refusing.put_signed(b"name", b"v2".to_vec(), None).await.unwrap_err();
        assert!(matches!(err, dht_driver::DriverError::Signing(ref m) if m == "the user said no"), "{err}");
        let err = wrong.put_signed(b"name", b"v2".to_vec(), None).await.unwrap_err();
        assert!(err.to_string().contains("signature does not verify"), "{err}");
        assert_eq!(signed.get(), 3);
        let still = other.get_signed(good.owner(), b"name").await.unwrap().map(|r| r.value);
        assert_eq!(still, Some(b"v1".to_vec()), "nothing bad went out");
    });
}

/// Sybils that connect and send a ping a second (or faster) to keep their links fresh must not push the
/// links to the peers of the node's routing table out of its pool: only useful traffic (our requests,
/// answers to them, requests from peers in our table) keeps a link, and peers outside the table together
/// hold at most half the pool. Before, every sybil's arrival closed the least recently used link, and the
/// pinging sybils were always more recent than the idle honest links: none of those stayed.
#[test]
fn pinging_sybils_cannot_push_table_peers_out_of_the_link_pool() {
    use dht_core::{Message, Request, RequestId};
    use dht_driver::Transport;
    let mut pool = LocalPool::new();
    let net = MemoryNetwork::new();
    // The victim requires 8 bits of id work; the honest ids are picked to have it, the sybils' lack it, so
    // the sybils never enter its table.
    let worked: Vec<u32> = (1..20_000).filter(|n| contact(*n).id.has_work(8)).take(3).collect();
    let honest: Vec<NodeHandle> = worked.iter().map(|n| spawn_node(&pool, &net, *n, MemoryStore::new())).collect();
    let victim = {
        let local = contact(0);
        let mut config = DriverConfig::new(local.clone(), 0);
        config.max_links = 4;
        let mut core = dht_core::Config::default();
        core.id_difficulty = 8;
        config.core = core.validate().unwrap();
        let (handle, task) = start(config, net.transport(local), MemoryStore::new(), SystemClock);
        pool.spawner().spawn_local(task).unwrap();
        handle
    };
    let sybils: Vec<Contact> = (30_000..).map(contact).filter(|c| !c.id.has_work(8)).take(6).collect();
    let spawner = pool.spawner();
    pool.run_until(async {
        for h in &honest[1..] {
            h.bootstrap(vec![contact(worked[0])]).await.unwrap();
        }
        victim.bootstrap(vec![contact(worked[0])]).await.unwrap();
        for n in &worked {
            victim.find_node(contact(*n).id).await.unwrap();
        }
        let honest_ids: Vec<NodeId> = worked.iter().map(|n| contact(*n).id).collect();
        let linked = |peers: Vec<Contact>| peers.iter().filter(|c| honest_ids.contains(&c.id)).count();
        assert_eq!(linked(victim.peers().await.unwrap()), 3, "linked to the honest peers");
        for (i, sybil) in sybils.iter().enumerate() {
            let mut link = net.transport(sybil.clone()).dial(&contact(0)).await.expect("the sybil connects");
            spawner
                .spawn_local(async move {
                    for n in 0..200u64 {
                        let ping = Message::Request { id: RequestId(n), body: Request::Ping };
                        if link.tx.try_send(ping).is_err() {
                            return;
                        }
                        while let Some(Some(_)) = futures::FutureExt::now_or_never(link.rx.next()) {}
                        futures_timer_sleep(10).await;
                    }
                })
                .unwrap();
            futures_timer_sleep(30 + 10 * i as u64).await;
        }
        futures_timer_sleep(200).await;
        let left = linked(victim.peers().await.unwrap());
        assert!(left >= 2, "honest links left in a pool of 4: {left}");
    });
}

/// A transport whose accepted links reach the node 50 ms late: two nodes dialing each other then both see
/// their own dial finish before the other's arrives, as on a real network.
struct LateIncoming(dht_driver::memory::MemoryTransport);

impl dht_driver::Transport for LateIncoming {
    fn dial(
        &self,
        peer: &Contact,
    ) -> futures::future::LocalBoxFuture<'static, Result<dht_driver::PeerLink, dht_driver::TransportError>> {
        self.0.dial(peer)
    }

    fn incoming(&mut self) -> futures::stream::LocalBoxStream<'static, dht_driver::PeerLink> {
        self.0
            .incoming()
            .then(|link| async move {
                futures_timer_sleep(50).await;
                link
            })
            .boxed_local()
    }
}

/// Two nodes that dial each other at the same moment end with one link between them, the same on both
/// sides (the one dialed by the smaller id). Before, each kept the link that reached it last — its peer's
/// dial at one end, its own at the other — and closed the other one: both links died.
#[test]
fn crossed_dials_end_with_one_shared_link() {
    let mut pool = LocalPool::new();
    let net = MemoryNetwork::new();
    let node = |n: u32| {
        let local = contact(n);
        let transport = LateIncoming(net.transport(local.clone()));
        let (handle, task) = start(DriverConfig::new(local, u64::from(n)), transport, MemoryStore::new(), SystemClock);
        pool.spawner().spawn_local(task).unwrap();
        handle
    };
    let (a, b) = (node(1), node(2));
    let (mut a_events, mut b_events) = (a.events(), b.events());
    pool.run_until(async {
        let (ra, rb) = futures::join!(a.bootstrap(vec![contact(2)]), b.bootstrap(vec![contact(1)]));
        ra.unwrap();
        rb.unwrap();
        futures_timer_sleep(300).await;
        for _ in 0..5 {
            assert!(!a.find_node(contact(2).id).await.unwrap().is_empty());
            assert!(!b.find_node(contact(1).id).await.unwrap().is_empty());
        }
        futures_timer_sleep(100).await;
        let count = |events: &mut futures::channel::mpsc::UnboundedReceiver<NodeEvent>| {
            let (mut up, mut down) = (0, 0);
            while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
                up += usize::from(matches!(e, NodeEvent::PeerConnected(_)));
                down += usize::from(matches!(e, NodeEvent::PeerDisconnected(_)));
            }
            (up, down)
        };
        let (a_seen, b_seen) = (count(&mut a_events), count(&mut b_events));
        eprintln!("links (connected, disconnected): a {a_seen:?}, b {b_seen:?}");
        assert_eq!(a.peers().await.unwrap().len(), 1);
        assert_eq!(b.peers().await.unwrap().len(), 1);
        assert!(a_seen.1 == 0 && b_seen.1 == 0, "no link of the pair was lost: a {a_seen:?}, b {b_seen:?}");
    });
}

/// A transport whose dials to some peers take `ms` (a link set up through a slow path, such as WebRTC
/// signaled through relays).
struct SlowDials {
    inner: dht_driver::memory::MemoryTransport,
    slow: Vec<NodeId>,
    ms: u64,
}

impl dht_driver::Transport for SlowDials {
    fn dial(
        &self,
        peer: &Contact,
    ) -> futures::future::LocalBoxFuture<'static, Result<dht_driver::PeerLink, dht_driver::TransportError>> {
        let delay = if self.slow.contains(&peer.id) { self.ms } else { 0 };
        let dial = self.inner.dial(peer);
        Box::pin(async move {
            futures_timer_sleep(delay).await;
            dial.await
        })
    }

    fn incoming(&mut self) -> futures::stream::LocalBoxStream<'static, dht_driver::PeerLink> {
        self.inner.incoming()
    }
}

/// A lookup waits for peers whose links take longer to set up than a request's timeout (their requests
/// wait on the dial, not on a round trip), and a peer that cannot be reached fails its requests at once.
#[test]
fn lookups_wait_for_slow_dials_and_not_for_failed_ones() {
    let mut pool = LocalPool::new();
    let net = MemoryNetwork::new();
    let nodes: Vec<NodeHandle> = (0..6).map(|n| spawn_node(&pool, &net, n, MemoryStore::new())).collect();
    let local = contact(50);
    let slow = vec![contact(3).id, contact(4).id, contact(5).id];
    let transport = SlowDials { inner: net.transport(local.clone()), slow, ms: 2_500 };
    let (x, task) = start(DriverConfig::new(local, 50), transport, MemoryStore::new(), SystemClock);
    pool.spawner().spawn_local(task).unwrap();
    pool.run_until(async {
        for node in &nodes[1..] {
            node.bootstrap(vec![contact(0)]).await.unwrap();
        }
        // Dials to 3, 4 and 5 take 2.5 s, more than the 1 s request timeout; 99 is nowhere.
        let found = x.bootstrap(vec![contact(0), contact(99)]).await.unwrap();
        let mut ids: Vec<NodeId> = found.iter().map(|c| c.id).collect();
        ids.sort();
        let mut all: Vec<NodeId> = (0..6).map(|n| contact(n).id).collect();
        all.sort();
        assert_eq!(ids, all, "every node, the slowly dialed ones too");
        let stats = x.stats().await.unwrap();
        assert_eq!(stats.unreachable, 1, "the dial to 99 failed its request: {stats:?}");
        assert_eq!(stats.timeouts, 0, "{stats:?}");
    });
}

/// A transport whose first link to `cut` closes as soon as a request goes on it, unanswered (as when the
/// peer closes the link to make room for another, or the link breaks).
struct CutFirstLink {
    inner: dht_driver::memory::MemoryTransport,
    cut: NodeId,
    done: std::rc::Rc<std::cell::Cell<bool>>,
    spawner: futures::executor::LocalSpawner,
}

impl dht_driver::Transport for CutFirstLink {
    fn dial(
        &self,
        peer: &Contact,
    ) -> futures::future::LocalBoxFuture<'static, Result<dht_driver::PeerLink, dht_driver::TransportError>> {
        let dial = self.inner.dial(peer);
        if peer.id != self.cut || self.done.replace(true) {
            return dial;
        }
        let spawner = self.spawner.clone();
        Box::pin(async move {
            use futures::SinkExt;
            let link = dial.await?;
            let (tx, mut from_driver) = futures::channel::mpsc::channel(16);
            let (mut to_driver, rx) = futures::channel::mpsc::channel(16);
            let (mut real_tx, mut real_rx) = (link.tx, link.rx);
            let forward = async move {
                loop {
                    futures::select! {
                        m = from_driver.next() => match m {
                            Some(dht_core::Message::Request { .. }) | None => break,
                            Some(m) => { let _ = real_tx.send(m).await; }
                        },
                        m = real_rx.next() => match m {
                            Some(m) => { let _ = to_driver.send(m).await; }
                            None => break,
                        },
                    }
                }
                // Both ends of the link close here: the request is lost with it.
            };
            spawner.spawn_local(forward).expect("the pool accepts tasks");
            Ok(dht_driver::PeerLink { remote: link.remote, tx, rx })
        })
    }

    fn incoming(&mut self) -> futures::stream::LocalBoxStream<'static, dht_driver::PeerLink> {
        self.inner.incoming()
    }
}

/// A request whose link closes before it is answered is sent again at once over a new link (the driver
/// tells the node of the close), and the lookup finds its peer.
#[test]
fn a_request_lost_with_its_link_goes_again_over_a_new_one() {
    let mut pool = LocalPool::new();
    let net = MemoryNetwork::new();
    let nodes: Vec<NodeHandle> = (0..6).map(|n| spawn_node(&pool, &net, n, MemoryStore::new())).collect();
    let local = contact(50);
    let done = std::rc::Rc::new(std::cell::Cell::new(false));
    let transport =
        CutFirstLink { inner: net.transport(local.clone()), cut: contact(3).id, done, spawner: pool.spawner() };
    let (x, task) = start(DriverConfig::new(local, 50), transport, MemoryStore::new(), SystemClock);
    pool.spawner().spawn_local(task).unwrap();
    pool.run_until(async {
        for node in &nodes[1..] {
            node.bootstrap(vec![contact(0)]).await.unwrap();
        }
        let found = x.bootstrap(vec![contact(0)]).await.unwrap();
        let mut ids: Vec<NodeId> = found.iter().map(|c| c.id).collect();
        ids.sort();
        let mut all: Vec<NodeId> = (0..6).map(|n| contact(n).id).collect();
        all.sort();
        let stats = x.stats().await.unwrap();
        assert_eq!(ids, all, "every node, 3 too: {stats:?}");
        let stats = x.stats().await.unwrap();
        assert_eq!(stats.lost_with_link, 1, "the request to 3 went with its link: {stats:?}");
    });
}
