//! `cargo xtask e2e [--tabs T] [--native N]`: a signaling server, N native nodes and T headless Chromium
//! tabs (driven through chromedriver) form one swarm; tabs and natives put values and get each other's;
//! one tab reloads and must find its records and routing table again. As root it runs inside a fresh
//! network namespace (loopback plus a veth pair whose both ends stay inside), so nothing leaves the machine
//! and Chromium has an interface to gather candidates on.

mod crowd;
mod files;
mod nat;
mod relay;

use crate::web::{build_web, bundle_dir, ensure_chromium, CHROMEDRIVER, CHROMIUM};
use crate::{cargo, root, step, target_dir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command as Proc};

/// Set inside the namespace, so the re-executed xtask runs the swarm instead of entering another one.
const IN_NETNS: &str = "WEBDHT_E2E_NETNS";
/// Our address inside the namespace (the veth end with the default route).
const NETNS_ADDR: &str = "10.213.0.1";
const NETNS_SETUP: &str = "ip link set lo up; ip link add v0 type veth peer name v1; ip link set v1 up; \
    ip addr add 10.213.0.1/24 dev v0; ip link set v0 up; ip route add default via 10.213.0.2 dev v0; exec \"$@\"";

/// Values each tab and each native node puts.
const PUTS_EACH: usize = 5;
/// Lookups each tab runs.
const LOOKUPS_EACH: usize = 20;
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

struct Opts {
    tabs: usize,
    native: usize,
    /// `--relay`: the run of [`relay`] instead (its own tabs and nodes).
    relay: bool,
    /// `--crowd N`: the run of [`crowd`] instead, with N tabs.
    crowd: Option<usize>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts { tabs: 4, native: 3, relay: false, crowd: None };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or(format!("{name} needs a number"))
        };
        match a.as_str() {
            "--tabs" => o.tabs = num("--tabs")?,
            "--native" => o.native = num("--native")?,
            "--relay" => o.relay = true,
            "--crowd" => match num("--crowd")? {
                n @ 2..=32 => o.crowd = Some(n),
                _ => return Err("e2e: --crowd takes 2 to 32 tabs".into()),
            },
            other => {
                return Err(format!("e2e: unknown argument {other} (use --tabs T --native N, --relay or --crowd N)"))
            }
        }
    }
    if o.tabs < 2 || o.tabs > 16 || o.native < 1 || o.native > 16 {
        return Err("e2e: --tabs must be 2..=16 and --native 1..=16".into());
    }
    Ok(o)
}

fn bin(name: &str) -> PathBuf {
    target_dir().join("debug").join(name)
}

/// Builds what the run needs, then runs it (in a network namespace when we can make one).
pub fn e2e(args: &[String]) -> Result<(), String> {
    if args.first().map(String::as_str) == Some("--nat") {
        return nat::nat(&args[1..]);
    }
    let opts = parse(args)?;
    if std::env::var_os(IN_NETNS).is_some() {
        return run_swarm(&opts, NETNS_ADDR, true);
    }
    build_web()?;
    step(
        "signaling-server and dht-node",
        cargo().args(["build", "--locked", "-p", "signaling-server", "-p", "dht-node"]),
    )?;
    step(
        "the storage-flood peer (dht-node's store_flood example)",
        cargo().args(["build", "--locked", "-p", "dht-node", "--example", "store_flood"]),
    )?;
    ensure_chromium()?;
    let can_unshare = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link add v0 type veth peer name v1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if can_unshare {
        let me = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let mut cmd = Command::new("unshare");
        cmd.args(["-n", "sh", "-ec", NETNS_SETUP, "sh"]).arg(me).arg("e2e").args(args).env(IN_NETNS, "1");
        return step("e2e inside a fresh network namespace", &mut cmd);
    }
    eprintln!("e2e: cannot create a network namespace (not root?): running on the host's loopback instead;");
    eprintln!("     Chromium gathers no loopback candidates, so browser↔browser links may fail there.");
    run_swarm(&opts, "127.0.0.1", false)
}

fn run_swarm(opts: &Opts, host: &str, netns: bool) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    if opts.relay {
        return rt.block_on(relay::relay_swarm(host, netns));
    }
    if let Some(count) = opts.crowd {
        return rt.block_on(crowd::crowd(host, netns, count));
    }
    rt.block_on(swarm(opts, host, netns))
}

