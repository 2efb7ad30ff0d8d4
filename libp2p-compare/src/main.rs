//! `libp2p-compare`: the same lookup workload on webdht and on rust-libp2p's Kademlia, side by side.
//!
//! Each implementation runs in its own process (so CPU time and memory are its own): N nodes in one process
//! on one thread, over loopback TCP with each stack's own encryption (webdht's Noise link; libp2p's noise +
//! yamux), joining one after another through node 0; then L lookups of random targets from random nodes,
//! C at a time. Reported per implementation: lookup latency p50/p99, success (the k = 20 peers returned equal
//! the true 20 closest, computed from every node's id), CPU seconds of the lookup phase, and memory per node
//! (resident set growth over the process before the nodes were made, divided by N). Without `--impl` the
//! program runs both and prints `{"name","value","unit"}` lines, ratios as webdht / libp2p (below 1 is ahead).
//!
//! `cargo run --release --manifest-path libp2p-compare/Cargo.toml -- --nodes 200 --lookups 1000`

mod libp2p_side;
mod webdht_side;

use clap::{Parser, ValueEnum};
use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::future::Future;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// Peers a lookup returns and the success check compares (both stacks' default k).
pub const K: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Impl {
    Webdht,
    Libp2p,
}

/// Runs the lookup workload on webdht and rust-libp2p (each in a child process) and compares them.
#[derive(Debug, Parser)]
struct Args {
    /// Run one implementation in this process and print its JSON result (used by the parent run).
    #[arg(long = "impl", value_enum)]
    implementation: Option<Impl>,
    /// Nodes in the swarm.
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// Lookups of random targets from random nodes.
    #[arg(long, default_value_t = 1000)]
    lookups: usize,
    /// Lookups in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seed of the choice of sources and targets (and of webdht's cores).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Live links a webdht node keeps (the driver's default: 64). With 200 nodes in one process, 200 × this
    /// must stay under the open-file limit.
    #[arg(long, default_value_t = 64)]
    webdht_max_links: usize,
    /// How long libp2p keeps an idle connection, in ms (libp2p's default, 0, leaves its tables empty here:
    /// see libp2p_side.rs).
    #[arg(long, default_value_t = 10_000)]
    libp2p_idle_ms: u64,
    /// Deadline for the whole run of one implementation, in seconds.
    #[arg(long, default_value_t = 300)]
    deadline_s: u64,
}

/// What one implementation's run measured.
#[derive(Debug, Default)]
pub struct Measured {
    pub join_s: f64,
    pub latencies_ms: Vec<f64>,
    pub successes: usize,
    pub failures: usize,
    pub cpu_s_join: f64,
    pub cpu_s_lookups: f64,
    pub rss_bytes_per_node: f64,
    pub peak_rss_bytes: f64,
}

