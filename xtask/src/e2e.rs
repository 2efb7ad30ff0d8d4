//! `cargo xtask e2e [--tabs T] [--native N]`: a signaling server, N native nodes and T headless Chromium
//! tabs (driven through chromedriver) form one swarm; tabs and natives put values and get each other's;
//! one tab reloads and must find its records and routing table again. As root it runs inside a fresh
//! network namespace (loopback plus a veth pair whose both ends stay inside), so nothing leaves the machine
//! and Chromium has an interface to gather candidates on.

use crate::web::{build_web, bundle_dir, ensure_chromium, CHROMEDRIVER, CHROMIUM};
use crate::{cargo, root, step, target_dir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command as Proc};

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
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts { tabs: 4, native: 3 };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or(format!("{name} needs a number"))
        };
        match a.as_str() {
            "--tabs" => o.tabs = num("--tabs")?,
            "--native" => o.native = num("--native")?,
            other => return Err(format!("e2e: unknown argument {other} (use --tabs T --native N)")),
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
    let opts = parse(args)?;
    if std::env::var_os(IN_NETNS).is_some() {
        return run_swarm(&opts, NETNS_ADDR, true);
    }
    build_web()?;
    step(
        "signaling-server and dht-node",
        cargo().args(["build", "--locked", "-p", "signaling-server", "-p", "dht-node"]),
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
    let addr = std::fs::read_to_string(data_dir.join("control.addr")).map_err(|e| format!("control.addr: {e}"))?;
    let call = async {
        let mut s = tokio::net::TcpStream::connect(addr.trim()).await.map_err(|e| e.to_string())?;
        s.write_all(format!("{request}\n").as_bytes()).await.map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.map_err(|e| e.to_string())?;
        Ok(line.trim().to_string())
    };
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| format!("control {request}: timed out"))?
}

struct Tab {
    client: fantoccini::Client,
}

