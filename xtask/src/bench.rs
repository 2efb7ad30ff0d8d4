//! `cargo xtask bench`: every benchmark, bounded in time and on loopback. Prints one JSON line per figure
//! (`{"name","value","unit"}`) and rewrites the generated table of BENCHMARKS.md (between its markers) with
//! the date, the machine and the commands.

use crate::{cargo, root, step, target_dir, WASM_TARGET};
use serde_json::{json, Value};
use std::process::Command;

const BEGIN: &str = "<!-- xtask bench: begin -->";
const END: &str = "<!-- xtask bench: end -->";

struct Figure {
    name: String,
    value: f64,
    unit: String,
    source: String,
}

#[derive(Default)]
struct Figures(Vec<Figure>);

impl Figures {
    fn add(&mut self, name: &str, value: f64, unit: &str, source: &str) {
        println!("{}", json!({"name": name, "value": value, "unit": unit}));
        self.0.push(Figure { name: name.into(), value, unit: unit.into(), source: source.into() });
    }

    /// Takes the `{"name","value","unit"}` lines a tool printed.
    fn take_lines(&mut self, stdout: &str, source: &str) {
        for (n, x, u) in figure_lines(stdout) {
            self.add(&n, x, &u, source);
        }
    }

    /// Runs the release binary `bin` with `args` (space-separated) and takes `fields` of the JSON object it
    /// prints last.
    fn measure(&mut self, bin: &str, args: &str, prefix: &str, fields: &[(&str, &str)]) -> Result<(), String> {
        let command = format!("{} {args}", bin.trim_start_matches("examples/")).trim_end().to_string();
        let out = run(&command, release(bin).args(args.split_whitespace()))?;
        self.take_fields(&out, &command, prefix, fields)
    }

    /// Takes fields of the one JSON object a tool printed last, as `prefix_field` figures.
    fn take_fields(&mut self, stdout: &str, source: &str, prefix: &str, fields: &[(&str, &str)]) -> Result<(), String> {
        let last = stdout.lines().rev().find(|l| l.starts_with('{')).ok_or(format!("{source}: no JSON line"))?;
        let v: Value = serde_json::from_str(last).map_err(|e| format!("{source}: {e}"))?;
        for (field, unit) in fields {
            if let Some(x) = v[*field].as_f64() {
                self.add(&format!("{prefix}_{field}"), x, unit, source);
            }
        }
        Ok(())
    }
}

/// Runs `cmd`, streaming its stderr; returns its stdout.
fn run(what: &str, cmd: &mut Command) -> Result<String, String> {
    eprintln!("==> {what}");
    let out = cmd.stderr(std::process::Stdio::inherit()).output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{what}: failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn release(bin: &str) -> Command {
    Command::new(target_dir().join("release").join(bin))
}

/// The `{"name","value","unit"}` lines of a tool's output, as (name, value, unit).
fn figure_lines(stdout: &str) -> impl Iterator<Item = (String, f64, String)> + '_ {
    stdout.lines().filter(|l| l.starts_with('{')).filter_map(|line| {
        let v = serde_json::from_str::<Value>(line).ok()?;
        Some((v["name"].as_str()?.to_string(), v["value"].as_f64()?, v["unit"].as_str()?.to_string()))
    })
}

/// Builds the core benchmark for wasm32 and its Node.js glue; returns the module to `require`.
fn wasm_module() -> Result<String, String> {
    crate::ensure_wasm_target()?;
    step(
        "dht-bench for wasm32 (release)",
        cargo().args(["build", "--release", "--locked", "-p", "dht-bench", "--lib", "--target", WASM_TARGET]),
    )?;
    let wasm = target_dir().join(WASM_TARGET).join("release/dht_bench.wasm");
    let out = root().join("target/bench-wasm");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let mut bindgen = wasm_bindgen_cli_support::Bindgen::new();
    bindgen.input_path(&wasm).nodejs(true).map_err(|e| format!("wasm-bindgen: {e:#}"))?.typescript(false);
    bindgen.generate(&out).map_err(|e| format!("wasm-bindgen: {e:#}"))?;
    Ok(out.join("dht_bench.js").display().to_string())
}