/// A swarm under test: node `i` looks up a random target and returns whether it found the true k closest.
pub trait Swarm {
    fn lookup(&self, from: usize, target_seed: [u8; 32]) -> impl Future<Output = Result<bool, String>>;
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.implementation {
        Some(which) => run_one(which, &args),
        None => run_both(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_one(which: Impl, args: &Args) -> Result<(), String> {
    if args.nodes < 2 || args.lookups == 0 || args.concurrency == 0 || args.webdht_max_links == 0 {
        return Err("need --nodes ≥ 2, --lookups ≥ 1, --concurrency ≥ 1, --webdht-max-links ≥ 1".into());
    }
    let files = raise_open_files(FILES_WANTED);
    eprintln!("    open files allowed: {files}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    let deadline = Duration::from_secs(args.deadline_s);
    let m = local.block_on(&rt, async {
        let work = async {
            match which {
                Impl::Webdht => {
                    let max_links = args.webdht_max_links;
                    webdht_side::run(args.nodes, args.lookups, args.concurrency, args.seed, max_links).await
                }
                Impl::Libp2p => {
                    let idle = Duration::from_millis(args.libp2p_idle_ms);
                    libp2p_side::run(args.nodes, args.lookups, args.concurrency, args.seed, idle).await
                }
            }
        };
        tokio::time::timeout(deadline, work).await.map_err(|_| format!("did not finish within {deadline:?}"))?
    })?;
    let mut lat = m.latencies_ms.clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    let done = m.successes + m.failures;
    println!(
        "{}",
        json!({
            "impl": format!("{which:?}").to_lowercase(),
            "nodes": args.nodes,
            "lookups": done,
            "success_rate": m.successes as f64 / done.max(1) as f64,
            "lookup_ms_p50": percentile(&lat, 0.50),
            "lookup_ms_p99": percentile(&lat, 0.99),
            "join_s": m.join_s,
            "cpu_s_join": m.cpu_s_join,
            "cpu_s_lookups": m.cpu_s_lookups,
            "rss_bytes_per_node": m.rss_bytes_per_node,
            "peak_rss_bytes": m.peak_rss_bytes,
        })
    );
    Ok(())
}

fn run_both(args: &Args) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for which in ["webdht", "libp2p"] {
        eprintln!("==> {which}: {} nodes, {} lookups, {} at a time", args.nodes, args.lookups, args.concurrency);
        let out = Command::new(&exe)
            .args(["--impl", which])
            .args(["--nodes", &args.nodes.to_string(), "--lookups", &args.lookups.to_string()])
            .args(["--concurrency", &args.concurrency.to_string(), "--seed", &args.seed.to_string()])
            .args(["--deadline-s", &args.deadline_s.to_string()])
            .args(["--libp2p-idle-ms", &args.libp2p_idle_ms.to_string()])
            .args(["--webdht-max-links", &args.webdht_max_links.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("{which}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{which}: failed ({})", out.status));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().rev().find(|l| l.starts_with('{')).ok_or(format!("{which}: no result"))?;
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{which}: {e}"))?;
        eprintln!("    {v}");
        results.push(v);
    }
    let figures: [(&str, &str); 5] = [
        ("lookup_ms_p50", "ms"),
        ("lookup_ms_p99", "ms"),
        ("cpu_s_lookups", "s"),
        ("rss_bytes_per_node", "bytes"),
        ("success_rate", "ratio"),
    ];
    for (field, unit) in figures {
        let ours = results[0][field].as_f64().unwrap_or(f64::NAN);
        let theirs = results[1][field].as_f64().unwrap_or(f64::NAN);
        println!("{}", json!({"name": format!("vs_libp2p_webdht_{field}"), "value": ours, "unit": unit}));
        println!("{}", json!({"name": format!("vs_libp2p_libp2p_{field}"), "value": theirs, "unit": unit}));
        if field != "success_rate" {
            let ratio = ours / theirs;
            println!("{}", json!({"name": format!("vs_libp2p_{field}_ratio"), "value": ratio, "unit": "x"}));
        }
    }
    Ok(())
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The indices of the `k` items nearest a target (by `distance`), leaving out `skip`.
pub fn true_closest<D: Ord>(n: usize, skip: usize, k: usize, distance: impl Fn(usize) -> D) -> Vec<usize> {
    let mut all: Vec<(D, usize)> = (0..n).filter(|&i| i != skip).map(|i| (distance(i), i)).collect();
    all.sort();
    all.into_iter().take(k).map(|(_, i)| i).collect()
}

/// Open files wanted: every connection has both of its ends in this process.
const FILES_WANTED: u64 = 200_000;

/// Raises this process's open-file limit toward `want` (the hard limit too where allowed, as root) and
/// returns the soft limit in force.
fn raise_open_files(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct they are given.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let raised = libc::rlimit { rlim_cur: want, rlim_max: want.max(lim.rlim_max) };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return want;
    }
    let soft = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } == 0 {
        return lim.rlim_max;
    }
    lim.rlim_cur
}

/// User + system CPU seconds of this process so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is a valid `who`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Resident and peak resident set size of this process, in bytes.
pub fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb * 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The measured part both sides share: the join (done by `join`), then the lookups, with CPU and memory.
pub async fn measure<S: Swarm>(
    n: usize,
    lookups: usize,
    concurrency: usize,
    seed: u64,
    build: impl Future<Output = Result<S, String>>,
) -> Result<Measured, String> {
    let rss_before = rss().0;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let swarm = build.await?;
    let join_s = t0.elapsed().as_secs_f64();
    let cpu_s_join = cpu_seconds() - cpu0;
    eprintln!("    {n} nodes joined in {join_s:.2} s ({cpu_s_join:.2} CPU s)");
    // Let the joins' last messages settle before the measured phase.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut rng = StdRng::seed_from_u64(seed);
    let plan: Vec<(usize, [u8; 32])> = (0..lookups).map(|_| (rng.gen_range(0..n), rng.gen())).collect();
    let cpu1 = cpu_seconds();
    let swarm = &swarm;
    let results: Vec<(f64, Result<bool, String>)> = stream::iter(plan)
        .map(|(from, target)| async move {
            let t = Instant::now();
            let r = swarm.lookup(from, target).await;
            (t.elapsed().as_secs_f64() * 1000.0, r)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let cpu_s_lookups = cpu_seconds() - cpu1;
    let (rss_after, peak) = rss();
    let mut m = Measured {
        join_s,
        cpu_s_join,
        cpu_s_lookups,
        rss_bytes_per_node: (rss_after - rss_before) / n as f64,
        peak_rss_bytes: peak,
        ..Measured::default()
    };
    for (ms, r) in results {
        match r {
            Ok(true) => {
                m.successes += 1;
                m.latencies_ms.push(ms);
            }
            Ok(false) => {
                m.failures += 1;
                m.latencies_ms.push(ms);
            }
            Err(e) => {
                m.failures += 1;
                eprintln!("    lookup failed: {e}");
            }
        }
    }
    Ok(m)
}
