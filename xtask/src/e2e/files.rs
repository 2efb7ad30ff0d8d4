//! The e2e's file step: tab 0 publishes a 20 MiB file through the page's Files panel (chunked and hashed in
//! its Web Worker), tab 1 fetches it through the same code as a `?file=HASH` link, and a new tab opened on
//! that link after the publish (it holds none of the chunks, so every one comes over the network) fetches it
//! as a person would; the page's progress bars, screenshots of each, the rates, and the longest
//! main-thread task of the publishing tab.

use super::{Tab, CALL_TIMEOUT};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file's size.
const FILE_MIB: usize = 20;

/// What the file step measured.
pub(super) struct FilesOutcome {
    pub publish_mb_s: f64,
    pub fetch_mb_s: f64,
    /// The longest main-thread task of the publishing tab while it published (0 when none passed 50 ms).
    pub longest_task_ms: f64,
    /// The fetched file is the published one (same length, same checksum).
    pub same: bool,
    pub chunks: u64,
    /// The tab opened on the link: its fetch rate (every chunk from the network), and whether its bytes are
    /// the published ones.
    pub link_fetch_mb_s: f64,
    pub link_same: bool,
    pub shots: Vec<PathBuf>,
}

/// A 64-bit checksum of bytes (FNV-1a over 32-bit words, two seeds) in page JS: the e2e's page is not a
/// secure context (served from the namespace's address over http), so WebCrypto's digest is not there.
/// Chunks are checked against their SHA-256 by the node; this only compares the two tabs' files.
const CHECKSUM: &str = r#"const checksum = (u8) => {
  const w = new Uint32Array(u8.buffer, u8.byteOffset, u8.length >> 2);
  let a = 0x811c9dc5, b = 0x01000193 ^ u8.length;
  for (let i = 0; i < w.length; i++) { a = Math.imul(a ^ w[i], 16777619) >>> 0; b = Math.imul(b ^ w[i] ^ i, 2246822519) >>> 0; }
  for (let i = w.length * 4; i < u8.length; i++) a = Math.imul(a ^ u8[i], 16777619) >>> 0;
  return a.toString(16).padStart(8, "0") + b.toString(16).padStart(8, "0");
};"#;

/// Makes the file in tab 0 (random bytes), puts it in the panel's file input and clicks Publish; returns
/// its checksum. The clock and the longest-task counter start at the click.
const START_PUBLISH: &str = r#"return (async () => {
  const size = arguments[0];
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(i + 65536, size)));
  const digest = checksum(bytes);
  const file = new File([bytes], "e2e.bin");
  const picked = new DataTransfer();
  picked.items.add(file);
  document.getElementById("file-in").files = picked.files;
  await new Promise((r) => setTimeout(r, 300));
  window.webdht.longestTaskMs = 0;
  window.e2ePublishT0 = performance.now();
  document.getElementById("publish").click();
  return digest;
})()"#;

/// The publish's state in tab 0: the link once done, the bar, the status line.
const PUBLISH_STATE: &str = r##"const a = document.querySelector("#file-link a");
const bar = document.getElementById("file-progress");
return { href: a ? a.href : null, value: bar.value, max: bar.max, status: document.getElementById("file-status").textContent,
         ms: performance.now() - window.e2ePublishT0, longest: window.webdht.longestTaskMs };"##;

/// Fetches `hash` in tab 1 through the page's `?file=` code; returns its time, size and checksum.
const FETCH: &str = r#"return (async () => {
  const t0 = performance.now();
  const blob = await window.webdht.openFileLink(arguments[0], "e2e.bin");
  const ms = performance.now() - t0;
  return { ms, size: blob.size, digest: checksum(new Uint8Array(await blob.arrayBuffer())) };
})()"#;

/// The checksum of the file behind the page's Save link, and the page's fetch figures.
const LINK_STATE: &str = r#"return (async () => {
  const f = window.webdht.lastFetch;
  if (!f) return null;
  if (f.error) return { error: f.error };
  const bytes = new Uint8Array(await (await fetch(f.url)).arrayBuffer());
  return { ms: f.ms, size: f.size, digest: checksum(bytes) };
})()"#;

/// Where new tabs are opened.
pub(super) struct TabSource<'a> {
    pub browser: &'a super::Browser,
    pub page: &'a str,
    pub profile: PathBuf,
}

