//! `cargo xtask <task>`: the project's set-up and check commands.
//!
//! - `test`: formatting, clippy, all tests, and the wasm32 build of the browser-bound crates (installs the
//!   target).
//! - `run`: the main job on embedded defaults: web bundle, signaling server and a bootstrap node.
//! - `build-web`, `e2e`, `sim`, `bench`: see `usage`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod bench;
mod e2e;
mod fuzz;
mod run;
mod web;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("run") => run::run(&args[1..]),
        Some("sim") => sim(&args[1..]),
        Some("bench") => bench::bench(),
        Some("build-web") => web::build_web().map(|_| ()),
        Some("e2e") => e2e::e2e(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("wasm-test-runner") => web::wasm_test_runner(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <test|run|bench|build-web>");
            eprintln!("  test   fmt --check, clippy -D warnings, cargo test --workspace, wasm32 build + clippy");
            eprintln!(
                "  run    the web page, a signaling server and a bootstrap node on 127.0.0.1:8080 (Ctrl-C stops)"
            );
            eprintln!("  sim    the in-process simulator on a 2,000-node swarm");
            eprintln!("  build-web  web-node for wasm32 + JS glue + page, into target/web");
            eprintln!("  fuzz [--secs S] [--target NAME] [--sanitizer address|none]  cargo-fuzz targets for S seconds each (nightly)");
            eprintln!("  e2e [--tabs T] [--native N]  signaling server, native nodes and headless Chromium tabs");
            eprintln!(
                "  e2e --nat  the same across two NATs (one symmetric) with STUN/TURN (coturn), in namespaces (root)"
            );
            eprintln!(
                "  e2e --relay  two signaling servers, 15 + 3 tabs, 3 natives; the first server stops: links signaled over the DHT"
            );
            eprintln!("  e2e --crowd N  N tabs (2 to 32) load the page at once: join times (a measurement)");
            eprintln!("  bench  every benchmark, one JSON line per figure; rewrites BENCHMARKS.md's table (~6 min)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (a relative one from the workspace root, where
/// [`cargo`] runs), else `target/`. Outputs of the tasks themselves (`target/web`, `target/e2e`, ...) stay
/// under the root's `target/`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

pub(crate) fn step(what: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("==> {what}");
    let status = cmd.status().map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: failed ({status})"))
    }
}

pub(crate) const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Makes sure the wasm32 target is installed, installing it with rustup when missing.
pub(crate) fn ensure_wasm_target() -> Result<(), String> {
    let out = Command::new("rustc").args(["--print", "sysroot"]).output().map_err(|e| format!("rustc: {e}"))?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if Path::new(&sysroot).join("lib/rustlib").join(WASM_TARGET).exists() {
        return Ok(());
    }
    step("rustup target add wasm32-unknown-unknown", Command::new("rustup").args(["target", "add", WASM_TARGET]))
        .map_err(|e| format!("{e}\n  install it by hand with: rustup target add {WASM_TARGET}"))
}

fn test() -> Result<(), String> {
    step("cargo fmt --check", cargo().args(["fmt", "--all", "--check"]))?;
    step("cargo clippy", cargo().args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]))?;
    step("cargo test", cargo().args(["test", "--workspace", "--locked"]))?;
    ensure_wasm_target()?;
    // The browser-bound crates, and clippy on their wasm32-only code (the web backend of transport-webrtc).
    let wasm_crates = [
        "dht-core",
        "kvstore",
        "dht-driver",
        "dht-link",
        "dht-link-io",
        "signaling-protocol",
        "transport-webrtc",
        "web-node",
    ];
    let packages: Vec<&str> = wasm_crates.iter().flat_map(|c| ["-p", c]).collect();
    step(
        "browser-bound crates for wasm32",
        cargo().arg("build").args(&packages).args(["--locked", "--target", WASM_TARGET]),
    )?;
    step(
        "cargo clippy for wasm32",
        cargo().arg("clippy").args(&packages).args(["--locked", "--target", WASM_TARGET, "--", "-D", "warnings"]),
    )?;
    web::browser_tests(&["kvstore"])?;
    let e2e_args: Vec<String> = ["--tabs", "4", "--native", "3"].iter().map(|s| s.to_string()).collect();
    e2e::e2e(&e2e_args)?;
    // Without the signaling server: new links signaled over the DHT's links.
    e2e::e2e(&["--relay".to_string()])?;
    // Across NATs with TURN, in namespaces of its own (skipped with a message when not root).
    e2e::e2e(&["--nat".to_string()])?;
    eprintln!("==> all checks passed");
    Ok(())
}

/// `cargo xtask sim [args]`: the in-process simulator on a 2,000-node swarm (extra args go to dht-sim).
fn sim(extra: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--locked",
        "-p",
        "dht-sim",
        "--",
        "--nodes",
        "2000",
        "--lookups",
        "500",
        "--puts",
        "200",
    ]);
    cmd.args(extra);
    step("dht-sim", &mut cmd)
}
