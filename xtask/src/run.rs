//! `cargo xtask run [--listen ADDR]`: the main job on embedded defaults. Builds the web bundle and the
//! binaries, starts the signaling server (serving the page) and one bootstrap `dht-node` (TCP + WebRTC,
//! data in `target/run/bootstrap-node`), prints the URL to open, and stops both cleanly on Ctrl-C.

use crate::web::{build_web, bundle_dir};
use crate::{cargo, root, step, target_dir};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const NODE_TCP: &str = "127.0.0.1:4000";

pub fn run(args: &[String]) -> Result<(), String> {
    let listen = match args {
        [] => DEFAULT_LISTEN.to_string(),
        [flag, addr] if flag == "--listen" => addr.clone(),
        _ => return Err("usage: cargo xtask run [--listen ADDR]".into()),
    };
    build_web()?;
    step(
        "signaling-server and dht-node (release)",
        cargo().args(["build", "--release", "--locked", "-p", "signaling-server", "-p", "dht-node"]),
    )?;
    let bin = |name: &str| target_dir().join("release").join(name);
    let data = root().join("target/run/bootstrap-node");
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;

    let mut server = Command::new(bin("signaling-server"))
        .args(["--listen", &listen, "--web-dir"])
        .arg(bundle_dir())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("signaling-server: {e}"))?;
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(Some(status)) = server.try_wait() {
        return Err(format!("signaling-server stopped at once ({status}): is {listen} in use? Try --listen"));
    }
    let url = format!("ws://{listen}/ws");
    // WebRTC host candidates on every interface but loopback, which is where a desktop browser's
    // candidates are (it offers none on loopback).
    let mut node = Command::new(bin("dht-node"))
        .args(["--listen", NODE_TCP, "--signaling", &url, "--rtc-udp", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .spawn()
        .map_err(|e| format!("dht-node: {e}"))?;

    eprintln!();
    eprintln!("  webdht is running:");
    eprintln!("    page             http://{listen}/   (open it in several tabs: each tab is a node)");
    eprintln!("    signaling        {url}");
    eprintln!("    bootstrap node   tcp:{NODE_TCP}, data in {}", data.display());
    eprintln!("  Ctrl-C stops both.");
    eprintln!();

    // Ctrl-C reaches the whole process group: the children shut down on their own (the node saves its
    // routing table); we only wait for them, and stop them if they linger.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let stopped = |c: &mut Child| matches!(c.try_wait(), Ok(Some(_)));
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) || stopped(&mut server) || stopped(&mut node) {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (name, child) in [("dht-node", &mut node), ("signaling-server", &mut server)] {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    eprintln!("{name} stopped ({status})");
                    break;
                }
                _ if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!("{name} killed after 10 s");
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    Ok(())
}

/// Calls `f` on Ctrl-C instead of dying, so the children can be waited for.
fn ctrlc_handler(f: impl Fn() + Send + 'static) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        rt.block_on(async {
            while tokio::signal::ctrl_c().await.is_ok() {
                f();
            }
        })
    });
    Ok(())
}