pub(super) async fn files_between_tabs(
    tabs: &[Tab],
    out_dir: &Path,
    source: TabSource<'_>,
) -> Result<FilesOutcome, String> {
    let size = FILE_MIB << 20;
    let digest = tabs[0].js(&format!("{CHECKSUM}\n{START_PUBLISH}"), vec![json!(size)]).await?;
    let (state, mid_shot) = wait_for_publish(&tabs[0], out_dir).await?;
    let href = state["href"].as_str().unwrap_or_default().to_owned();
    let hash = href.split("file=").nth(1).and_then(|h| h.get(..64)).ok_or(format!("no file link: {state}"))?;
    let status = state["status"].as_str().unwrap_or_default();
    let chunks = status.split(' ').nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut shots = mid_shot.into_iter().collect::<Vec<_>>();
    shots.push(screenshot(&tabs[0], &out_dir.join("files-publish.png")).await?);

    // What the publishing tab's log said meanwhile: links that closed and peers dropped from its table
    // (requests timing out under the load) are what slow a publish down.
    let log = tabs[0].js("return document.getElementById('log').innerText", vec![]).await?;
    let count = |what: &str| log.as_str().unwrap_or_default().lines().filter(|l| l.contains(what)).count();
    eprintln!(
        "    tab 0 during the run: {} links closed, {} peers left its routing table, {} misbehaved",
        count("link closed"),
        count("routing table −"),
        count("misbehaved")
    );
    // And the counters of tab 0 and of a tab that stored the chunks (requests that timed out, stores refused).
    for t in [0, tabs.len() - 1] {
        let counters = tabs[t].js("return window.webdht.node.counters()", vec![]).await?;
        eprintln!("    tab {t} counters after the publish: {counters}");
    }
    let fetched = tabs[1].js(&format!("{CHECKSUM}\n{FETCH}"), vec![json!(hash)]).await?;
    shots.push(screenshot(&tabs[1], &out_dir.join("files-fetch.png")).await?);
    let same = fetched["size"].as_u64() == Some(size as u64) && fetched["digest"] == digest;
    let mb = size as f64 / 1e6;
    let (link_state, shot) = open_link(&source, hash, out_dir).await?;
    shots.push(shot);
    let link_same = link_state["size"].as_u64() == Some(size as u64) && link_state["digest"] == digest;
    let link_fetch_mb_s = mb / (link_state["ms"].as_f64().unwrap_or(f64::NAN) / 1e3);
    let outcome = FilesOutcome {
        publish_mb_s: mb / (state["ms"].as_f64().unwrap_or(f64::NAN) / 1e3),
        fetch_mb_s: mb / (fetched["ms"].as_f64().unwrap_or(f64::NAN) / 1e3),
        longest_task_ms: state["longest"].as_f64().unwrap_or(f64::NAN),
        same,
        chunks,
        link_fetch_mb_s,
        link_same,
        shots,
    };
    eprintln!(
        "    {FILE_MIB} MiB file: published by tab 0 at {:.1} MB/s ({status}), fetched by tab 1 at {:.1} MB/s, same bytes {same}, longest main-thread task while publishing {:.0} ms",
        outcome.publish_mb_s, outcome.fetch_mb_s, outcome.longest_task_ms
    );
    eprintln!(
        "    a new tab opened on the link fetched it at {:.1} MB/s (every chunk from the network), same bytes {link_same}",
        outcome.link_fetch_mb_s
    );
    Ok(outcome)
}

/// Opens a new tab on `?file=HASH`, as a person following the link would; waits (bounded) for its fetch
/// to end and returns its figures and checksum, and a screenshot.
async fn open_link(source: &TabSource<'_>, hash: &str, out_dir: &Path) -> Result<(Value, PathBuf), String> {
    let tab = Tab::open(source.browser, &source.profile).await?;
    let url = format!("{}?node=link&file={hash}&name=e2e.bin", source.page);
    tab.client.goto(&url).await.map_err(|e| format!("link tab: {e}"))?;
    let result = async {
        tab.joined().await.map_err(|e| format!("link tab: {e}"))?;
        let started = Instant::now();
        loop {
            let state = tab.js(&format!("{CHECKSUM}\n{LINK_STATE}"), vec![]).await?;
            if let Some(e) = state["error"].as_str() {
                return Err(format!("the link tab's fetch failed: {e}"));
            }
            if !state.is_null() {
                let shot = screenshot(&tab, &out_dir.join("files-link.png")).await?;
                return Ok((state, shot));
            }
            if started.elapsed() > CALL_TIMEOUT * 2 {
                return Err(format!("the link tab's fetch not done after {:?}", CALL_TIMEOUT * 2));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    .await;
    let _ = tab.client.close().await;
    result
}

/// Polls tab 0 until its publish shows a link (or fails); takes a screenshot the first time the bar is
/// part-way. Returns the final state and that screenshot.
async fn wait_for_publish(tab: &Tab, out_dir: &Path) -> Result<(Value, Option<PathBuf>), String> {
    let started = Instant::now();
    let mut mid_shot = None;
    loop {
        let state = tab.js(PUBLISH_STATE, vec![]).await?;
        if state["href"].is_string() {
            return Ok((state, mid_shot));
        }
        let status = state["status"].as_str().unwrap_or_default();
        if status.contains("rror") || status.contains("failed") {
            return Err(format!("publish failed in tab 0: {status}"));
        }
        let (value, max) = (state["value"].as_f64().unwrap_or(0.0), state["max"].as_f64().unwrap_or(1.0));
        if mid_shot.is_none() && value > 0.0 && value < max {
            mid_shot = Some(screenshot(tab, &out_dir.join("files-publishing.png")).await?);
        }
        if started.elapsed() > CALL_TIMEOUT * 2 {
            return Err(format!("publish not done after {:?}: {state}", CALL_TIMEOUT * 2));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(tab: &Tab, path: &Path) -> Result<PathBuf, String> {
    let png = tab.client.screenshot().await.map_err(|e| format!("screenshot: {e}"))?;
    std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.to_owned())
}
