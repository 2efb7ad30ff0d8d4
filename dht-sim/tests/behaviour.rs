//! Behaviour of the core in small simulated swarms; each runs in about a second.

use dht_sim::experiment::{run, Params};
use dht_sim::SimConfig;

fn params(seed: u64, nodes: usize) -> Params {
    Params { sim: SimConfig { seed, ..SimConfig::default() }, nodes, lookups: 200, puts: 40, ..Params::default() }
}

/// A swarm where `fraction` of the nodes lie (forge, replay and shorten records), and every record put is
/// updated once.
fn among_liars(seed: u64, nodes: usize, fraction: f64) -> Params {
    let mut p = params(seed, nodes);
    p.malicious = fraction;
    p.updates = true;
    p
}

#[test]
fn lookups_find_the_true_closest_and_values_come_back() {
    let r = run(&params(11, 500)).expect("a valid configuration");
    eprintln!("seed 11: {r:?}");
    assert_eq!(r.lookups, 200);
    assert!(r.success_rate >= 0.99, "success {}", r.success_rate);
    assert!(r.hops_p99 <= 5, "hops p99 {}", r.hops_p99);
    assert!(r.put_acks_mean >= 19.0, "acks {}", r.put_acks_mean);
    assert_eq!(r.get_success_rate, 1.0);
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let a = run(&params(5, 200)).expect("a valid configuration");
    let b = run(&params(5, 200)).expect("a valid configuration");
    let c = run(&params(6, 200)).expect("a valid configuration");
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(
        (a.success_rate, a.messages_total, a.latency_ms_p50),
        (b.success_rate, b.messages_total, b.latency_ms_p50)
    );
    assert_ne!(a.trace_hash, c.trace_hash);
}

#[test]
fn the_trace_does_not_depend_on_threads() {
    // Liars, loss and churn: every random choice of the network is exercised.
    let mut p = among_liars(8, 300, 0.1);
    p.sim.loss = 0.01;
    p.churn = 0.2;
    let on = |threads: usize, parallel_min: usize| {
        let mut p = p.clone();
        p.sim.parallel_min = parallel_min;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        pool.install(|| run(&p).expect("a valid configuration"))
    };
    let one = on(1, usize::MAX);
    for (threads, parallel_min) in [(1, 1), (3, 1), (2, 8)] {
        let r = on(threads, parallel_min);
        assert_eq!(r.trace_hash, one.trace_hash, "{threads} threads, parallel from {parallel_min} nodes");
        assert_eq!((r.messages_total, r.success_rate), (one.messages_total, one.success_rate));
    }
}

#[test]
fn survives_churn_and_loss() {
    let mut p = params(21, 400);
    p.churn = 0.5;
    // Half the nodes replaced over 2,000 virtual seconds (0.025 % of the swarm per second, as in the
    // 10k-node benchmark).
    p.lookup_interval_ms = 10_000;
    let r = run(&p).expect("a valid configuration");
    eprintln!("churn: {r:?}");
    assert_eq!(r.departed, 200);
    assert!(r.success_rate_present >= 0.985, "success under churn {}", r.success_rate_present);
    assert!(r.success_rate >= 0.98, "strict success under churn {}", r.success_rate);
    assert!(r.get_success_rate >= 0.95, "gets under churn {}", r.get_success_rate);

    let mut p = params(22, 300);
    p.sim.loss = 0.01;
    // The default config: a lost message costs a resend, not the lookup (without retries, about half the
    // lookups here miss one of the true k closest).
    let r = run(&p).expect("a valid configuration");
    eprintln!("loss: {r:?}");
    assert!(r.success_rate >= 0.98, "success under loss {}", r.success_rate);
    assert!(r.get_success_rate >= 0.99, "gets under loss {}", r.get_success_rate);
}

#[test]
fn liars_cost_time_but_forge_replay_and_shorten_nothing() {
    let mut p = among_liars(5, 600, 0.2);
    let r = run(&p).expect("a valid configuration");
    eprintln!("among liars: {r:?}");
    assert_eq!((r.forged_accepted, r.stale_accepted, r.shortened), (0, 0, 0), "forged, stale, shortened");
    assert!(r.get_success_rate >= 0.95, "gets among liars {}", r.get_success_rate);
    assert!(r.success_rate >= 0.95, "lookups among liars {}", r.success_rate);
    // The liars did try: replays and forged signatures reached honest nodes and were refused.
    assert!(r.refused.stale > 0 && r.refused.bad_values > 0, "no attack seen: {:?}", r.refused);
    // With unsigned records that anyone may overwrite the same liars get forgeries accepted: the checks
    // above are not vacuous.
    p.sim.node.record_policy = dht_core::RecordPolicy::ClosedSwarm;
    p.put_kind = dht_sim::experiment::PutKind::Unchecked;
    p.updates = false;
    let r = run(&p).expect("a valid configuration");
    assert!(r.forged_accepted > 0, "liars forged nothing: the adversary model is broken");
}

#[test]
fn records_outlive_their_holders_under_weibull_churn() {
    let weibull = |replicate_min: u64| {
        let mut p = Params {
            lookups: 300,
            puts: 50,
            weibull: Some(dht_sim::experiment::WeibullChurn { hours: 3.0, median_session_min: 30.0, shape: 0.5 }),
            ..params(3, 200)
        };
        p.sim.node.replicate_interval = std::time::Duration::from_secs(replicate_min * 60);
        run(&p).expect("a valid configuration")
    };
    let r = weibull(60);
    assert!(r.departed > 400, "departures {}", r.departed);
    assert_eq!(r.records_retrievable_rate, Some(1.0), "records lost despite replication");
    assert!(r.success_rate >= 0.98, "lookups under Weibull churn {}", r.success_rate);
    // Without replication by holders some records are lost: the figure above is not vacuous.
    let r = weibull(0);
    assert!(r.records_retrievable_rate.unwrap() < 1.0, "no record lost even without replication");
}

#[test]
fn disjoint_paths_get_past_more_liars() {
    let mut p = among_liars(7, 600, 0.3);
    // Enough lookups that one or two unlucky ones do not decide the 0.99 below.
    p.lookups = 600;
    let one = run(&p).expect("a valid configuration");
    p.sim.node.lookup_paths = 3;
    let three = run(&p).expect("a valid configuration");
    eprintln!("one path: {one:?}\nthree paths: {three:?}");
    assert_eq!(three.forged_accepted, 0);
    assert!(three.success_rate > one.success_rate, "3 paths {} vs 1 path {}", three.success_rate, one.success_rate);
    assert!(three.success_rate >= 0.99, "lookups over 3 disjoint paths among 30 % liars {}", three.success_rate);
    assert!(three.msgs_per_lookup > one.msgs_per_lookup, "disjoint paths cost requests");
}
