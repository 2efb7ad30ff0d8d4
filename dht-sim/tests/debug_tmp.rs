use dht_sim::*;
use dht_core::*;
#[test]
fn dbg() {
    let mut cfg = SimConfig::default(); cfg.node.join_refresh_buckets = 0;
    let mut sim = Sim::new(cfg);
    let s = sim.add_node();
    let n = 5000;
    for _ in 1..n { let t = sim.now() + std::time::Duration::from_millis(10); sim.run_until(t); let i = sim.add_node(); let seed = Contact::bare(sim.id(s)); sim.with_node(i, |n, now| n.bootstrap(now, vec![seed])); }
    let t = sim.now() + std::time::Duration::from_secs(10); sim.run_until(t);
    sim.take_events();
    let mut fails = 0;
    for l in 0..400usize {
        let key = Key::from_bytes(*sim.random_id().as_bytes());
        let src = (l * 7) % n;
        let value = vec![l as u8; 10];
        let q = sim.with_node(src, |n, now| n.put(now, Record { key, value: value.clone() })).unwrap();
        let lim = sim.now() + std::time::Duration::from_secs(30);
        let ev = sim.run_query(src, q, lim);
        let acks = match ev { Some(Event::PutFinished { acks, .. }) => acks, _ => 999 };
        let t = sim.now() + std::time::Duration::from_secs(2); sim.run_until(t);
        let g = (l * 13 + 5) % n;
        let q = sim.with_node(g, |n, now| n.get(now, key)).unwrap();
        let lim = sim.now() + std::time::Duration::from_secs(30);
        let ev = sim.run_query(g, q, lim);
        if let Some(Event::GetFinished { record, stats, .. }) = ev {
            if record.as_ref().map(|r| &r.value) != Some(&value) {
                fails += 1;
                let holders = (0..n).filter(|i| sim.store_of(*i).contains_key(&key)).count();
                let holders_idx: Vec<usize> = (0..n).filter(|i| sim.node(*i).unwrap().holds(&key)).collect();
                let mut alive = AliveSet::default(); for i in 0..n { alive.insert(sim.id(i)); }
                let truth = alive.closest(&NodeId::from_key(&key), 25);
                let ranks: Vec<usize> = holders_idx.iter().map(|h| truth.iter().position(|t| *t == sim.id(*h)).unwrap_or(99)).collect();
                eprintln!("  holder ranks {ranks:?}; getter rank {:?}", truth.iter().position(|t| *t == sim.id(g)));
                let h = holders_idx[ranks.iter().position(|r| *r == 0).unwrap()];
                let gid = sim.id(g);
                let hn = sim.node_mut(h).unwrap();
                while hn.poll_output().is_some() {}
                hn.handle_message(Instant::from_millis(0), Contact::bare(gid), Message::Request { id: RequestId(1), body: Request::FindValue { key } });
                let outs: Vec<_> = std::iter::from_fn(|| hn.poll_output()).collect();
                eprintln!("  holder {h} answers: {:?}", outs.iter().map(|o| format!("{o:?}").chars().take(90).collect::<String>()).collect::<Vec<_>>());
                eprintln!("  holder stats {:?}", hn.stats());
                let q2 = sim.with_node(g, |n, now| n.find_node(now, NodeId::from_key(&key))).unwrap();
                let lim = sim.now() + std::time::Duration::from_secs(30);
                if let Some(Event::LookupFinished { closest, stats, .. }) = sim.run_query(g, q2, lim) {
                    let r: Vec<usize> = closest.iter().map(|c| truth.iter().position(|t| *t == c.id).unwrap_or(99)).collect();
                    eprintln!("  find_node ranks {r:?} {stats:?}");
                }
                let q3 = sim.with_node(g, |n, now| n.get(now, key)).unwrap();
                let lim = sim.now() + std::time::Duration::from_secs(30);
                if let Some(Event::GetFinished { record, stats, .. }) = sim.run_query(g, q3, lim) { eprintln!("  get again {:?} {stats:?}", record.is_some()); }
                let tgt = NodeId::from_key(&key);
                let gc = sim.node(g).unwrap().routing_table().closest(&tgt, 5);
                for c in &gc {
                    let ci = sim.index_of(&c.id).unwrap();
                    let theirs: Vec<usize> = sim.node(ci).unwrap().routing_table().closest(&tgt, 5).iter().map(|x| truth.iter().position(|t| *t == x.id).unwrap_or(99)).collect();
                    eprintln!("  getter table: {} lz {} -> their closest ranks {theirs:?}", c.id, c.id.distance(&tgt).leading_zeros());
                }
                eprintln!("  truth[0] lz {}", truth[0].distance(&tgt).leading_zeros());
                eprintln!("get {l} from {g} (put from {src}, acks {acks}): got {:?} stats {stats:?}; holders {holders} idx-holders {}", record.map(|r| r.value.len()), holders_idx.len());
            }
        }
    }
    eprintln!("fails {fails}");
}