/// Runs a Node.js script that prints one JSON object; returns it.
fn node(what: &str, script: &str) -> Result<Value, String> {
    let stdout = run(what, Command::new("node").args(["-e", script]))
        .map_err(|e| format!("{e} (is Node.js installed? apt-get install nodejs)"))?;
    serde_json::from_str(stdout.trim()).map_err(|e| format!("node output {stdout:?}: {e}"))
}

/// Messages per second of the core workload in wasm32 under Node.js: a warm-up run, then the best of three
/// (as `dht-bench core` does natively).
fn core_wasm_rate(module: &str, messages: u32) -> Result<f64, String> {
    let script = format!(
        "const {{ CoreBench }} = require({module:?});
         const b = new CoreBench({messages}, 1);
         b.run();
         let best = Infinity, n = 0;
         for (let i = 0; i < 3; i++) {{
           const t0 = process.hrtime.bigint();
           n = b.run();
           best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
         }}
         console.log(JSON.stringify({{ rate: n / best }}));"
    );
    node("core workload in wasm32 under Node.js", &script)?["rate"].as_f64().ok_or("node printed no rate".into())
}

/// Milliseconds per id and microseconds per key pair tried for ids with 12 bits of work, in wasm32.
fn pow_wasm(module: &str) -> Result<(f64, f64), String> {
    let script = format!(
        "const t1 = process.hrtime.bigint();
         const tries = require({module:?}).makeIds(12, 8);
         const ms = Number(process.hrtime.bigint() - t1) / 1e6;
         console.log(JSON.stringify({{ pow_ms_per_id: ms / 8, pow_us_per_try: ms * 1000 / tries }}));"
    );
    let v = node("ids with proof of work in wasm32 under Node.js", &script)?;
    let num = |k: &str| v[k].as_f64().ok_or(format!("node printed no {k}"));
    Ok((num("pow_ms_per_id")?, num("pow_us_per_try")?))
}

/// Records signed and verified per second in wasm32 (the verifying time is that of signing and verifying
/// less that of signing alone).
fn sign_wasm(module: &str) -> Result<(f64, f64), String> {
    let script = format!(
        "const m = require({module:?});
         const time = (f) => {{ const t = process.hrtime.bigint(); const n = f(); return [n, Number(process.hrtime.bigint() - t) / 1e9]; }};
         const [signed, s] = time(() => m.signRecords(2000));
         const [verified, sv] = time(() => m.signAndVerify(2000));
         console.log(JSON.stringify({{ signs_per_s: signed / s, verifies_per_s: verified / Math.max(sv - s, 1e-9) }}));"
    );
    let v = node("ed25519 records signed and verified in wasm32 under Node.js", &script)?;
    let num = |k: &str| v[k].as_f64().ok_or(format!("node printed no {k}"));
    Ok((num("signs_per_s")?, num("verifies_per_s")?))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cores} cores ({model}), {mem_gib:.0} GiB")
}

/// Builds every benchmark in release, measures in a fixed order (each figure printed as it comes), then
/// rewrites the table of BENCHMARKS.md.
pub fn bench() -> Result<(), String> {
    build_benchmarks()?;
    let mut f = Figures::default();
    let started = std::time::Instant::now();
    codec_and_core(&mut f)?;
    simulator(&mut f)?;
    webrtc_link(&mut f)?;
    signaling_server(&mut f)?;
    files(&mut f)?;
    vs_libp2p(&mut f)?;
    write_table(&f, started.elapsed().as_secs())
}

/// The release binaries the workspace's benchmarks run (libp2p-compare and the wasm32 module are built
/// where they are measured).
fn build_benchmarks() -> Result<(), String> {
    step(
        "release builds",
        cargo().args([
            "build",
            "--release",
            "--locked",
            "-p",
            "dht-bench",
            "-p",
            "dht-sim",
            "-p",
            "signaling-server",
            "--bins",
        ]),
    )?;
    step(
        "link_bench (release)",
        cargo().args(["build", "--release", "--locked", "-p", "transport-webrtc", "--example", "link_bench"]),
    )
}

