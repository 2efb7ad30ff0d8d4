//! `cargo xtask e2e --crowd N`: N Chromium tabs opened at the same moment join a swarm of one signaling server
//! and one native node. Each browser starts first; then every tab is sent to the page at once. Reports each
//! tab's join time (from its page load) and where it went (`startSteps`), the p50 and the largest; then every
//! tab puts a record and gets the next tab's, to show the crowd works as a swarm. Fails unless every tab
//! joined and every put and get succeeded. A measurement, not part of `cargo xtask test`; the last line is
//! one JSON object.

use super::{percentile, spawn_native, start_chromedriver, Browser, Signaling, Tab, Tally, Tls};
use serde_json::json;
use std::time::Instant;

/// The run (see the module's documentation).
pub(super) async fn crowd(host: &str, netns: bool, count: usize) -> Result<(), String> {
    let tmp = tempfile::Builder::new().prefix("webdht-e2e-crowd").tempdir().map_err(|e| e.to_string())?;
    let out = crate::root().join("target/e2e");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    eprintln!("==> e2e --crowd: {count} tabs at once, 1 native node, on {host}");
    let started = Instant::now();
    let (tls, spki) = Tls::make(host, &tmp.path().join("tls"))?;
    let sig = Signaling::start(host, &out, &tls).await?;
    let (_native, _) = spawn_native("crowd-native", (host, &sig.ws, &tls), &[], tmp.path(), &out).await?;
    let (_chromedriver, driver) = start_chromedriver(&out).await?;
    let browser = Browser { driver, host_mode_flags: !netns, spki };
    let mut tabs = Vec::new();
    for t in 0..count {
        tabs.push(Tab::open(&browser, &tmp.path().join(format!("chrome-crowd-{t}"))).await?);
    }
    eprintln!("    {count} browsers started; loading the page in all at once");
    let mut loads = tokio::task::JoinSet::new();
    for (t, tab) in tabs.iter().enumerate() {
        let (client, url) = (tab.client.clone(), format!("{}?node=crowd{t}", sig.page));
        loads.spawn(async move { client.goto(&url).await.map_err(|e| format!("tab {t}: {e}")) });
    }
    while let Some(loaded) = loads.join_next().await {
        loaded.map_err(|e| e.to_string())??;
    }
    let (mut join_ms, mut joined) = (Vec::new(), Vec::new());
    for (t, tab) in tabs.iter().enumerate() {
        let ms = match tab.joined().await {
            Ok(ms) => ms,
            Err(e) => {
                let timings = tab.js("return window.webdht && window.webdht.timings", vec![]).await?;
                eprintln!("    tab {t}: {e}; page {timings}");
                continue;
            }
        };
        joined.push(t);
        let steps = tab.js("return window.webdht.node.stats().startSteps", vec![]).await?;
        let timings = tab.js("return window.webdht.timings", vec![]).await?;
        eprintln!("    tab {t} joined {ms:.0} ms after page load; page {timings}; inside start {steps}");
        join_ms.push(ms);
    }
    join_ms.sort_by(f64::total_cmp);
    let mut owners = Vec::new();
    for &t in &joined {
        owners.push(tabs[t].owner().await?);
    }
    let (mut puts, mut gets) = (Tally::default(), Tally::default());
    for &t in &joined {
        puts.add(tabs[t].put("crowd", &format!("from-{t}")).await? > 0);
    }
    for (i, &t) in joined.iter().enumerate() {
        let j = (i + 1) % joined.len();
        let next = joined[j];
        let (value, _) = tabs[t].get("crowd", &owners[j]).await?;
        let ok = value.as_deref() == Some(format!("from-{next}").as_str());
        if !ok {
            eprintln!("    tab {t}: get of tab {next}'s record answered {value:?}");
        }
        gets.add(ok);
    }
    let (p50, max) = (percentile(&join_ms, 0.5), percentile(&join_ms, 1.0));
    eprintln!(
        "    joined {} of {count}; join ms p50 / max {p50:.0} / {max:.0}; puts {}/{}, gets {}/{}",
        joined.len(),
        puts.ok,
        puts.total,
        gets.ok,
        gets.total
    );
    let passed = joined.len() == count && puts.all() && gets.all();
    let report = json!({
        "e2e": "crowd",
        "tabs": count,
        "joined": joined.len(),
        "netns": netns,
        "join_ms": join_ms,
        "join_ms_p50": p50,
        "join_ms_max": max,
        "puts": puts.rate(),
        "gets": gets.rate(),
        "passed": passed,
        "secs": started.elapsed().as_secs_f64(),
    });
    println!("{report}");
    if passed {
        Ok(())
    } else {
        Err("e2e --crowd failed: not every tab joined, or not every put and get succeeded".into())
    }
}
