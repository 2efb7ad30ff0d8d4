//! `dht-sim`: run a simulated swarm and print its figures, the last line as one JSON object.

/// Every message is allocated on its sender's thread and freed on its receiver's. glibc's malloc then
/// takes the other thread's arena lock on nearly every free, and two threads ran a 30k swarm no faster
/// than one (14.1 s against 14.3 s); jemalloc frees into a thread-local cache: 6.6 s.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;
use dht_sim::experiment::{self, Params};
use dht_sim::SimConfig;
use std::io::IsTerminal;
use std::time::Duration;

/// Simulate a webdht swarm in one process on a virtual network and measure lookups, puts and gets.
///
/// Nodes join one after another through a single seed node (a self-lookup each), then the operation
/// phase runs LOOKUPS random find_node lookups (one every --lookup-interval-ms of virtual time), PUTS
/// put/get pairs (puts in the first quarter of the phase, each get from another node in the last quarter)
/// and, with --churn, replaces that fraction of the nodes spread over the phase.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Nodes in the swarm.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Random find_node lookups; one succeeds when it returns exactly the true k closest live nodes.
    #[arg(long, default_value_t = 200)]
    lookups: usize,
    /// Seed of everything random; the same seed gives the same trace_hash.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction of nodes that leave without notice (each replaced by a newcomer) during the phase.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Probability that any message is lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Put/get pairs.
    #[arg(long, default_value_t = 0)]
    puts: usize,
    /// Smallest link round-trip time, ms.
    #[arg(long, default_value_t = 50)]
    rtt_min_ms: u64,
    /// Largest link round-trip time, ms (each link's RTT is uniform between the two, fixed per link).
    #[arg(long, default_value_t = 150)]
    rtt_max_ms: u64,
    /// Virtual ms between two joins during bootstrap.
    #[arg(long, default_value_t = 10)]
    join_interval_ms: u64,
    /// Virtual ms between two lookups; the operation phase lasts LOOKUPS times this.
    #[arg(long, default_value_t = 100)]
    lookup_interval_ms: u64,
    /// Bucket size and replication factor.
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Lookup parallelism.
    #[arg(long, default_value_t = 3)]
    alpha: usize,
    /// Answers without progress before a lookup widens to k in flight.
    #[arg(long, default_value_t = 3)]
    stall_after: usize,

    /// Buckets refreshed after each join's self-lookup, nearest first (256 = all, the Kademlia join).
    #[arg(long, default_value_t = 256)]
    join_refresh: usize,
    /// Do not widen lookups when a peer answers from within the expected radius of the k closest.
    #[arg(long)]
    no_widen: bool,
    /// How long a node waits for an answer before counting the request failed, ms.
    #[arg(long, default_value_t = 1000)]
    request_timeout_ms: u64,
    /// Use the fixed --request-timeout-ms for every request instead of adapting to round trips.
    #[arg(long)]
    fixed_timeout: bool,
    /// Times a timed-out request is sent again before the peer counts as failed.
    #[arg(long, default_value_t = dht_core::Config::default().request_retries)]
    request_retries: u8,
    /// Bucket i of a routing table holds up to k·2^min(i, this) entries (0 = k everywhere; at most 8).
    #[arg(long, default_value_t = dht_core::Config::default().bucket_growth)]
    bucket_growth: u32,
    /// Minutes after which entries beyond k of a bucket, not heard from since, are dropped (0 = never).
    #[arg(long, default_value_t = dht_core::Config::default().shed_after.as_secs() / 60)]
    shed_after_min: u64,
    /// Requests a bucket refresh may send (0 = unlimited).
    #[arg(long, default_value_t = 2)]
    refresh_budget: usize,
    /// Seconds between a node's periodic self-lookups (0 = none).
    #[arg(long, default_value_t = 300)]
    self_lookup_secs: u64,
    /// Bytes per value put.
    #[arg(long, default_value_t = 128)]
    value_size: usize,
    /// Fraction of nodes that lie: made-up and colluding contacts for every lookup, forged values for every
    /// get, stores acknowledged and dropped. Operations start from honest nodes.
    #[arg(long, default_value_t = 0.0)]
    malicious: f64,
    /// `uniform` (the default: `--churn` of the nodes leave at random instants), or `weibull`: every node's
    /// session is drawn from a Weibull distribution (`--median-session-min`, `--weibull-shape`) over a run of
    /// `--hours`; records are put at the start and read back at the end (`records_retrievable_rate`).
    #[arg(long, default_value = "uniform")]
    churn_model: String,
    /// Virtual hours of a `--churn-model weibull` run.
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Median session of `--churn-model weibull`, minutes.
    #[arg(long, default_value_t = 30.0)]
    median_session_min: f64,
    /// Shape of `--churn-model weibull` (below 1: many short sessions, a long tail).
    #[arg(long, default_value_t = 0.5)]
    weibull_shape: f64,
    /// Minutes between two replications of a held record by its holders (0 = none, only the publisher's
    /// republishing).
    #[arg(long, default_value_t = 60)]
    replicate_min: u64,
    /// Records accepted: `owned` (immutable and signed records only, the default) or `closed` (also
    /// unsigned records under any key, which anyone can overwrite: closed swarms only).
    #[arg(long, default_value = "owned")]
    record_policy: String,
    /// What the puts store: `signed` (by the putting node, under a random name), `immutable` (key = hash
    /// of the value) or `unchecked` (a random key; needs `--record-policy closed`).
    #[arg(long, default_value = "signed")]
    put_kind: String,
    /// Follow every put, once it has finished, with an update of its record (version 2) from the same
    /// node; the get comes after the update has finished and must return it (signed records).
    #[arg(long)]
    updates: bool,
    /// Values of a signed record a get waits for (0: until the k closest have answered).
    #[arg(long, default_value_t = 0)]
    get_quorum: usize,
    /// Disjoint paths per lookup (S/Kademlia; 1 = plain Kademlia, at most 8).
    #[arg(long, default_value_t = 1)]
    lookup_paths: usize,
}