impl Tab {
    async fn open(driver: &str, profile: &Path, host_mode_flags: bool) -> Result<Tab, String> {
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
        ];
        if host_mode_flags {
            args.push("--allow-loopback-in-peer-connection".into());
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(driver)
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
                return Err(format!("tab not joined after {JOIN_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn put(&self, key: &str, value: &str) -> Result<u64, String> {
        let r = self
            .js("return window.webdht.node.put(arguments[0], arguments[1])", vec![json!(key), json!(value)])
            .await?;
        Ok(r["acks"].as_u64().unwrap_or(0))
    }

    /// The value under `key` and the lookup time in ms.
    async fn get(&self, key: &str) -> Result<(Option<String>, f64), String> {
        let r = self.js("return window.webdht.node.get(arguments[0])", vec![json!(key)]).await?;
        Ok((r["value"].as_str().map(str::to_string), r["ms"].as_f64().unwrap_or(f64::NAN)))
    }

    /// A network lookup for the ids closest to the hash of `name`: (peers found, ms).
    async fn find_node(&self, name: &str) -> Result<(u64, f64), String> {
        let r = self.js("return window.webdht.node.findNode(arguments[0])", vec![json!(name)]).await?;
        Ok((r["found"].as_u64().unwrap_or(0), r["ms"].as_f64().unwrap_or(f64::NAN)))
    }

    async fn get_local(&self, key: &str) -> Result<Option<String>, String> {
        let r = self.js("return window.webdht.node.getLocal(arguments[0])", vec![json!(key)]).await?;
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
    fn rate(&self) -> f64 {
        if self.total == 0 {
            f64::NAN
        } else {
            self.ok as f64 / self.total as f64
        }
    }
}

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

    // Signaling server serving the bundle.
    let mut sig = Proc::new(bin("signaling-server"));
    sig.args(["--listen", &format!("{host}:0"), "--web-dir"]).arg(bundle_dir()).stdout(Stdio::piped());
    let mut sig = spawn(&mut sig, &out_dir.join("signaling.log"))?;
    let mut lines = BufReader::new(sig.stdout.take().ok_or("no stdout")?).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| "signaling server did not start".to_string())?
        .map_err(|e| e.to_string())?
        .and_then(|l| l.strip_prefix("listening ").map(str::to_string))
        .ok_or("signaling server did not say where it listens")?;
    let ws = format!("ws://{addr}/ws");
    let page = format!("http://{addr}/");

    // Native nodes (TCP + WebRTC), joining through the signaling server's peers.
    let mut natives = Vec::new();
    for n in 0..opts.native {
        let dir = tmp.path().join(format!("native-{n}"));
        let mut cmd = Proc::new(bin("dht-node"));
        cmd.args(["--listen", &format!("{host}:0"), "--signaling", &ws, "--rtc-udp", &format!("{host}:0")])
            .arg("--data-dir")
            .arg(&dir)
            .env("RUST_LOG", "info");
        let child = spawn(&mut cmd, &out_dir.join(format!("native-{n}.log")))?;
        let d = dir.clone();
        wait_for("native node", Duration::from_secs(30), || {
            let d = d.clone();
            async move { ctl(&d, "ID").await.ok() }
        })
        .await?;
        natives.push((child, dir));
    }

    // chromedriver and the tabs.
    let port = free_port()?;
    let mut cd = Proc::new(CHROMEDRIVER);
    cd.arg(format!("--port={port}")).stdout(Stdio::null());
    let _chromedriver = spawn(&mut cd, &out_dir.join("chromedriver.log"))?;
    let driver = format!("http://127.0.0.1:{port}");
    wait_for("chromedriver", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await?;
    let mut tabs = Vec::new();
    for t in 0..opts.tabs {
        let tab = Tab::open(&driver, &tmp.path().join(format!("chrome-{t}")), !netns).await?;
        tab.client.goto(&format!("{page}?node=tab{t}")).await.map_err(|e| format!("tab {t}: {e}"))?;
        tabs.push(tab);
    }
    let mut join_ms = Vec::new();
    for (t, tab) in tabs.iter().enumerate() {
        let ms = tab.joined().await.map_err(|e| format!("tab {t}: {e}"))?;
        eprintln!("    tab {t} joined {ms:.0} ms after page load");
        join_ms.push(ms);
    }

    // Everyone puts.
    let tab_key = |t: usize, j: usize| format!("tab{t}-{j}");
    let native_key = |n: usize, j: usize| format!("native{n}-{j}");
    let value_of = |k: &str| format!("value-of-{k}");
    let mut puts = Tally::default();
    for (t, tab) in tabs.iter().enumerate() {
        for j in 0..PUTS_EACH {
            let k = tab_key(t, j);
            puts.add(tab.put(&k, &value_of(&k)).await? > 0);
        }
    }
    for (n, (_, dir)) in natives.iter().enumerate() {
        for j in 0..PUTS_EACH {
            let k = native_key(n, j);
            puts.add(ctl(dir, &format!("PUT {k} {}", value_of(&k))).await?.starts_with("OK acks="));
        }
    }

    // Everyone gets the others' values.
    let (mut bb, mut bn, mut nb) = (Tally::default(), Tally::default(), Tally::default());
    // Gets mostly end at home (in a swarm smaller than k every node holds every record): their times are
    // kept apart from those of lookups, which always cross the network.
    let mut get_ms = Vec::new();
    for (t, tab) in tabs.iter().enumerate() {
        for other in (0..opts.tabs).filter(|o| *o != t) {
            for j in 0..PUTS_EACH {
                let k = tab_key(other, j);
                let (v, ms) = tab.get(&k).await?;
                bb.add(v.as_deref() == Some(value_of(&k).as_str()));
                get_ms.push(ms);
            }
        }
        for n in 0..opts.native {
            for j in 0..PUTS_EACH {
                let k = native_key(n, j);
                let (v, ms) = tab.get(&k).await?;
                bn.add(v.as_deref() == Some(value_of(&k).as_str()));
                get_ms.push(ms);
            }
        }
    }
    for (_, dir) in &natives {
        for t in 0..opts.tabs {
            for j in 0..PUTS_EACH {
                let k = tab_key(t, j);
                let t0 = Instant::now();
                let reply = ctl(dir, &format!("GET {k}")).await?;
                get_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                nb.add(reply == format!("VALUE {}", value_of(&k)));
            }
        }
    }

    // Lookups from every tab for random targets.
    let mut lookup_ms = Vec::new();
    let mut lookups = Tally::default();
    for (t, tab) in tabs.iter().enumerate() {
        for j in 0..LOOKUPS_EACH {
            let (found, ms) = tab.find_node(&format!("target-{t}-{j}")).await?;
            lookups.add(found as usize >= (opts.tabs + opts.native - 1).min(20));
            lookup_ms.push(ms);
        }
    }

    // What an id with 12 bits of proof of work costs in Chromium (Config::id_difficulty).
    let work = tabs[0].js("return window.webdht.idWorkCost(12, 8)", vec![]).await?;
    eprintln!("    ids with 12 bits of work in Chromium: {work}");

    // Every tab serves: it holds records others put.
    let mut held_for_others = Vec::new();
    for (t, tab) in tabs.iter().enumerate() {
        let mut held = 0;
        for other in (0..opts.tabs).filter(|o| *o != t) {
            for j in 0..PUTS_EACH {
                held += tab.get_local(&tab_key(other, j)).await?.is_some() as usize;
            }
        }
        for n in 0..opts.native {
            for j in 0..PUTS_EACH {
                held += tab.get_local(&native_key(n, j)).await?.is_some() as usize;
            }
        }
        held_for_others.push(held);
    }

    // A screenshot of a tab, then tab 0 reloads and must come back with its records and table.
    // Show a get through the page's own form, as a person would use it.
    let form = "document.getElementById('key').value = arguments[0]; document.getElementById('get').click();";
    tabs[1].js(form, vec![json!(native_key(0, 0))]).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the get, and one page refresh cycle
    let shot = out_dir.join("tab1.png");
    let png = tabs[1].client.screenshot().await.map_err(|e| format!("screenshot: {e}"))?;
    std::fs::write(&shot, png).map_err(|e| e.to_string())?;
    let id_before = tabs[0].js("return window.webdht.node.id()", vec![]).await?;
    tabs[0].client.refresh().await.map_err(|e| format!("reload: {e}"))?;
    let rejoin_ms = tabs[0].joined().await.map_err(|e| format!("tab 0 after reload: {e}"))?;
    let stats = tabs[0].js("return window.webdht.node.stats()", vec![]).await?;
    let id_after = tabs[0].js("return window.webdht.node.id()", vec![]).await?;
    let own_local = tabs[0].get_local(&tab_key(0, 0)).await?;
    let reload_restored = id_before == id_after
        && stats["restoredRecords"].as_u64().unwrap_or(0) > 0
        && stats["restoredContacts"].as_u64().unwrap_or(0) > 0
        && own_local.is_some();
    eprintln!("    tab 0 reloaded: same id {}, {stats}, rejoined in {rejoin_ms:.0} ms", id_before == id_after);

    for tab in tabs {
        let _ = tab.client.close().await;
    }
    drop(natives);
    let _ = sig.kill().await;

    join_ms.sort_by(f64::total_cmp);
    lookup_ms.sort_by(f64::total_cmp);
    get_ms.sort_by(f64::total_cmp);
    let all = Tally { ok: bb.ok + bn.ok + nb.ok + puts.ok, total: bb.total + bn.total + nb.total + puts.total };
    eprintln!("e2e summary");
    eprintln!("  puts acknowledged        {}/{}", puts.ok, puts.total);
    eprintln!("  browser → browser gets   {}/{}", bb.ok, bb.total);
    eprintln!("  browser → native gets    {}/{}", bn.ok, bn.total);
    eprintln!("  native → browser gets    {}/{}", nb.ok, nb.total);
    eprintln!("  join ms p50 / max        {:.0} / {:.0}", percentile(&join_ms, 0.5), percentile(&join_ms, 1.0));
    eprintln!("  lookup ms p50 / p99      {:.1} / {:.1}", percentile(&lookup_ms, 0.5), percentile(&lookup_ms, 0.99));
    eprintln!("  lookups that found all   {}/{}", lookups.ok, lookups.total);
    eprintln!("  get ms p50 / p99         {:.1} / {:.1}", percentile(&get_ms, 0.5), percentile(&get_ms, 0.99));
    eprintln!("  records held for others  {held_for_others:?} (per tab)");
    eprintln!("  reload restored          {reload_restored}");
    eprintln!("  screenshot               {}", shot.display());
    let summary = json!({
        "tabs": opts.tabs,
        "native": opts.native,
        "netns": netns,
        "join_ms_p50": percentile(&join_ms, 0.5),
        "join_ms_max": percentile(&join_ms, 1.0),
        "lookup_ms_p50": percentile(&lookup_ms, 0.5),
        "lookup_ms_p99": percentile(&lookup_ms, 0.99),
        "get_ms_p50": percentile(&get_ms, 0.5),
        "get_ms_p99": percentile(&get_ms, 0.99),
        "lookup_success_rate": lookups.rate(),
        "put_get_success_rate": all.rate(),
        "browser_browser_rate": bb.rate(),
        "browser_native_rate": bn.rate(),
        "native_browser_rate": nb.rate(),
        "held_for_others_min": held_for_others.iter().min().copied().unwrap_or(0),
        "reload_restored": reload_restored,
        "id_work_12_ms_per_id_chromium": work["msPerId"],
        "id_work_us_per_try_chromium": work["usPerTry"],
        "screenshot": shot.display().to_string(),
    });
    println!("{summary}");
    if all.ok != all.total || lookups.ok != lookups.total || !reload_restored || held_for_others.contains(&0) {
        return Err("e2e: some checks failed (see the summary above)".into());
    }
    Ok(())
}