/// Codec and core: the codec figures, the core workload natively and in wasm32, and ids with proof of work.
fn codec_and_core(f: &mut Figures) -> Result<(), String> {
    let out = run("codec", release("dht-bench").arg("codec"))?;
    f.take_lines(&out, "dht-bench codec");
    let module = wasm_module()?;
    core_rounds(f, &module)?;
    let (pow_ms, pow_us) = pow_wasm(&module)?;
    let out = run("ids with proof of work, native", release("dht-bench").arg("pow"))?;
    f.take_lines(&out, "dht-bench pow");
    f.add("id_work_12_ms_per_id_wasm_node", pow_ms, "ms", "dht-bench (wasm32, Node.js)");
    f.add("id_work_us_per_try_wasm_node", pow_us, "us", "dht-bench (wasm32, Node.js)");
    let out = run("ed25519 records signed and verified, native", release("dht-bench").arg("sign"))?;
    f.take_lines(&out, "dht-bench sign");
    let (signs, verifies) = sign_wasm(&module)?;
    f.add("ed25519_signs_per_s_wasm_node", signs, "1/s", "dht-bench (wasm32, Node.js)");
    f.add("ed25519_verifies_per_s_wasm_node", verifies, "1/s", "dht-bench (wasm32, Node.js)");
    Ok(())
}

/// The core workload, native and wasm taking turns for five rounds: this machine's speed drifts by tens of
/// percent over seconds, so each round's ratio compares runs made side by side; the figures are the medians.
fn core_rounds(f: &mut Figures, module: &str) -> Result<(), String> {
    let messages = 200_000u32;
    let (mut native, mut wasm, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let out = run("core, native", release("dht-bench").args(["core", "--messages", &messages.to_string()]))?;
        let n = figure_lines(&out)
            .find(|(name, ..)| name == "core_msgs_per_s_native")
            .map(|(_, value, _)| value)
            .ok_or("dht-bench core printed no core_msgs_per_s_native")?;
        let w = core_wasm_rate(module, messages)?;
        native.push(n);
        wasm.push(w);
        ratio.push(n / w);
    }
    f.add("core_msgs_per_s_native", median(native), "msgs/s", "dht-bench core (median of 5)");
    f.add("core_msgs_per_s_wasm_node", median(wasm), "msgs/s", "dht-bench (wasm32, Node.js; median of 5)");
    f.add("wasm_native_ratio", median(ratio), "x", "native / wasm, median of 5 side-by-side rounds");
    Ok(())
}

/// The simulator: 10,000 nodes, the same under churn, then 100,000 nodes.
fn simulator(f: &mut Figures) -> Result<(), String> {
    let sim_fields: &[(&str, &str)] = &[
        ("success_rate", "ratio"),
        ("hops_p50", "hops"),
        ("hops_p99", "hops"),
        ("latency_ms_p50", "ms"),
        ("latency_ms_p95", "ms"),
        ("put_latency_ms_p50", "ms"),
        ("put_latency_ms_p90", "ms"),
        ("get_success_rate", "ratio"),
        ("wall_s", "s"),
        ("rss_bytes_per_node", "bytes"),
    ];
    f.measure("dht-sim", "--nodes 10000 --lookups 2000 --puts 500 --seed 1", "sim10k", sim_fields)?;
    f.measure(
        "dht-sim",
        "--nodes 10000 --lookups 2000 --puts 500 --seed 1 --churn 0.5 --lookup-interval-ms 1000",
        "sim_churn",
        &[("success_rate", "ratio"), ("success_rate_present", "ratio"), ("get_success_rate", "ratio")],
    )?;
    f.measure(
        "dht-sim",
        "--nodes 100000 --lookups 10000 --seed 1 --join-interval-ms 1 --lookup-interval-ms 10",
        "sim100k",
        &[("success_rate", "ratio"), ("hops_p50", "hops"), ("wall_s", "s"), ("rss_bytes_per_node", "bytes")],
    )
}

