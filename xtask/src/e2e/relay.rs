//! `cargo xtask e2e --relay`: the swarm without its signaling server. Two signaling servers; three native
//! nodes (two registered on the first server, one on the second, all linked over TCP) and 12 Chromium tabs
//! on the first server join; tabs keep few links (`maxLinks`), so lookups keep opening new ones. Then the
//! first server is stopped: tabs look up far targets, put and get, and every new link is set up with
//! signals relayed over the DHT's links. Last, three tabs registered on the second server join and reach
//! the first group (through the native node on their server, the only node they can signal directly).
//!
//! Fails unless, with the server up, every lookup finds every node (up to k); in every phase every put is
//! stored and every get answers; links were set up through relays after the stop and none through the stopped
//! server; and the second group linked with the first through relays. Lookups after the stop are reported
//! (their share that found every node), not required yet. Reports the links opened by how their setup was
//! signaled, and as its last line one JSON object.

use super::{ctl, percentile, start_chromedriver, Browser, Signaling, Tab, Tally, Tls};
use crate::web::bundle_dir;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Child;

/// Tabs of the first group (on the first server), and of the second.
const GROUP1: usize = 12;
const GROUP2: usize = 3;
/// Native nodes: the first `NATIVES - 1` on the first server, the last on the second.
const NATIVES: usize = 3;
/// Links each tab keeps: well under the swarm's size, so that lookups open new ones.
const MAX_LINKS: usize = 12;
/// Lookups each tab runs in each phase.
const LOOKUPS: usize = 3;
/// How long after the first server stopped every link setup it signaled has ended: the WebRTC transport's
/// connect timeout (15 s), and a second.
const SETUPS_END: Duration = Duration::from_secs(16);

/// The lookups' k: a lookup succeeds when it finds every other node, up to this many.
const K: usize = 20;

/// A dht-node of the run.
struct Native {
    _process: Child,
    dir: PathBuf,
    owner: String,
    short_id: String,
}

impl Native {
    /// `RELAYED` of its control socket, as JSON.
    async fn relayed(&self) -> Result<Value, String> {
        let answer = ctl(&self.dir, "RELAYED").await?;
        let mut v = serde_json::Map::new();
        for field in answer.split(' ').skip(1) {
            if let Some((name, value)) = field.split_once('=') {
                v.insert(name.into(), json!(value));
            }
        }
        Ok(Value::Object(v))
    }
}

/// Starts a dht-node registered on `ws`, joining through `bootstrap` (a TCP address) when given.
async fn native(
    n: usize,
    (host, ws, tls): (&str, &str, &Tls),
    bootstrap: Option<&str>,
    tmp: &Path,
    out: &Path,
) -> Result<Native, String> {
    let extra: Vec<&str> = bootstrap.map(|b| vec!["--bootstrap", b]).unwrap_or_default();
    let name = format!("relay-native-{n}");
    let (process, dir) = super::spawn_native(&name, (host, ws, tls), &extra, tmp, out).await?;
    let owner = ctl(&dir, "OWNER").await?;
    let owner = owner.strip_prefix("OWNER ").ok_or(format!("OWNER: {owner}"))?.to_string();
    let id = ctl(&dir, "ID").await?;
    let short_id = id.split(' ').nth(1).unwrap_or("").chars().take(16).collect();
    Ok(Native { _process: process, dir, owner, short_id })
}

/// A tab of the run, and the key it signs with.
struct Member {
    tab: Tab,
    owner: String,
    name: String,
    /// Its node id, as logs and lookups show it (the first 8 bytes in hex).
    short_id: String,
}

/// Opens `count` tabs on `page` named `{prefix}{t}` and waits for each to join; returns them and their join
/// times (ms from page load).
async fn open_group(
    browser: &Browser,
    page: &str,
    prefix: &str,
    count: usize,
    tmp: &Path,
) -> Result<(Vec<Member>, Vec<f64>), String> {
    let mut tabs = Vec::new();
    for t in 0..count {
        let name = format!("{prefix}{t}");
        let tab = Tab::open(browser, &tmp.join(format!("chrome-{name}"))).await?;
        let url = format!("{page}?node={name}&maxLinks={MAX_LINKS}&log=debug");
        tab.client.goto(&url).await.map_err(|e| format!("{name}: {e}"))?;
        tabs.push((name, tab));
    }
    let (mut members, mut join_ms) = (Vec::new(), Vec::new());
    for (name, tab) in tabs {
        join_ms.push(tab.joined().await.map_err(|e| format!("{name}: {e}"))?);
        let owner = tab.owner().await?;
        let id = tab.js("return window.webdht.node.id()", vec![]).await?;
        let short_id = id.as_str().unwrap_or("").chars().take(16).collect();
        members.push(Member { tab, owner, name, short_id });
    }
    Ok((members, join_ms))
}