/// A child process killed when dropped.
fn spawn(cmd: &mut Proc, log: &Path) -> Result<Child, String> {
    let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    cmd.stderr(file).kill_on_drop(true).spawn().map_err(|e| format!("cannot start {cmd:?}: {e}"))
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> F,
) -> Result<T, String> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if t0.elapsed() > timeout {
            return Err(format!("{what}: not ready after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One request line to a native node's control socket.
async fn ctl(data_dir: &Path, request: &str) -> Result<String, String> {
    ctl_in(None, data_dir, request).await
}

/// [`ctl`] to a node in the network namespace `ns` (its control socket is on that namespace's loopback).
async fn ctl_in(ns: Option<&str>, data_dir: &Path, request: &str) -> Result<String, String> {
    let addr = std::fs::read_to_string(data_dir.join("control.addr")).map_err(|e| format!("control.addr: {e}"))?;
    let token = std::fs::read_to_string(data_dir.join("control.token")).map_err(|e| format!("control.token: {e}"))?;
    let call = async {
        let connected = match ns {
            None => tokio::net::TcpStream::connect(addr.trim()).await,
            Some(ns) => nat::connect_in(ns, addr.trim()).await,
        };
        let mut s = connected.map_err(|e| e.to_string())?;
        s.write_all(format!("{} {request}\n", token.trim()).as_bytes()).await.map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.map_err(|e| e.to_string())?;
        Ok(line.trim().to_string())
    };
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| format!("control {request}: timed out"))?
}

struct Tab {
    client: fantoccini::Client,
}

/// How tabs are opened: the chromedriver they run under, and what their Chromium is told.
struct Browser {
    driver: String,
    /// Flags for a run on the host's loopback (no namespace): WebRTC may then use loopback addresses.
    host_mode_flags: bool,
    /// The run's server certificate key (base64 SHA-256 of its SubjectPublicKeyInfo), trusted for this
    /// run only.
    spki: String,
}

/// The run's certificates: an authority made for it, and the signaling server's certificate it signed, in
/// a directory (`ca.pem`, `cert.pem`, `key.pem`).
struct Tls {
    dir: PathBuf,
}

impl Tls {
    /// Makes them for `host` in `dir`; returns them and the certificate's key hash for Chromium.
    fn make(host: &str, dir: &Path) -> Result<(Tls, String), String> {
        let ca = signaling_server::tls::LocalCa::new(&[host.to_string()]).map_err(|e| format!("test CA: {e}"))?;
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        ca.write(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok((Tls { dir: dir.to_owned() }, ca.spki_sha256))
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Tab {
    /// A Chromium session on its own `profile`. The run's server certificate is trusted by its key (the
    /// pages are https, and the signaling socket wss, as in a deployment).
    async fn open(browser: &Browser, profile: &Path) -> Result<Tab, String> {
        let mut args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-features=WebRtcHideLocalIpsWithMdns".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", profile.display()),
            format!("--ignore-certificate-errors-spki-list={}", browser.spki),
        ];
        if browser.host_mode_flags {
            args.push("--allow-loopback-in-peer-connection".into());
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&browser.driver)
            .await
            .map_err(|e| format!("chromedriver session: {e}"))?;
        Ok(Tab { client })
    }

    /// Runs `script` (its promise awaited by WebDriver) with `args`.
    async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        tokio::time::timeout(CALL_TIMEOUT, self.client.execute(script, args))
            .await
            .map_err(|_| format!("script timed out: {script}"))?
            .map_err(|e| format!("script failed: {e}: {script}"))
    }

    /// Waits until the page's node joined; returns its join time (ms from page load).
    async fn joined(&self) -> Result<f64, String> {
        let t0 = Instant::now();
        loop {
            let v = self
                .js("return window.webdht ? [window.webdht.joinMs, window.webdht.error] : [null, null]", vec![])
                .await?;
            if let Some(err) = v[1].as_str() {
                return Err(format!("tab failed to start: {err}"));
            }
            if let Some(ms) = v[0].as_f64() {
                return Ok(ms);
            }
            if t0.elapsed() > JOIN_TIMEOUT {
                // Where the page got to: its steps so far, its state line and its last log lines.
                let js = "return { timings: window.webdht && window.webdht.timings, \
                          state: (document.getElementById('state') || {}).textContent, \
                          log: [...document.querySelectorAll('#log li')].slice(0, 8).map(l => l.textContent) }";
                let seen = self.js(js, vec![]).await.unwrap_or_default();
                return Err(format!("tab not joined after {JOIN_TIMEOUT:?}; the page: {seen}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Puts version 1 (or the next) of this tab's record `name`; the acks.
    async fn put(&self, name: &str, value: &str) -> Result<u64, String> {
        let r = self
            .js("return window.webdht.node.put(arguments[0], arguments[1])", vec![json!(name), json!(value)])
            .await?;
        Ok(r["acks"].as_u64().unwrap_or(0))
    }

    /// The key this tab signs its records with.
    async fn owner(&self) -> Result<String, String> {
        let r = self.js("return window.webdht.node.owner()", vec![]).await?;
        r.as_str().map(str::to_string).ok_or_else(|| format!("owner(): {r}"))
    }

    /// The value of `owner`'s record `name` and the get's time in ms.
    async fn get(&self, name: &str, owner: &str) -> Result<(Option<String>, f64), String> {
        let js = "return window.webdht.node.get(arguments[0], { owner: arguments[1] })";
        let r = self.js(js, vec![json!(name), json!(owner)]).await?;
        Ok((r["value"].as_str().map(str::to_string), r["ms"].as_f64().unwrap_or(f64::NAN)))
    }

    /// A network lookup for the ids closest to the hash of `name`: (peers found, ms).
    async fn find_node(&self, name: &str) -> Result<(u64, f64), String> {
        let r = self.js("return window.webdht.node.findNode(arguments[0])", vec![json!(name)]).await?;
        Ok((r["found"].as_u64().unwrap_or(0), r["ms"].as_f64().unwrap_or(f64::NAN)))
    }

    /// `owner`'s record `name` in this tab's own storage.
    async fn get_local(&self, name: &str, owner: &str) -> Result<Option<String>, String> {
        let js = "return window.webdht.node.getLocal(arguments[0], arguments[1])";
        let r = self.js(js, vec![json!(name), json!(owner)]).await?;
        Ok(r.as_str().map(str::to_string))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Default)]
struct Tally {
    ok: usize,
    total: usize,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        self.total += 1;
        self.ok += ok as usize;
    }
    /// Something was counted, and all of it succeeded.
    fn all(&self) -> bool {
        self.total > 0 && self.ok == self.total
    }
    fn rate(&self) -> f64 {
        if self.total == 0 {
            f64::NAN
        } else {
            self.ok as f64 / self.total as f64
        }
    }
}

/// The run, step by step: the signaling server, the native nodes, chromedriver and the tabs start; everyone
/// puts, gets and looks up; tabs are checked for the records they hold for others; one tab reloads; all
/// stops; then the summary.
async fn swarm(opts: &Opts, host: &str, netns: bool) -> Result<(), String> {
    let tmp = tempfile::Builder::new().prefix("webdht-e2e").tempdir().map_err(|e| e.to_string())?;
    let out_dir = root().join("target/e2e");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    eprintln!(
        "==> e2e: {} tabs, {} native nodes, on {host}{}",
        opts.tabs,
        opts.native,
        if netns { " (network namespace)" } else { "" }
    );
    let (tls, spki) = Tls::make(host, &tmp.path().join("tls"))?;
    let mut sig = Signaling::start(host, &out_dir, &tls).await?;
    let natives = start_natives(opts, host, &sig.ws, &tls, tmp.path(), &out_dir).await?;
    let (_chromedriver, driver) = start_chromedriver(&out_dir).await?;
    let browser = Browser { driver, host_mode_flags: !netns, spki };
    let (tabs, join_ms) = open_tabs(opts, &browser, &sig, host, tmp.path()).await?;
    for (t, tab) in tabs.iter().enumerate() {
        let timings = tab.js("return window.webdht.timings", vec![]).await?;
        let steps = tab.js("return window.webdht.node.stats().startSteps", vec![]).await?;
        // The page's own loads (ms from page load: start, end), the navigation's first.
        let loads = "const r = (e) => [e.name.split('/').pop() || e.name, Math.round(e.startTime), \
                     Math.round(e.responseEnd)]; \
                     return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).map(r)";
        let loads = tab.js(loads, vec![]).await?;
        eprintln!(
            "    tab {t} join steps (ms from page load): {timings}; inside start (ms each): {steps}; loads: {loads}"
        );
    }

    let owners = Owners::of(&tabs, &natives).await?;
    let joined = Swarm { opts, tabs: &tabs, natives: &natives, owners: &owners };
    let puts = joined.put_all().await?;
    let gets = joined.get_all().await?;
    let (lookups, lookup_ms) = joined.lookup_all().await?;
    let paths = LinkPaths::of(&tabs).await?;
    // What an id with 12 bits of proof of work costs in Chromium (Config::id_difficulty).
    let work = tabs[0].js("return window.webdht.idWorkCost(12, 8)", vec![]).await?;
    eprintln!("    ids with 12 bits of work in Chromium: {work}");
    let held_for_others = joined.held_for_others().await?;
    let source = files::TabSource { browser: &browser, page: &sig.page, profile: tmp.path().join("chrome-link") };
    let files = files::files_between_tabs(&tabs, &out_dir, source).await?;
    // A screenshot of a tab, then tab 0 reloads and must come back with its records and table.
    let shot = screenshot_form_get(&tabs[1], &owners.natives[0], &out_dir).await?;
    let reload_restored = reload_restores(&tabs[0]).await?;
    let signing_key = browser_keeps_the_key(&tabs[1]).await?;
    let tampered = tampered_wasm_is_refused(&browser, host, &tls, tmp.path(), &out_dir).await?;
    let victim = tabs.len() - 1;
    let flood = storage_flood(&tabs[victim], victim, &owners.tabs[victim], (&sig.ws, &tls), host).await?;

    for tab in tabs {
        let _ = tab.client.close().await;
    }
    drop(natives);
    let _ = sig.process.kill().await;
    let outcome = Outcome {
        join_ms,
        puts,
        gets,
        lookups,
        lookup_ms,
        work,
        held_for_others,
        reload_restored,
        signing_key,
        tampered,
        flood,
        shot,
        files,
        paths,
    };
    outcome.report(opts, netns)
}

/// The signaling server, serving the bundle.
struct Signaling {
    /// Its stdout, open for the whole run (the server writes to it after its first line).
    _stdout: Lines<BufReader<ChildStdout>>,
    process: Child,
    /// The WebSocket URL nodes signal through.
    ws: String,
    /// The page the tabs load.
    page: String,
}

impl Signaling {
    /// Starts the server on `host` (https and wss with `tls`) and waits for the line that says where it
    /// listens.
    async fn start(host: &str, out_dir: &Path, tls: &Tls) -> Result<Signaling, String> {
        Self::serving(host, &bundle_dir(), &out_dir.join("signaling.log"), tls).await
    }

    /// [`Signaling::start`] serving `web_dir`, logging to `log`.
    async fn serving(host: &str, web_dir: &Path, log: &Path, tls: &Tls) -> Result<Signaling, String> {
        Self::launch(Proc::new(bin("signaling-server")), host, web_dir, log, tls).await
    }

    /// [`Signaling::serving`] through `cmd` (the server's binary, or a launcher that runs it, with their
    /// own arguments already given).
    async fn launch(mut cmd: Proc, host: &str, web_dir: &Path, log: &Path, tls: &Tls) -> Result<Signaling, String> {
        cmd.args(["--listen", &format!("{host}:0"), "--web-dir"]).arg(web_dir).stdout(Stdio::piped());
        cmd.arg("--tls-cert").arg(tls.dir.join("cert.pem")).arg("--tls-key").arg(tls.dir.join("key.pem"));
        let mut process = spawn(&mut cmd, log)?;
        let mut lines = BufReader::new(process.stdout.take().ok_or("no stdout")?).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| "signaling server did not start".to_string())?
            .map_err(|e| e.to_string())?
            .and_then(|l| l.strip_prefix("listening ").map(str::to_string))
            .ok_or("signaling server did not say where it listens")?;
        Ok(Signaling { _stdout: lines, process, ws: format!("wss://{addr}/ws"), page: format!("https://{addr}/") })
    }
}

/// What a storage flood at a tab did, and what the tab kept.
struct Flood {
    tab: usize,
    /// The flooding peer's summary (`sent`, `stored`, `refused`, `bytes_per_record`).
    report: Value,
    own_kept: usize,
    own_total: usize,
    /// Records IndexedDB evicted to stay in budget, before and after.
    evicted: (u64, u64),
    /// The tab's JS heap in use (Chromium's `performance.memory`), before and after.
    heap_mib: (f64, f64),
}

impl Flood {
    /// Others' records may take 48 of the tab's 64 MiB (web-node's room for others).
    const ROOM_MIB: f64 = 48.0;

    fn stored_mib(&self) -> f64 {
        let per = self.report["bytes_per_record"].as_f64().unwrap_or(0.0);
        self.report["stored"].as_f64().unwrap_or(0.0) * per / f64::from(1 << 20)
    }

    /// The flood was taken in and held off: the tab kept every record of its own, IndexedDB evicted
    /// nothing, and what it stored for the flooder fits the room it gives others.
    fn held(&self) -> bool {
        self.own_kept == self.own_total && self.evicted.0 == self.evicted.1 && self.stored_mib() <= Self::ROOM_MIB
    }
}

/// A native peer (dht-node's `store_flood` example) stores 16 KiB records at tab `t` as fast as the link
/// lets it for 15 s, at the longest time to live: more than the tab's whole storage. The tab must keep its
/// own records, and store no more for the flooder than the room it gives others.
async fn storage_flood(tab: &Tab, t: usize, owner: &str, (ws, tls): (&str, &Tls), host: &str) -> Result<Flood, String> {
    const SNAPSHOT: &str = "return [window.webdht.node.stats().evicted, \
        performance.memory ? performance.memory.usedJSHeapSize / 1048576 : 0]";
    let before = tab.js(SNAPSHOT, vec![]).await?;
    let id = tab.js("return window.webdht.node.id()", vec![]).await?;
    let id = id.as_str().ok_or("the tab has no id")?.to_string();
    let mut cmd = Proc::new(bin("examples/store_flood"));
    cmd.args(["--signaling", ws, "--target", &id, "--secs", "15", "--size", "16384", "--udp", &format!("{host}:0")]);
    cmd.arg("--ca").arg(tls.ca());
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .map_err(|_| "the flooding peer did not finish in 90 s".to_string())?
        .map_err(|e| format!("store_flood: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(text.trim()).map_err(|e| format!("store_flood said {text:?}: {e}"))?;
    let after = tab.js(SNAPSHOT, vec![]).await?;
    let mut own_kept = 0;
    for j in 0..PUTS_EACH {
        let k = tab_key(t, j);
        own_kept += usize::from(tab.get_local(&k, owner).await?.as_deref() == Some(value_of(&k).as_str()));
    }
    Ok(Flood {
        tab: t,
        report,
        own_kept,
        own_total: PUTS_EACH,
        evicted: (before[0].as_u64().unwrap_or(0), after[0].as_u64().unwrap_or(0)),
        heap_mib: (before[1].as_f64().unwrap_or(0.0), after[1].as_f64().unwrap_or(0.0)),
    })
}

/// A copy of the bundle whose wasm has one byte changed, served by a second signaling server: the page must
/// refuse to run it (its hash was written into the page at build time). Returns the page's state and error.
async fn tampered_wasm_is_refused(
    browser: &Browser,
    host: &str,
    tls: &Tls,
    tmp: &Path,
    out_dir: &Path,
) -> Result<(String, String), String> {
    let dir = tmp.join("tampered-bundle");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(bundle_dir()).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        std::fs::copy(entry.path(), dir.join(entry.file_name())).map_err(|e| e.to_string())?;
    }
    let wasm = dir.join("web_node_bg.wasm");
    let mut bytes = std::fs::read(&wasm).map_err(|e| e.to_string())?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&wasm, bytes).map_err(|e| e.to_string())?;
    let mut sig = Signaling::serving(host, &dir, &out_dir.join("signaling-tampered.log"), tls).await?;
    let tab = Tab::open(browser, &tmp.join("chrome-tampered")).await?;
    tab.client.goto(&format!("{}?node=tampered", sig.page)).await.map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let seen = loop {
        let v =
            tab.js("return window.webdht ? [window.webdht.state, window.webdht.error] : [null, null]", vec![]).await?;
        let state = v[0].as_str().unwrap_or_default().to_string();
        if state == "refused" || state == "failed" || state.starts_with("online") || t0.elapsed() > JOIN_TIMEOUT {
            break (state, v[1].as_str().unwrap_or_default().to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = tab.client.close().await;
    let _ = sig.process.kill().await;
    Ok(seen)
}

/// A native node: its process (killed when dropped) and its data directory.
struct Native {
    _process: Child,
    dir: PathBuf,
}

/// Starts the native nodes (TCP + WebRTC) one after another, each joining through the signaling server's
/// peers (`ws`), and waits for each to answer on its control socket.
async fn start_natives(
    opts: &Opts,
    host: &str,
    ws: &str,
    tls: &Tls,
    tmp: &Path,
    out_dir: &Path,
) -> Result<Vec<Native>, String> {
    let mut natives = Vec::new();
    for n in 0..opts.native {
        let (child, dir) = spawn_native(&format!("native-{n}"), (host, ws, tls), &[], tmp, out_dir).await?;
        natives.push(Native { _process: child, dir });
    }
    Ok(natives)
}

/// Starts a `dht-node` named `name` (TCP and WebRTC on `host`, registered on `ws`, trusting the run's CA, its
/// data in `tmp/name`, its log in `out/name.log`) with `extra` arguments, and waits until its control socket
/// answers; returns the process and its data directory.
async fn spawn_native(
    name: &str,
    (host, ws, tls): (&str, &str, &Tls),
    extra: &[&str],
    tmp: &Path,
    out: &Path,
) -> Result<(Child, PathBuf), String> {
    let dir = tmp.join(name);
    let mut cmd = Proc::new(bin("dht-node"));
    cmd.args(["--listen", &format!("{host}:0"), "--signaling", ws, "--rtc-udp", &format!("{host}:0")])
        .arg("--ca")
        .arg(tls.ca())
        .arg("--data-dir")
        .arg(&dir)
        .args(extra)
        // `RUST_LOG` given to the e2e reaches the native nodes (to look into a run).
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    let child = spawn(&mut cmd, &out.join(format!("{name}.log")))?;
    let d = dir.clone();
    wait_for("native node", Duration::from_secs(30), || {
        let d = d.clone();
        async move { ctl(&d, "ID").await.ok() }
    })
    .await?;
    Ok((child, dir))
}

/// Starts chromedriver on a free port and waits until it takes connections; returns it and its URL.
async fn start_chromedriver(out_dir: &Path) -> Result<(Child, String), String> {
    let port = free_port()?;
    let mut cd = Proc::new(CHROMEDRIVER);
    cd.arg(format!("--port={port}")).stdout(Stdio::null());
    let chromedriver = spawn(&mut cd, &out_dir.join("chromedriver.log"))?;
    let driver = format!("http://127.0.0.1:{port}");
    wait_for("chromedriver", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await?;
    Ok((chromedriver, driver))
}

/// Opens the tabs, each with its own Chromium profile, on `page` as node `tab{t}`, each once the one before
/// has joined: every browser runs on this machine, and a browser starting while a tab joins takes the CPU
/// the join needs (a user's tab joins alone on its machine; `e2e --crowd` measures tabs joining at once).
/// Tab 1 is given a signaling server that does not answer before the real one (it must register there).
/// Returns the tabs and their join times (ms from page load).
async fn open_tabs(
    opts: &Opts,
    browser: &Browser,
    sig: &Signaling,
    host: &str,
    tmp: &Path,
) -> Result<(Vec<Tab>, Vec<f64>), String> {
    let (mut tabs, mut join_ms) = (Vec::new(), Vec::new());
    for t in 0..opts.tabs {
        let tab = Tab::open(browser, &tmp.join(format!("chrome-{t}"))).await?;
        let servers = if t == 1 { format!("&signaling=wss://{host}:1/ws,{}", sig.ws) } else { String::new() };
        let url = format!("{}?node=tab{t}{servers}", sig.page);
        tab.client.goto(&url).await.map_err(|e| format!("tab {t}: {e}"))?;
        let ms = tab.joined().await.map_err(|e| format!("tab {t}: {e}"))?;
        eprintln!("    tab {t} joined {ms:.0} ms after page load");
        tabs.push(tab);
        join_ms.push(ms);
    }
    Ok((tabs, join_ms))
}

/// The key of tab `t`'s `j`th value.
fn tab_key(t: usize, j: usize) -> String {
    format!("tab{t}-{j}")
}

/// The key of native node `n`'s `j`th value.
fn native_key(n: usize, j: usize) -> String {
    format!("native{n}-{j}")
}

/// The value put under `key`.
fn value_of(key: &str) -> String {
    format!("value-of-{key}")
}

/// The joined swarm the checks run on.
struct Swarm<'a> {
    opts: &'a Opts,
    tabs: &'a [Tab],
    natives: &'a [Native],
    owners: &'a Owners,
}

/// The keys the tabs and the native nodes sign their records with: a record is read by owner and name.
struct Owners {
    tabs: Vec<String>,
    natives: Vec<String>,
}

impl Owners {
    async fn of(tabs: &[Tab], natives: &[Native]) -> Result<Self, String> {
        let mut owners = Owners { tabs: Vec::new(), natives: Vec::new() };
        for tab in tabs {
            owners.tabs.push(tab.owner().await?);
        }
        for native in natives {
            let answer = ctl(&native.dir, "OWNER").await?;
            owners.natives.push(answer.strip_prefix("OWNER ").ok_or(format!("OWNER: {answer}"))?.to_owned());
        }
        Ok(owners)
    }
}

/// Gets, by who asked whom, and the time each took. Gets mostly end at home (in a swarm smaller than k every
/// node holds every record): their times are kept apart from those of lookups, which always cross the network.
#[derive(Default)]
struct Gets {
    browser_browser: Tally,
    browser_native: Tally,
    native_browser: Tally,
    ms: Vec<f64>,
}

impl Swarm<'_> {
    /// Every tab, then every native node, puts its values; counts the acknowledged puts.
    async fn put_all(&self) -> Result<Tally, String> {
        let mut puts = Tally::default();
        for (t, tab) in self.tabs.iter().enumerate() {
            for j in 0..PUTS_EACH {
                let k = tab_key(t, j);
                puts.add(tab.put(&k, &value_of(&k)).await? > 0);
            }
        }
        for (n, native) in self.natives.iter().enumerate() {
            for j in 0..PUTS_EACH {
                let k = native_key(n, j);
                puts.add(ctl(&native.dir, &format!("PUT {k} {}", value_of(&k))).await?.starts_with("OK seq="));
            }
        }
        Ok(puts)
    }

    /// Everyone gets the others' values: each tab the other tabs' and the native nodes', then each native
    /// node the tabs'.
    async fn get_all(&self) -> Result<Gets, String> {
        let mut gets = Gets::default();
        for (t, tab) in self.tabs.iter().enumerate() {
            for other in (0..self.opts.tabs).filter(|o| *o != t) {
                for j in 0..PUTS_EACH {
                    let k = tab_key(other, j);
                    let (v, ms) = tab.get(&k, &self.owners.tabs[other]).await?;
                    gets.browser_browser.add(v.as_deref() == Some(value_of(&k).as_str()));
                    gets.ms.push(ms);
                }
            }
            for n in 0..self.opts.native {
                for j in 0..PUTS_EACH {
                    let k = native_key(n, j);
                    let (v, ms) = tab.get(&k, &self.owners.natives[n]).await?;
                    gets.browser_native.add(v.as_deref() == Some(value_of(&k).as_str()));
                    gets.ms.push(ms);
                }
            }
        }
        for native in self.natives {
            for t in 0..self.opts.tabs {
                for j in 0..PUTS_EACH {
                    let k = tab_key(t, j);
                    let t0 = Instant::now();
                    let reply = ctl(&native.dir, &format!("GET {k} {}", self.owners.tabs[t])).await?;
                    gets.ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                    gets.native_browser.add(reply == format!("VALUE {}", value_of(&k)));
                }
            }
        }
        Ok(gets)
    }

    /// Lookups from every tab for random targets; one succeeds when it finds every other node (up to 20).
    /// Returns the tally and the times (ms).
    async fn lookup_all(&self) -> Result<(Tally, Vec<f64>), String> {
        let mut lookup_ms = Vec::new();
        let mut lookups = Tally::default();
        for (t, tab) in self.tabs.iter().enumerate() {
            for j in 0..LOOKUPS_EACH {
                let (found, ms) = tab.find_node(&format!("target-{t}-{j}")).await?;
                lookups.add(found as usize >= (self.opts.tabs + self.opts.native - 1).min(20));
                lookup_ms.push(ms);
            }
        }
        Ok((lookups, lookup_ms))
    }

    /// Every tab serves: how many of the records others put each tab holds.
    async fn held_for_others(&self) -> Result<Vec<usize>, String> {
        let mut held_for_others = Vec::new();
        for (t, tab) in self.tabs.iter().enumerate() {
            let mut held = 0;
            for other in (0..self.opts.tabs).filter(|o| *o != t) {
                for j in 0..PUTS_EACH {
                    held += tab.get_local(&tab_key(other, j), &self.owners.tabs[other]).await?.is_some() as usize;
                }
            }
            for n in 0..self.opts.native {
                for j in 0..PUTS_EACH {
                    held += tab.get_local(&native_key(n, j), &self.owners.natives[n]).await?.is_some() as usize;
                }
            }
            held_for_others.push(held);
        }
        Ok(held_for_others)
    }
}

/// Shows a get through the page's own form on `tab`, as a person would use it, and saves a screenshot of it
/// as `tab1.png` in `out_dir`; returns its path.
async fn screenshot_form_get(tab: &Tab, owner: &str, out_dir: &Path) -> Result<PathBuf, String> {
    let form = "document.getElementById('key').value = arguments[0]; \
                document.getElementById('owner-in').value = arguments[1]; document.getElementById('get').click();";
    tab.js(form, vec![json!(native_key(0, 0)), json!(owner)]).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the get, and one page refresh cycle
    let shot = out_dir.join("tab1.png");
    let png = tab.client.screenshot().await.map_err(|e| format!("screenshot: {e}"))?;
    std::fs::write(&shot, png).map_err(|e| e.to_string())?;
    Ok(shot)
}

/// Reloads tab 0, which must come back with the same id, its own records and its routing table.
async fn reload_restores(tab: &Tab) -> Result<bool, String> {
    let id_before = tab.js("return window.webdht.node.id()", vec![]).await?;
    let owner_before = tab.owner().await?;
    tab.client.refresh().await.map_err(|e| format!("reload: {e}"))?;
    let rejoin_ms = tab.joined().await.map_err(|e| format!("tab 0 after reload: {e}"))?;
    let stats = tab.js("return window.webdht.node.stats()", vec![]).await?;
    let id_after = tab.js("return window.webdht.node.id()", vec![]).await?;
    let owner = tab.owner().await?;
    let own_local = tab.get_local(&tab_key(0, 0), &owner).await?;
    let reload_restored = id_before == id_after
        && owner == owner_before
        && stats["restoredRecords"].as_u64().unwrap_or(0) > 0
        && stats["restoredContacts"].as_u64().unwrap_or(0) > 0
        && own_local.is_some();
    eprintln!(
        "    tab 0 reloaded: same id {}, same owner {}, {stats}, rejoined in {rejoin_ms:.0} ms",
        id_before == id_after,
        owner == owner_before
    );
    Ok(reload_restored)
}

/// Where the tab's signing key lives (`signingKeyKind()`): Chromium has ed25519 in WebCrypto, so
/// `"webcrypto"`, and then the key must refuse to be exported.
async fn browser_keeps_the_key(tab: &Tab) -> Result<String, String> {
    let js = "const n = window.webdht.node; let e = null; \
              try { n.exportSigningKey(); } catch (err) { e = String(err.message || err); } \
              return [n.signingKeyKind(), e];";
    let r = tab.js(js, vec![]).await?;
    let kind = r[0].as_str().unwrap_or("?").to_string();
    let refused = r[1].as_str().is_some_and(|m| m.contains("cannot be exported"));
    eprintln!("    tab 1 signing key: {kind}, export refused: {refused}");
    Ok(if kind == "webcrypto" && !refused { format!("{kind} (exported!)") } else { kind })
}

/// What the run measured.
struct Outcome {
    join_ms: Vec<f64>,
    puts: Tally,
    gets: Gets,
    lookups: Tally,
    lookup_ms: Vec<f64>,
    /// The cost of ids with proof of work in Chromium, as the page reports it.
    work: Value,
    held_for_others: Vec<usize>,
    reload_restored: bool,
    /// Where tab 1's signing key lives (`"webcrypto"` expected in Chromium).
    signing_key: String,
    /// What a page served with a tampered wasm showed (`"refused"` expected) and its message.
    tampered: (String, String),
    flood: Flood,
    shot: PathBuf,
    files: files::FilesOutcome,
    paths: LinkPaths,
}

/// How the tabs' live links travel, as their pages show it (`peers()`' `path`).
struct LinkPaths {
    /// Links by path kind (`host`, `srflx`, `prflx`, `relay`), counted at both ends.
    kinds: std::collections::BTreeMap<String, usize>,
    /// Setup times of the links this end dialed (ms, sorted).
    dialed_setup_ms: Vec<f64>,
    /// Of those, when the answer had come (ms from the offer, sorted).
    dialed_signaled_ms: Vec<f64>,
    /// Of those, the links to native nodes (ms, sorted).
    dialed_to_native_ms: Vec<f64>,
    /// Live peers shown without a path (expected none: every link of a tab is WebRTC).
    missing: usize,
}

impl LinkPaths {
    async fn of(tabs: &[Tab]) -> Result<LinkPaths, String> {
        let mut paths = LinkPaths {
            kinds: Default::default(),
            dialed_setup_ms: Vec::new(),
            dialed_signaled_ms: Vec::new(),
            dialed_to_native_ms: Vec::new(),
            missing: 0,
        };
        for tab in tabs {
            let peers = tab.js("return window.webdht.node.peers()", vec![]).await?;
            for peer in peers.as_array().ok_or_else(|| format!("peers(): {peers}"))? {
                let path = &peer["path"];
                let Some(kind) = path["kind"].as_str() else {
                    paths.missing += 1;
                    continue;
                };
                *paths.kinds.entry(kind.to_string()).or_default() += 1;
                if path["dialed"].as_bool() == Some(true) {
                    let ms = path["setupMs"].as_f64().unwrap_or(f64::NAN);
                    paths.dialed_setup_ms.push(ms);
                    paths.dialed_signaled_ms.push(path["signaledMs"].as_f64().unwrap_or(f64::NAN));
                    let addrs = peer["addrs"].as_array().into_iter().flatten().filter_map(Value::as_str);
                    if addrs.into_iter().any(|a| a.starts_with("tcp:")) {
                        paths.dialed_to_native_ms.push(ms);
                    }
                }
            }
        }
        let steps: Vec<String> =
            paths.dialed_signaled_ms.iter().zip(&paths.dialed_setup_ms).map(|(a, d)| format!("{a}/{d}")).collect();
        eprintln!("    dialed links' setup (answer in / link authenticated, ms from the offer): {}", steps.join(" "));
        paths.dialed_setup_ms.sort_by(f64::total_cmp);
        paths.dialed_signaled_ms.sort_by(f64::total_cmp);
        paths.dialed_to_native_ms.sort_by(f64::total_cmp);
        Ok(paths)
    }
}

impl Outcome {
    /// Prints the summary, a table on stderr and one JSON line on stdout; fails if any check failed.
    fn report(mut self, opts: &Opts, netns: bool) -> Result<(), String> {
        self.join_ms.sort_by(f64::total_cmp);
        self.lookup_ms.sort_by(f64::total_cmp);
        self.gets.ms.sort_by(f64::total_cmp);
        let g = &self.gets;
        let all = Tally {
            ok: g.browser_browser.ok + g.browser_native.ok + g.native_browser.ok + self.puts.ok,
            total: g.browser_browser.total + g.browser_native.total + g.native_browser.total + self.puts.total,
        };
        self.print_table();
        println!("{}", self.json(opts, netns, &all));
        let (lookups, held) = (&self.lookups, &self.held_for_others);
        if all.ok != all.total
            || lookups.ok != lookups.total
            || !self.reload_restored
            || self.signing_key != "webcrypto"
            || self.tampered.0 != "refused"
            || !self.flood.held()
            || held.contains(&0)
            || !self.files.same
            || !self.files.link_same
            || self.paths.missing > 0
        {
            return Err("e2e: some checks failed (see the summary above)".into());
        }
        Ok(())
    }

    /// The summary for people, on stderr (times sorted).
    fn print_table(&self) {
        let (g, join_ms, lookup_ms) = (&self.gets, &self.join_ms, &self.lookup_ms);
        eprintln!("e2e summary");
        eprintln!("  puts acknowledged        {}/{}", self.puts.ok, self.puts.total);
        eprintln!("  browser → browser gets   {}/{}", g.browser_browser.ok, g.browser_browser.total);
        eprintln!("  browser → native gets    {}/{}", g.browser_native.ok, g.browser_native.total);
        eprintln!("  native → browser gets    {}/{}", g.native_browser.ok, g.native_browser.total);
        eprintln!("  join ms p50 / max        {:.0} / {:.0}", percentile(join_ms, 0.5), percentile(join_ms, 1.0));
        eprintln!("  lookup ms p50 / p99      {:.1} / {:.1}", percentile(lookup_ms, 0.5), percentile(lookup_ms, 0.99));
        eprintln!("  lookups that found all   {}/{}", self.lookups.ok, self.lookups.total);
        eprintln!("  get ms p50 / p99         {:.1} / {:.1}", percentile(&g.ms, 0.5), percentile(&g.ms, 0.99));
        eprintln!("  records held for others  {:?} (per tab)", self.held_for_others);
        eprintln!("  reload restored          {}", self.reload_restored);
        eprintln!("  signing key (tab 1)      {} (non-extractable expected)", self.signing_key);
        eprintln!("  tampered wasm            {}: {}", self.tampered.0, self.tampered.1);
        let setup = &self.paths.dialed_setup_ms;
        eprintln!(
            "  tab link paths           {:?}, {} without a path; setup ms p50 / max {:.0} / {:.0} ({} dialed; \
             to natives p50 {:.0} of {})",
            self.paths.kinds,
            self.paths.missing,
            percentile(setup, 0.5),
            percentile(setup, 1.0),
            setup.len(),
            percentile(&self.paths.dialed_to_native_ms, 0.5),
            self.paths.dialed_to_native_ms.len()
        );
        eprintln!(
            "  dialed setup p50         answer in {:.0} ms, link authenticated {:.0} ms",
            percentile(&self.paths.dialed_signaled_ms, 0.5),
            percentile(setup, 0.5)
        );
        let fl = &self.flood;
        eprintln!(
            "  storage flood at tab {}  {} stores sent, {} stored ({:.1} MiB), refused {}; own records kept {}/{}, \
             evicted by IndexedDB {} → {}, JS heap {:.0} → {:.0} MiB",
            fl.tab,
            fl.report["sent"],
            fl.report["stored"],
            fl.stored_mib(),
            fl.report["refused"],
            fl.own_kept,
            fl.own_total,
            fl.evicted.0,
            fl.evicted.1,
            fl.heap_mib.0,
            fl.heap_mib.1
        );
        eprintln!("  screenshot               {}", self.shot.display());
        let f = &self.files;
        eprintln!(
            "  20 MiB file, tab → tab   publish {:.1} MB/s, fetch {:.1} MB/s, same {}",
            f.publish_mb_s, f.fetch_mb_s, f.same
        );
        eprintln!(
            "  ?file= link, new tab     fetch {:.1} MB/s (every chunk from the network), same {}",
            f.link_fetch_mb_s, f.link_same
        );
        eprintln!("  longest task publishing  {:.0} ms (main thread of the publishing tab)", f.longest_task_ms);
        eprintln!(
            "  file screenshots         {}",
            f.shots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ")
        );
    }

    /// The summary as one JSON object (times sorted; `all` tallies the puts and every kind of get).
    fn json(&self, opts: &Opts, netns: bool, all: &Tally) -> Value {
        let (g, join_ms, lookup_ms) = (&self.gets, &self.join_ms, &self.lookup_ms);
        json!({
            "tabs": opts.tabs,
            "native": opts.native,
            "netns": netns,
            "join_ms_p50": percentile(join_ms, 0.5),
            "join_ms_max": percentile(join_ms, 1.0),
            "lookup_ms_p50": percentile(lookup_ms, 0.5),
            "lookup_ms_p99": percentile(lookup_ms, 0.99),
            "get_ms_p50": percentile(&g.ms, 0.5),
            "get_ms_p99": percentile(&g.ms, 0.99),
            "lookup_success_rate": self.lookups.rate(),
            "put_get_success_rate": all.rate(),
            "browser_browser_rate": g.browser_browser.rate(),
            "browser_native_rate": g.browser_native.rate(),
            "native_browser_rate": g.native_browser.rate(),
            "held_for_others_min": self.held_for_others.iter().min().copied().unwrap_or(0),
            "reload_restored": self.reload_restored,
            "signing_key": self.signing_key,
            "tampered_wasm": self.tampered.0,
            "tab_link_paths": self.paths.kinds,
            "tab_link_setup_ms_p50": percentile(&self.paths.dialed_setup_ms, 0.5),
            "tab_link_setup_ms_max": percentile(&self.paths.dialed_setup_ms, 1.0),
            "tab_link_signaled_ms_p50": percentile(&self.paths.dialed_signaled_ms, 0.5),
            "tab_link_setup_to_natives_ms_p50": percentile(&self.paths.dialed_to_native_ms, 0.5),
            "flood_sent": self.flood.report["sent"],
            "flood_stored_mib": self.flood.stored_mib(),
            "flood_own_kept": self.flood.own_kept,
            "flood_heap_mib_after": self.flood.heap_mib.1,
            "id_work_12_ms_per_id_chromium": self.work["msPerId"],
            "id_work_us_per_try_chromium": self.work["usPerTry"],
            "screenshot": self.shot.display().to_string(),
            "file_mib": 20,
            "file_chunks": self.files.chunks,
            "file_publish_mb_s": self.files.publish_mb_s,
            "file_fetch_mb_s": self.files.fetch_mb_s,
            "file_same": self.files.same,
            "file_longest_task_ms": self.files.longest_task_ms,
            "file_link_fetch_mb_s": self.files.link_fetch_mb_s,
            "file_link_same": self.files.link_same,
        })
    }
}