/// One WebRTC link through the whole stack, and one bare channel.
fn webrtc_link(f: &mut Figures) -> Result<(), String> {
    f.measure(
        "examples/link_bench",
        "",
        "rtc",
        &[
            ("link_setup_ms_p50", "ms"),
            ("link_setup_ms_max", "ms"),
            ("stack_mb_s", "MB/s"),
            ("raw_mb_s", "MB/s"),
            ("stack_raw_ratio", "x"),
            ("raw_burst_mb_s", "MB/s"),
        ],
    )
}

/// The signaling server: 10,000 peers, then 2,000 peers with abusers among them.
fn signaling_server(f: &mut Figures) -> Result<(), String> {
    f.measure(
        "signaling-load",
        "--peers 10000 --secs 10",
        "signaling",
        &[("peers_held", "peers"), ("relays_per_s", "relays/s"), ("relay_ms_p99", "ms")],
    )?;
    f.measure(
        "signaling-load",
        "--peers 2000 --secs 10 --abusers 200",
        "signaling_2k",
        &[
            ("relay_ms_p99", "ms"),
            ("abuse_relay_ms_p99", "ms"),
            ("abuse_p99_ratio", "x"),
            ("closed_for_cause", "connections"),
        ],
    )
}

/// A 64 MiB file between `dht-node` processes over TCP on loopback: published by one (a second holds it
/// too), fetched by a third that joined after; and the chunks a one-byte edit sends again.
fn files(f: &mut Figures) -> Result<(), String> {
    let what = "WEBDHT_FILE_MIB=64 cargo test --release -p dht-node --test files";
    let out = run(
        what,
        cargo()
            .args(["test", "--release", "--locked", "-p", "dht-node", "--test", "files", "--", "--nocapture"])
            .env("WEBDHT_FILE_MIB", "64"),
    )?;
    f.take_fields(
        &out,
        what,
        "file64",
        &[("publish_mb_s", "MB/s"), ("fetch_mb_s", "MB/s"), ("chunks", "chunks"), ("edit_sent", "chunks")],
    )
}

/// The same lookup workload on rust-libp2p's Kademlia (a crate outside the workspace, built here only).
fn vs_libp2p(f: &mut Figures) -> Result<(), String> {
    step(
        "libp2p-compare (release; outside the workspace)",
        cargo()
            .args(["build", "--release", "--locked", "--manifest-path", "libp2p-compare/Cargo.toml"])
            .env("CARGO_TARGET_DIR", target_dir()),
    )?;
    let out = run("webdht and rust-libp2p side by side", &mut release("libp2p-compare"))?;
    f.take_lines(&out, "libp2p-compare --nodes 200 --lookups 1000");
    Ok(())
}

/// Rewrites the generated section of BENCHMARKS.md.
fn write_table(f: &Figures, secs: u64) -> Result<(), String> {
    let path = root().join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut table = format!(
        "{BEGIN}\n_Generated by `cargo xtask bench` on {date}, {} ({secs} s). Each figure is one run; see the sections below for what they mean._\n\n| figure | value | unit | command |\n|---|---|---|---|\n",
        machine()
    );
    for fig in &f.0 {
        let value = if fig.value.fract() == 0.0 || fig.value.abs() >= 1000.0 {
            format!("{:.0}", fig.value)
        } else {
            format!("{:.3}", fig.value)
        };
        table.push_str(&format!("| {} | {value} | {} | `{}` |\n", fig.name, fig.unit, fig.source));
    }
    table.push_str(END);
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{table}{}", &text[..a], &text[b + END.len()..]),
        _ => {
            // First run: the table goes after the title.
            let cut = text.find("\n\n").map(|i| i + 2).unwrap_or(0);
            format!("{}## Latest `cargo xtask bench`\n\n{table}\n\n{}", &text[..cut], &text[cut..])
        }
    };
    std::fs::write(&path, new).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("==> BENCHMARKS.md table rewritten ({} figures)", f.0.len());
    Ok(())
}