/// Links a tab opened so far: `[signaled through the server, through one relay, through two]`.
async fn links_opened(tab: &Tab) -> Result<[u64; 3], String> {
    let s = tab.js("return window.webdht.node.stats().linksOpened", vec![]).await?;
    let n = |i: usize| s[i].as_u64().unwrap_or(0);
    Ok([n(0), n(1), n(2)])
}

fn sum(all: &[[u64; 3]]) -> [u64; 3] {
    all.iter().fold([0; 3], |acc, l| [acc[0] + l[0], acc[1] + l[1], acc[2] + l[2]])
}

/// What each phase of the run measured.
#[derive(Default)]
struct Phase {
    lookups: Tally,
    lookup_ms: Vec<f64>,
    puts: Tally,
    gets: Tally,
}

impl Phase {
    fn json(&mut self) -> Value {
        self.lookup_ms.sort_by(f64::total_cmp);
        json!({
            "lookups": self.lookups.rate(),
            "lookups_n": self.lookups.total,
            "lookup_ms_p50": percentile(&self.lookup_ms, 0.5),
            "lookup_ms_p99": percentile(&self.lookup_ms, 0.99),
            "puts": self.puts.rate(),
            "puts_n": self.puts.total,
            "gets": self.gets.rate(),
            "gets_n": self.gets.total,
        })
    }

    /// Every lookup, put and get succeeded.
    fn complete(&self) -> bool {
        self.lookups.all() && self.stored()
    }

    /// Every put and get succeeded (lookups may have missed a node).
    fn stored(&self) -> bool {
        self.puts.all() && self.gets.all()
    }