fn main() -> std::process::ExitCode {
    let params = match Args::parse().params() {
        Ok(params) => params,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // The simulation runs on a worker of the thread pool, so that handing a window's nodes to the other
    // workers does not first hand the whole window over from the main thread.
    let r = match rayon::ThreadPoolBuilder::new().build() {
        Ok(pool) => pool.install(|| experiment::run(&params)),
        Err(_) => experiment::run(&params),
    };
    match r {
        Ok(r) => {
            print_report(&r);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dht-sim: impossible node configuration: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

impl Args {
    /// The experiment these arguments ask for, or what is wrong with them.
    fn params(&self) -> Result<Params, String> {
        if !(0.0..=1.0).contains(&self.churn)
            || !(0.0..1.0).contains(&self.loss)
            || !(0.0..1.0).contains(&self.malicious)
        {
            return Err("--churn must be in [0, 1], --loss and --malicious in [0, 1)".into());
        }
        if self.nodes < 2
            || self.k == 0
            || self.alpha == 0
            || self.rtt_min_ms > self.rtt_max_ms
            || !(1..=dht_core::lookup::MAX_PATHS).contains(&self.lookup_paths)
        {
            return Err("need --nodes >= 2, --k >= 1, --alpha >= 1, --rtt-min-ms <= --rtt-max-ms and 1 <= \
                        --lookup-paths <= 8"
                .into());
        }
        Ok(Params {
            sim: self.sim_config()?,
            nodes: self.nodes,
            lookups: self.lookups,
            puts: self.puts,
            churn: self.churn,
            join_interval_ms: self.join_interval_ms,
            lookup_interval_ms: self.lookup_interval_ms,
            value_size: self.value_size,
            malicious: self.malicious,
            weibull: self.weibull()?,
            put_kind: self.put_kind()?,
            updates: self.updates,
            progress: std::io::stderr().is_terminal() && self.nodes + self.lookups >= 5000,
        })
    }

    fn weibull(&self) -> Result<Option<experiment::WeibullChurn>, String> {
        match self.churn_model.as_str() {
            "uniform" => Ok(None),
            "weibull"
                if self.hours > 0.0
                    && self.hours <= 168.0
                    && self.median_session_min > 0.0
                    && self.weibull_shape > 0.0 =>
            {
                Ok(Some(experiment::WeibullChurn {
                    hours: self.hours,
                    median_session_min: self.median_session_min,
                    shape: self.weibull_shape,
                }))
            }
            "weibull" => {
                Err("--churn-model weibull needs 0 < --hours <= 168, --median-session-min > 0, --weibull-shape > 0"
                    .into())
            }
            other => Err(format!("--churn-model must be `uniform` or `weibull`, not {other:?}")),
        }
    }

    fn put_kind(&self) -> Result<experiment::PutKind, String> {
        match (self.put_kind.as_str(), self.record_policy.as_str()) {
            ("signed", _) => Ok(experiment::PutKind::Signed),
            ("immutable", _) if !self.updates => Ok(experiment::PutKind::Immutable),
            ("unchecked", "closed") => Ok(experiment::PutKind::Unchecked),
            ("immutable", _) => Err("--updates needs --put-kind signed (an immutable record has one version)".into()),
            ("unchecked", _) => Err("--put-kind unchecked needs --record-policy closed".into()),
            (other, _) => Err(format!("--put-kind must be `signed`, `immutable` or `unchecked`, not {other:?}")),
        }
    }

    /// The network model and the nodes' configuration.
    fn sim_config(&self) -> Result<SimConfig, String> {
        let record_policy = match self.record_policy.as_str() {
            "owned" => dht_core::RecordPolicy::Owned,
            "closed" => dht_core::RecordPolicy::ClosedSwarm,
            other => return Err(format!("--record-policy must be `owned` or `closed`, not {other:?}")),
        };
        let mut sim = SimConfig {
            seed: self.seed,
            rtt_min_ms: self.rtt_min_ms,
            rtt_max_ms: self.rtt_max_ms,
            loss: self.loss,
            ..SimConfig::default()
        };
        let node = &mut sim.node;
        node.k = self.k;
        node.alpha = self.alpha;
        node.stall_after = self.stall_after;
        node.adaptive_timeout = !self.fixed_timeout;
        node.request_retries = self.request_retries;
        node.widen_in_region = !self.no_widen;
        node.request_timeout = Duration::from_millis(self.request_timeout_ms.max(1));
        node.refresh_request_budget = self.refresh_budget;
        node.bucket_growth = self.bucket_growth;
        node.shed_after = Duration::from_secs(self.shed_after_min * 60);
        node.self_lookup_interval = Duration::from_secs(self.self_lookup_secs);
        node.join_refresh_buckets = self.join_refresh;
        node.record_policy = record_policy;
        node.get_quorum = self.get_quorum;
        node.lookup_paths = self.lookup_paths;
        node.replicate_interval = Duration::from_secs(self.replicate_min * 60);
        node.max_contacts_per_reply = node.max_contacts_per_reply.max(self.k);
        Ok(sim)
    }
}

/// Prints the figures, the last line as one JSON object.
fn print_report(r: &experiment::Report) {
    println!("dht-sim: {} nodes, seed {}, churn {}, loss {}", r.nodes, r.seed, r.churn, r.loss);
    println!(
        "  lookups  {:>6}  success {:.4}  hops p50 {} p99 {}  msgs/lookup {:.1}  latency p50 {} ms p95 {} ms",
        r.lookups, r.success_rate, r.hops_p50, r.hops_p99, r.msgs_per_lookup, r.latency_ms_p50, r.latency_ms_p95
    );
    if r.puts > 0 {
        println!(
            "  puts     {:>6}  acks mean {:.2}  latency p50 {} ms p90 {} ms  gets ok {:.4}",
            r.puts, r.put_acks_mean, r.put_latency_ms_p50, r.put_latency_ms_p90, r.get_success_rate
        );
        println!(
            "  accepted {} forged, {} stale; {} records shortened or lost at honest holders",
            r.forged_accepted, r.stale_accepted, r.shortened
        );
    }
    if let Some(rate) = r.records_retrievable_rate {
        println!("  records  retrievable at the end {rate:.4} ({} departures over the run)", r.departed);
    }
    let f = r.lookup_failures;
    if f.departed_in_result + f.joined_during_lookup + f.other > 0 {
        println!(
            "  failed lookups: {} held a node that left, {} missed a node that joined during the lookup, {} other; \
             success among nodes present at the start {:.4}",
            f.departed_in_result, f.joined_during_lookup, f.other, r.success_rate_present
        );
    }
    println!(
        "  network  {} messages, {} departed, {:.1} virtual s, {:.2} wall s, peak RSS {:.1} MiB ({} B/node)",
        r.messages_total,
        r.departed,
        r.virtual_s,
        r.wall_s,
        r.peak_rss_bytes as f64 / (1 << 20) as f64,
        r.rss_bytes_per_node
    );
    println!("{}", serde_json::to_string(r).expect("report serializes"));
}
