//! `cargo xtask fuzz [--secs S | --runs N] [--target NAME] [--sanitizer address|none]`: every `cargo fuzz`
//! target (or the one named) for S seconds or N inputs (nightly; installs cargo-fuzz when missing; AddressSanitizer unless told). Prints one JSON line per figure (`{"name","value","unit"}`): execs and crashes per target.
//! A crash leaves its input in `fuzz/artifacts/<target>/`: keep it as a regression test.

use crate::root;
use serde_json::json;
use std::process::Command;

/// The targets in `fuzz/fuzz_targets`.
pub const TARGETS: [&str; 7] = [
    "node",
    "frame_decoder",
    "message_decode",
    "handshake_responder",
    "signaling_message",
    "signaling_http",
    "rtc_offer",
];

fn ensure_cargo_fuzz() -> Result<(), String> {
    let nightly = Command::new("rustup").args(["run", "nightly", "rustc", "--version"]).output();
    if !nightly.map(|o| o.status.success()).unwrap_or(false) {
        crate::step(
            "rustup toolchain install nightly",
            Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]),
        )
        .map_err(|e| format!("{e}\n  install it by hand with: rustup toolchain install nightly"))?;
    }
    let have = Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output();
    if have.map(|o| o.status.success()).unwrap_or(false) {
        return Ok(());
    }
    crate::step("cargo install cargo-fuzz", Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .map_err(|e| format!("{e}\n  install it by hand with: cargo install cargo-fuzz"))
}

/// The last `stat::<name>: N` libFuzzer printed.
fn stat(output: &str, name: &str) -> Option<u64> {
    let key = format!("stat::{name}:");
    output.lines().rev().find_map(|l| l.trim().strip_prefix(&key).and_then(|v| v.trim().parse().ok()))
}

pub fn fuzz(args: &[String]) -> Result<(), String> {
    const USAGE: &str = "usage: cargo xtask fuzz [--secs S | --runs N] [--target NAME] [--sanitizer address|none]";
    let mut secs: u64 = 60;
    let mut runs: Option<u64> = None;
    let mut only: Option<&str> = None;
    let mut sanitizer = "address";
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(USAGE)?;
        match flag.as_str() {
            "--secs" => secs = value.parse().map_err(|_| "--secs needs a number of seconds")?,
            "--runs" => runs = Some(value.parse().map_err(|_| "--runs needs a number of inputs")?),
            "--target" if TARGETS.contains(&value.as_str()) => only = Some(value),
            "--target" => return Err(format!("--target must be one of {TARGETS:?}")),
            // The targets are safe Rust: without AddressSanitizer the handshake target (real x25519) runs
            // about four times as many inputs a second (6,200 against 1,450).
            "--sanitizer" if value == "address" || value == "none" => sanitizer = value,
            "--sanitizer" => return Err("--sanitizer must be address or none".into()),
            _ => return Err(USAGE.into()),
        }
    }
    ensure_cargo_fuzz()?;
    let mut failed = Vec::new();
    for target in TARGETS.into_iter().filter(|t| only.is_none_or(|o| o == *t)) {
        let limit = match runs {
            Some(n) => format!("-runs={n}"),
            None => format!("-max_total_time={secs}"),
        };
        eprintln!("==> fuzz {target}: {limit}");
        let out = Command::new("cargo")
            .current_dir(root())
            .args(["+nightly", "fuzz", "run", "--sanitizer", sanitizer, target, "--"])
            .args([limit, "-print_final_stats=1".into()])
            .output()
            .map_err(|e| format!("cargo fuzz: {e}"))?;
        let text = String::from_utf8_lossy(&out.stderr);
        let execs = stat(&text, "number_of_executed_units");
        let crashed = !out.status.success();
        if crashed {
            eprintln!(
                "{}",
                text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            failed.push(target);
        }
        let Some(execs) = execs else {
            return Err(format!("fuzz {target}: no libFuzzer stats (build failed?):\n{text}"));
        };
        println!("{}", json!({"name": format!("fuzz_{target}_execs"), "value": execs, "unit": "execs"}));
        println!(
            "{}",
            json!({"name": format!("fuzz_{target}_crashes"), "value": u64::from(crashed), "unit": "crashes"})
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("crashes in {failed:?}: inputs under fuzz/artifacts/"))
    }
}