    /// Every tab of `tabs` looks up `LOOKUPS` far targets; each must find every node of `names` (short id,
    /// name) but itself, up to k. A lookup that misses tabs of `groups` prints what they logged of the looker.
    async fn look_up(
        &mut self,
        tabs: &[Member],
        groups: &[&[Member]],
        label: &str,
        names: &[(String, String)],
    ) -> Result<(), String> {
        let expect = (names.len() - 1).min(K);
        for m in tabs {
            for j in 0..LOOKUPS {
                let js = "return window.webdht.node.findNode(arguments[0])";
                let r = m.tab.js(js, vec![json!(format!("{label}-{}-{j}", m.name))]).await?;
                let found: Vec<&str> =
                    r["closest"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                if found.len() < expect {
                    let missing: Vec<&str> = names
                        .iter()
                        .filter(|(id, name)| *name != m.name && !found.contains(&id.as_str()))
                        .map(|(_, name)| name.as_str())
                        .collect();
                    eprintln!("    {}: lookup {j} found {} of {expect}, not {missing:?}", m.name, found.len());
                    let js = "return [...document.querySelectorAll('#log li')].map(l => l.textContent)\
                              .filter(t => t.includes('no link to')).slice(0, 4)";
                    eprintln!("      its last failed dials: {}", m.tab.js(js, vec![]).await?);
                    let js =
                        "const n = window.webdht.node; return Promise.all([n.counters(), n.peers()]).then(([c, p]) => \
                              ({ timeouts: c.timeouts, unreachable: c.unreachable, lost: c.lostWithLink, slow: c.slowRequests, \
                              late: c.lateAnswers, linked: p.map(x => x.short), linksOpened: n.stats().linksOpened }))";
                    eprintln!("      its counters and links: {}", m.tab.js(js, vec![]).await?);
                    // What the missing tabs' transports said of this one (their logs, at debug level).
                    let me = names.iter().find(|(_, name)| *name == m.name).map(|(id, _)| id[..8].to_string());
                    let everyone = groups.iter().flat_map(|g| g.iter());
                    for other in everyone.filter(|o| missing.contains(&o.name.as_str())) {
                        let js = "return window.webdht.logLines(1000).filter(l => l.includes(arguments[0])).slice(-6)";
                        let seen = other.tab.js(js, vec![json!(me.clone().unwrap_or_default())]).await?;
                        eprintln!("      {}'s log of it: {seen}", other.name);
                    }
                }
                self.lookups.add(found.len() >= expect);
                self.lookup_ms.push(r["ms"].as_f64().unwrap_or(f64::NAN));
            }
        }
        Ok(())
    }

    /// Every tab of `tabs` puts its record `label`.
    async fn put(&mut self, tabs: &[Member], label: &str) -> Result<(), String> {
        for m in tabs {
            let acks = m.tab.put(label, &format!("{label}-of-{}", m.name)).await?;
            if acks == 0 {
                eprintln!("    {}: put {label} stored nowhere", m.name);
            }
            self.puts.add(acks > 0);
        }
        Ok(())
    }

    /// Every tab of `readers` gets the record `label` of every tab of `writers` (but its own).
    async fn get(&mut self, readers: &[Member], writers: &[Member], label: &str) -> Result<(), String> {
        for r in readers {
            for w in writers.iter().filter(|w| w.name != r.name) {
                let (value, _) = r.tab.get(label, &w.owner).await?;
                let ok = value.as_deref() == Some(format!("{label}-of-{}", w.name).as_str());
                if !ok {
                    eprintln!("    {}: get {label} of {} answered {value:?}", r.name, w.name);
                }
                self.gets.add(ok);
            }
        }
        Ok(())
    }
}

/// The run (see the module's documentation).
pub(super) async fn relay_swarm(host: &str, netns: bool) -> Result<(), String> {
    let tmp = tempfile::Builder::new().prefix("webdht-e2e-relay").tempdir().map_err(|e| e.to_string())?;
    let out = crate::root().join("target/e2e");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    eprintln!(
        "==> e2e --relay: {GROUP1} + {GROUP2} tabs (maxLinks {MAX_LINKS}), {NATIVES} native nodes, two signaling \
         servers, on {host}{}",
        if netns { " (network namespace)" } else { "" }
    );
    let started = Instant::now();
    let (tls, spki) = Tls::make(host, &tmp.path().join("tls"))?;
    let mut first = Signaling::serving(host, &bundle_dir(), &out.join("relay-signaling-1.log"), &tls).await?;
    let second = Signaling::serving(host, &bundle_dir(), &out.join("relay-signaling-2.log"), &tls).await?;

    // Natives: 0 on the first server; 1 on the first and 2 on the second, both joining through 0 over TCP.
    let n0 = native(0, (host, &first.ws, &tls), None, tmp.path(), &out).await?;
    let id0 = ctl(&n0.dir, "ID").await?;
    let tcp0 = id0.split(' ').find_map(|a| a.strip_prefix("tcp:")).ok_or(format!("native 0 has no TCP: {id0}"))?;
    let tcp0 = tcp0.to_string();
    let n1 = native(1, (host, &first.ws, &tls), Some(&tcp0), tmp.path(), &out).await?;
    let n2 = native(2, (host, &second.ws, &tls), Some(&tcp0), tmp.path(), &out).await?;
    let natives = [n0, n1, n2];

    let (_chromedriver, driver) = start_chromedriver(&out).await?;
    let browser = Browser { driver, host_mode_flags: !netns, spki };
    let (group1, join1) = open_group(&browser, &first.page, "g1-", GROUP1, tmp.path()).await?;
    eprintln!("    group 1 joined (ms from page load): {join1:.0?}");
    let mut names: Vec<(String, String)> =
        natives.iter().enumerate().map(|(i, n)| (n.short_id.clone(), format!("native{i}"))).collect();
    names.extend(group1.iter().map(|m| (m.short_id.clone(), m.name.clone())));
    let ids: Vec<String> = names.iter().map(|(id, name)| format!("{name}={id}")).collect();
    eprintln!("    ids: {}", ids.join(" "));

    // With the first server up.
    let mut up = Phase::default();
    up.look_up(&group1, &[&group1], "up", &names).await?;
    up.put(&group1, "up").await?;
    up.get(&group1, &group1, "up").await?;

    // The first server goes away. Links whose setup it carried before may still be opening: the count of
    // links by signaling path starts once every such setup has ended, opened or not (a setup gives up after
    // the transport's connect timeout, 15 s); no setup can start through the server any more.
    let _ = first.process.kill().await;
    let _ = first.process.wait().await;
    tokio::time::sleep(SETUPS_END).await;
    let mut before = Vec::new();
    for m in &group1 {
        before.push(links_opened(&m.tab).await?);
    }
    eprintln!("    server up: {}; links opened {:?}", up.json(), sum(&before));
    let mut down = Phase::default();
    down.look_up(&group1, &[&group1], "down", &names).await?;
    down.put(&group1, "down").await?;
    down.get(&group1, &group1, "down").await?;
    for (i, n) in natives.iter().enumerate() {
        let answer = ctl(&n.dir, &format!("PUT down down-of-native{i}")).await?;
        down.puts.add(answer.starts_with("OK seq="));
        for m in &group1 {
            let answer = ctl(&n.dir, &format!("GET down {}", m.owner)).await?;
            down.gets.add(answer == format!("VALUE down-of-{}", m.name));
            let (value, _) = m.tab.get("down", &n.owner).await?;
            down.gets.add(value == Some(format!("down-of-native{i}")));
        }
    }
    let mut after = Vec::new();
    for m in &group1 {
        after.push(links_opened(&m.tab).await?);
    }
    let (b, a) = (sum(&before), sum(&after));
    let relayed_after_stop = (a[1] - b[1]) + (a[2] - b[2]);
    let server_after_stop = a[0] - b[0];
    eprintln!(
        "    server stopped: {}; links opened since: {relayed_after_stop} through relays, {server_after_stop} \
         through the server",
        down.json()
    );

    // A second group, on the second server, reaches the first.
    let (group2, join2) = open_group(&browser, &second.page, "g2-", GROUP2, tmp.path()).await?;
    eprintln!("    group 2 joined (ms from page load): {join2:.0?}");
    names.extend(group2.iter().map(|m| (m.short_id.clone(), m.name.clone())));
    let mut second_group = Phase::default();
    second_group.look_up(&group2, &[&group1, &group2], "g2", &names).await?;
    second_group.put(&group2, "g2").await?;
    second_group.get(&group1, &group2, "g2").await?;
    second_group.get(&group2, &group1, "down").await?;
    let mut g2_links = Vec::new();
    for m in &group2 {
        g2_links.push(links_opened(&m.tab).await?);
    }
    let g2 = sum(&g2_links);
    // A link from the second group to a tab of the first can only have been signaled through relays.
    let mut cross = 0;
    for m in &group2 {
        let peers = m.tab.js("return window.webdht.node.peers()", vec![]).await?;
        let peers = peers.as_array().cloned().unwrap_or_default();
        let first_group = |id: &str| group1.iter().any(|g| id.starts_with(&g.short_id));
        cross += peers.iter().filter(|p| p["id"].as_str().is_some_and(first_group)).count();
    }
    eprintln!(
        "    second group: {}; links opened {g2:?} (server, 1 relay, 2 relays), live links to the first group {cross}",
        second_group.json()
    );
    let mut relayed = Vec::new();
    for n in &natives {
        relayed.push(n.relayed().await?);
    }
    eprintln!("    native nodes relayed: {}", Value::Array(relayed.clone()));
    let relay_stats = group1[0].tab.js("return window.webdht.node.relayStats()", vec![]).await?;

    // Lookups in the seconds after the server stopped are reported, not required: some miss one or two
    // nodes still (see the stop note of issue 17).
    let checks = [
        ("every lookup, put and get with the server up", up.complete()),
        ("every put and get after the server stopped", down.stored()),
        ("links set up through relays after the server stopped", relayed_after_stop > 0),
        ("no link signaled through the stopped server", server_after_stop == 0),
        ("every put and get of the second group", second_group.stored()),
        ("the second group linked with the first through relays", g2[1] + g2[2] > 0 && cross > 0),
    ];
    for m in group1.into_iter().chain(group2) {
        let _ = m.tab.client.close().await;
    }
    let failed: Vec<&str> = checks.iter().filter(|(_, ok)| !ok).map(|(what, _)| *what).collect();
    let summary = json!({
        "e2e": "relay",
        "tabs": [GROUP1, GROUP2],
        "natives": NATIVES,
        "max_links": MAX_LINKS,
        "join_ms_p50": [percentile(&sorted(join1), 0.5), percentile(&sorted(join2), 0.5)],
        "server_up": up.json(),
        "server_stopped": down.json(),
        "second_group": second_group.json(),
        "links_opened_before_stop": b,
        "links_opened_by_group1_after_stop": [a[0] - b[0], a[1] - b[1], a[2] - b[2]],
        "links_opened_by_group2": g2,
        "group2_live_links_to_group1": cross,
        "natives_relayed": relayed,
        "tab0_relayed": relay_stats,
        "secs": started.elapsed().as_secs_f64(),
        "passed": failed.is_empty(),
    });
    println!("{summary}");
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("e2e --relay failed: {}", failed.join("; ")))
    }
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}
