//! `cargo xtask e2e --nat`: the swarm across NATs, in network namespaces the run makes and removes itself
//! (documentation addresses only; nothing reaches the host's network):
//!
//! ```text
//!             "internet" 203.0.113.0/24: signaling server (https, wss, GET /config), coturn (STUN, TURN),
//!                  |                     a bootstrap dht-node — all at 203.0.113.1
//!        +---------+------------------------+-------------------------+
//!   router A 203.0.113.10   router B 203.0.113.20       router C 203.0.113.30
//!   masquerade (endpoint-   masquerade --random-fully   masquerade, like A
//!   independent mapping,    (symmetric: a new port for
//!   ports kept)             every destination)
//!        |                        |                           |
//!   home A 192.0.2.2         home B 192.0.2.66           home C 192.0.2.130
//!   two Chromium tabs        two Chromium tabs,          one Chromium tab
//!                            one dht-node
//! ```
//!
//! Every node puts records and gets everyone else's; the run reports, for every pair of nodes with a live
//! link, how it travels as each end sees it (host, srflx, prflx, relay) and its setup time, and as its last
//! line one JSON object. It fails unless every get succeeds, every tab links with every tab of the other
//! homes, and links that cross the symmetric NAT to another home go through TURN (no direct path exists
//! there); between homes A and C a direct path through both NATs exists, and the run says which was taken.

use super::{ctl_in, percentile, spawn, wait_for, Browser, Signaling, Tab, Tally, Tls, CHROMEDRIVER};
use crate::web::{build_web, bundle_dir, ensure_chromium, ensure_debian, is_root};
use crate::{cargo, root, step};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command as Proc};

/// The servers' address in the "internet" namespace.
const SERVERS: &str = "203.0.113.1";
const TURN_PORT: u16 = 3478;
/// Records each node puts.
const PUTS_EACH: usize = 3;

/// The namespaces and links, made by one script (`$P` is the run's prefix). Router A masquerades keeping
/// ports (endpoint-independent mapping); router B with `--random-fully` (a new port per destination).
const TOPOLOGY: &str = r#"
for n in inet ra rb rc ha hb hc; do ip netns add $P-$n; ip -n $P-$n link set lo up; done
ip -n $P-inet link add br0 type bridge; ip -n $P-inet link set br0 up
ip -n $P-inet addr add 203.0.113.1/24 dev br0
for r in ra rb rc; do
  ip link add $P-$r type veth peer name wan netns $P-$r
  ip link set $P-$r netns $P-inet
  ip -n $P-inet link set $P-$r master br0 up
done
ip -n $P-ra addr add 203.0.113.10/24 dev wan; ip -n $P-ra link set wan up
ip -n $P-rb addr add 203.0.113.20/24 dev wan; ip -n $P-rb link set wan up
ip -n $P-rc addr add 203.0.113.30/24 dev wan; ip -n $P-rc link set wan up
ip link add lan netns $P-ra type veth peer name eth0 netns $P-ha
ip link add lan netns $P-rb type veth peer name eth0 netns $P-hb
ip link add lan netns $P-rc type veth peer name eth0 netns $P-hc
ip -n $P-ra addr add 192.0.2.1/26 dev lan; ip -n $P-ra link set lan up
ip -n $P-rb addr add 192.0.2.65/26 dev lan; ip -n $P-rb link set lan up
ip -n $P-rc addr add 192.0.2.129/26 dev lan; ip -n $P-rc link set lan up
ip -n $P-ha addr add 192.0.2.2/26 dev eth0; ip -n $P-ha link set eth0 up; ip -n $P-ha route add default via 192.0.2.1
ip -n $P-hb addr add 192.0.2.66/26 dev eth0; ip -n $P-hb link set eth0 up; ip -n $P-hb route add default via 192.0.2.65
ip -n $P-hc addr add 192.0.2.130/26 dev eth0; ip -n $P-hc link set eth0 up; ip -n $P-hc route add default via 192.0.2.129
for r in ra rb rc; do ip netns exec $P-$r sysctl -qw net.ipv4.ip_forward=1; done
ip netns exec $P-ra iptables -t nat -A POSTROUTING -o wan -j MASQUERADE
ip netns exec $P-rc iptables -t nat -A POSTROUTING -o wan -j MASQUERADE
ip netns exec $P-rb iptables -t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully
"#;
const NAMESPACES: [&str; 7] = ["inet", "ra", "rb", "rc", "ha", "hb", "hc"];

/// The run's namespaces; removed when dropped (after the processes in them, which are dropped first).
struct Net {
    prefix: String,
}

impl Net {
    fn build() -> Result<Net, String> {
        let net = Net { prefix: format!("wdn{}", std::process::id() % 100_000) };
        let mut cmd = Command::new("sh");
        cmd.args(["-ec", TOPOLOGY]).env("P", &net.prefix);
        step("namespaces: an internet, three NAT routers, three homes", &mut cmd).map(|_| net)
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// `program` run inside namespace `name`.
    fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Proc {
        let mut cmd = Proc::new("ip");
        cmd.args(["netns", "exec", &self.ns(name)]).arg(program);
        cmd
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in NAMESPACES {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(n)]).stderr(Stdio::null()).status();
        }
    }
}

/// A TCP connection to `addr` made inside namespace `ns` (a socket stays in the namespace it was made in, so
/// this process can reach the loopback of each namespace: chromedriver's, a node's control socket).
pub(super) async fn connect_in(ns: &str, addr: &str) -> std::io::Result<tokio::net::TcpStream> {
    use std::os::fd::AsRawFd;
    let (path, addr) = (format!("/var/run/netns/{ns}"), addr.to_string());
    let stream = tokio::task::spawn_blocking(move || {
        // A thread of its own, which ends here: only it enters the namespace.
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path)?;
            // SAFETY: setns(2) moves only the calling thread (this short-lived one) into the namespace
            // whose file descriptor we hold open; no memory is shared or changed.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let s = std::net::TcpStream::connect(&addr)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
    })
    .await
    .map_err(std::io::Error::other)??;
    tokio::net::TcpStream::from_std(stream)
}

/// Forwards a free port of this namespace's loopback to `port` on namespace `ns`'s loopback; returns it.
async fn forward_into(ns: &str, port: u16) -> Result<u16, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?.port();
    let ns = ns.to_string();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let ns = ns.clone();
            tokio::spawn(async move {
                if let Ok(mut inside) = connect_in(&ns, &format!("127.0.0.1:{port}")).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut inside).await;
                }
            });
        }
    });
    Ok(local)
}

/// A node of the run: a tab or a dht-node, where it is, and its id.
struct Node {
    name: String,
    /// `inet`, `ha` or `hb`: the namespace it runs in.
    home: &'static str,
    id: String,
    owner: String,
    kind: Kind,
}

enum Kind {
    Tab(Tab),
    Native { ns: String, dir: PathBuf, _process: Child },
}

impl Node {
    async fn put(&self, key: &str, value: &str) -> Result<bool, String> {
        match &self.kind {
            Kind::Tab(tab) => Ok(tab.put(key, value).await? > 0),
            Kind::Native { ns, dir, .. } => {
                Ok(ctl_in(Some(ns), dir, &format!("PUT {key} {value}")).await?.starts_with("OK seq="))
            }
        }
    }

    async fn get(&self, key: &str, owner: &str) -> Result<Option<String>, String> {
        match &self.kind {
            Kind::Tab(tab) => Ok(tab.get(key, owner).await?.0),
            Kind::Native { ns, dir, .. } => {
                let answer = ctl_in(Some(ns), dir, &format!("GET {key} {owner}")).await?;
                Ok(answer.strip_prefix("VALUE ").map(str::to_string))
            }
        }
    }

    /// How each live WebRTC link of this node travels, by peer id: (kind, setup ms, dialed).
    async fn paths(&self) -> Result<BTreeMap<String, (String, f64, bool)>, String> {
        let mut paths = BTreeMap::new();
        match &self.kind {
            Kind::Tab(tab) => {
                let peers = tab.js("return window.webdht.node.peers()", vec![]).await?;
                for p in peers.as_array().ok_or_else(|| format!("peers(): {peers}"))? {
                    let (Some(id), Some(kind)) = (p["id"].as_str(), p["path"]["kind"].as_str()) else { continue };
                    let setup = p["path"]["setupMs"].as_f64().unwrap_or(f64::NAN);
                    paths.insert(id.to_string(), (kind.to_string(), setup, p["path"]["dialed"] == json!(true)));
                }
            }
            Kind::Native { ns, dir, .. } => {
                let answer = ctl_in(Some(ns), dir, "PATHS").await?;
                for entry in answer.split(' ').skip(2) {
                    let Some((id, rest)) = entry.split_once('=') else { continue };
                    let f: Vec<&str> = rest.split(',').collect();
                    if f.len() >= 6 {
                        let setup = f[4].parse().unwrap_or(f64::NAN);
                        paths.insert(id.to_string(), (f[0].to_string(), setup, f[5] == "dialed"));
                    }
                }
            }
        }
        Ok(paths)
    }
}

/// Starts a dht-node named `name` in namespace `home` with `flags`; waits for its control socket.
async fn native(
    net: &Net,
    home: &'static str,
    name: &str,
    flags: &[String],
    tmp: &Path,
    out: &Path,
) -> Result<Node, String> {
    let dir = tmp.join(name);
    let mut cmd = net.command(home, super::bin("dht-node"));
    cmd.args(flags).arg("--data-dir").arg(&dir).env("RUST_LOG", "info");
    let process = spawn(&mut cmd, &out.join(format!("nat-{name}.log")))?;
    let ns = net.ns(home);
    let d = dir.clone();
    let id = wait_for(name, Duration::from_secs(30), || {
        let (d, ns) = (d.clone(), ns.clone());
        async move { ctl_in(Some(&ns), &d, "ID").await.ok() }
    })
    .await?;
    let id = id.split(' ').nth(1).ok_or(format!("{name}: ID answered {id}"))?.to_string();
    let owner = ctl_in(Some(&ns), &dir, "OWNER").await?;
    let owner = owner.strip_prefix("OWNER ").ok_or(format!("{name}: OWNER answered {owner}"))?.to_string();
    Ok(Node { name: name.into(), home, id, owner, kind: Kind::Native { ns, dir, _process: process } })
}

/// chromedriver inside namespace `home`, reachable from here; the process and the browser settings.
async fn chromedriver(net: &Net, home: &str, spki: &str, out: &Path) -> Result<(Child, Browser), String> {
    const PORT: u16 = 9515;
    let mut cmd = net.command(home, CHROMEDRIVER);
    cmd.arg(format!("--port={PORT}")).stdout(Stdio::null());
    let process = spawn(&mut cmd, &out.join(format!("nat-chromedriver-{home}.log")))?;
    let ns = net.ns(home);
    wait_for("chromedriver", Duration::from_secs(30), || {
        let ns = ns.clone();
        async move { connect_in(&ns, &format!("127.0.0.1:{PORT}")).await.ok() }
    })
    .await?;
    let port = forward_into(&ns, PORT).await?;
    Ok((process, Browser { driver: format!("http://127.0.0.1:{port}"), host_mode_flags: false, spki: spki.into() }))
}

/// Opens a tab named `name` on `page`, waits for it to join; the node and its join time.
async fn tab(
    (browser, home): (&Browser, &'static str),
    page: &str,
    name: &str,
    tmp: &Path,
) -> Result<(Node, f64), String> {
    let tab = Tab::open(browser, &tmp.join(format!("chrome-{name}"))).await?;
    tab.client.goto(&format!("{page}?node={name}")).await.map_err(|e| format!("{name}: {e}"))?;
    let joined = tab.joined().await.map_err(|e| format!("{name}: {e}"))?;
    let id = tab.js("return window.webdht.node.id()", vec![]).await?;
    let id = id.as_str().ok_or(format!("{name} has no id"))?.to_string();
    let owner = tab.owner().await?;
    eprintln!("    {name} joined {joined:.0} ms after page load");
    Ok((Node { name: name.into(), home, id, owner, kind: Kind::Tab(tab) }, joined))
}

/// `cargo xtask e2e --nat` (no options).
pub fn nat(args: &[String]) -> Result<(), String> {
    if let Some(a) = args.first() {
        return Err(format!("e2e --nat: unknown argument {a}"));
    }
    if !is_root() {
        eprintln!("e2e --nat: skipped: the NAT test makes network namespaces and routers, which needs root");
        return Ok(());
    }
    ensure_debian(&[("/usr/bin/turnserver", "coturn"), ("/usr/sbin/iptables", "iptables")])?;
    build_web()?;
    step(
        "signaling-server and dht-node",
        cargo().args(["build", "--locked", "-p", "signaling-server", "-p", "dht-node"]),
    )?;
    ensure_chromium()?;
    let probe = Command::new("ip").args(["netns", "add", "wdn-probe"]).stderr(Stdio::null()).status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!("e2e --nat: skipped: `ip netns add` is refused here (no network namespaces)");
        return Ok(());
    }
    let _ = Command::new("ip").args(["netns", "del", "wdn-probe"]).status();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run())
}

async fn run() -> Result<(), String> {
    let tmp = tempfile::Builder::new().prefix("webdht-nat").tempdir().map_err(|e| e.to_string())?;
    let out = root().join("target/e2e");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let net = Net::build()?;
    let (tls, spki) = Tls::make(SERVERS, &tmp.path().join("tls"))?;
    let secret = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
    );

    let mut turn = net.command("inet", "turnserver");
    turn.args(["-n", "--no-tls", "--no-dtls", "--no-cli", "--fingerprint", "--use-auth-secret", "--realm=webdht.test"])
        .arg(format!("--static-auth-secret={secret}"))
        .arg(format!("--listening-ip={SERVERS}"))
        .arg(format!("--relay-ip={SERVERS}"))
        .arg(format!("--listening-port={TURN_PORT}"))
        .arg(format!("--userdb={}", tmp.path().join("turndb").display()))
        .arg(format!("--pidfile={}", tmp.path().join("turn.pid").display()))
        .arg(format!("--log-file={}", out.join("nat-coturn.log").display()))
        .arg("--simple-log")
        .stdout(Stdio::null());
    let _turn = spawn(&mut turn, &out.join("nat-coturn.stderr.log"))?;

    let mut cmd = net.command("inet", super::bin("signaling-server"));
    cmd.args(["--ice-server", &format!("stun:{SERVERS}:{TURN_PORT}")])
        .args(["--ice-server", &format!("turn:{SERVERS}:{TURN_PORT}?transport=udp")])
        .args(["--turn-secret", &secret]);
    let mut sig = Signaling::launch(cmd, SERVERS, &bundle_dir(), &out.join("nat-signaling.log"), &tls).await?;
    let ca = tls.ca().display().to_string();
    let signal = |more: &[&str]| -> Vec<String> {
        let mut flags: Vec<String> = ["--signaling", &sig.ws, "--ca", &ca].iter().map(|s| s.to_string()).collect();
        flags.extend(more.iter().map(|s| s.to_string()));
        flags
    };
    eprintln!(
        "==> e2e --nat: servers at {SERVERS}, homes A and C behind endpoint-independent NATs, home B behind a \
         symmetric one"
    );

    let mut nodes = Vec::new();
    let boot_flags = signal(&["--listen", &format!("{SERVERS}:0"), "--rtc-udp", &format!("{SERVERS}:0")]);
    nodes.push(native(&net, "inet", "internet-node", &boot_flags, tmp.path(), &out).await?);
    let (_driver_a, browser_a) = chromedriver(&net, "ha", &spki, &out).await?;
    let (_driver_b, browser_b) = chromedriver(&net, "hb", &spki, &out).await?;
    let (_driver_c, browser_c) = chromedriver(&net, "hc", &spki, &out).await?;
    let mut join_ms = Vec::new();
    let tabs = [
        (&browser_a, "ha", "ha0"),
        (&browser_a, "ha", "ha1"),
        (&browser_b, "hb", "hb0"),
        (&browser_b, "hb", "hb1"),
        (&browser_c, "hc", "hc0"),
    ];
    for (browser, home, name) in tabs {
        let (node, ms) = tab((browser, home), &sig.page, name, tmp.path()).await?;
        nodes.push(node);
        join_ms.push(ms);
    }
    let nb_flags = signal(&["--no-tcp", "--rtc-udp", "192.0.2.66:0"]);
    nodes.push(native(&net, "hb", "hb-node", &nb_flags, tmp.path(), &out).await?);

    // Everyone puts, then everyone gets everyone else's records.
    let (mut puts, mut gets) = (Tally::default(), Tally::default());
    for n in &nodes {
        for j in 0..PUTS_EACH {
            let key = format!("{}-{j}", n.name);
            puts.add(n.put(&key, &format!("value-of-{key}")).await?);
        }
    }
    for reader in &nodes {
        for writer in nodes.iter().filter(|w| w.name != reader.name) {
            for j in 0..PUTS_EACH {
                let key = format!("{}-{j}", writer.name);
                let got = reader.get(&key, &writer.owner).await?;
                let ok = got.as_deref() == Some(format!("value-of-{key}").as_str());
                if !ok {
                    eprintln!("    {} could not get {key} from {}: {got:?}", reader.name, writer.name);
                }
                gets.add(ok);
            }
        }
    }
    let report = Report::gather(&nodes, join_ms, puts, gets).await?;
    for node in nodes {
        if let Kind::Tab(tab) = node.kind {
            let _ = tab.client.close().await;
        }
    }
    let _ = sig.process.kill().await;
    report.print()
}

/// A pair of nodes and how their link travels as each end sees it.
struct Pair {
    a: String,
    b: String,
    a_sees: Option<(String, f64, bool)>,
    b_sees: Option<(String, f64, bool)>,
    /// The pair crosses the symmetric NAT to the other home (no direct path can exist).
    needs_relay: bool,
    /// The pair must be linked (tabs of different homes).
    must_link: bool,
}

impl Pair {
    fn linked(&self) -> bool {
        self.a_sees.is_some() || self.b_sees.is_some()
    }

    fn relayed(&self) -> bool {
        [&self.a_sees, &self.b_sees].iter().any(|s| s.as_ref().is_some_and(|(k, _, _)| k == "relay"))
    }

    /// The dialer's setup time.
    fn setup_ms(&self) -> Option<f64> {
        [&self.a_sees, &self.b_sees].iter().find_map(|s| s.as_ref().filter(|(_, _, d)| *d).map(|(_, ms, _)| *ms))
    }

    fn seen(s: &Option<(String, f64, bool)>) -> String {
        s.as_ref().map_or("-".into(), |(k, _, _)| k.clone())
    }
}

struct Report {
    join_ms: Vec<f64>,
    puts: Tally,
    gets: Tally,
    pairs: Vec<Pair>,
}

impl Report {
    async fn gather(nodes: &[Node], mut join_ms: Vec<f64>, puts: Tally, gets: Tally) -> Result<Report, String> {
        join_ms.sort_by(f64::total_cmp);
        let mut paths = Vec::new();
        for n in nodes {
            paths.push(n.paths().await?);
        }
        let mut pairs = Vec::new();
        for i in 0..nodes.len() {
            for j in i + 1..nodes.len() {
                let (a, b) = (&nodes[i], &nodes[j]);
                let homes = [a.home, b.home];
                let tabs = matches!(a.kind, Kind::Tab(_)) && matches!(b.kind, Kind::Tab(_));
                pairs.push(Pair {
                    a: a.name.clone(),
                    b: b.name.clone(),
                    a_sees: paths[i].get(&b.id).cloned(),
                    b_sees: paths[j].get(&a.id).cloned(),
                    needs_relay: homes.contains(&"hb") && homes[0] != homes[1] && !homes.contains(&"inet"),
                    must_link: tabs && homes[0] != homes[1],
                });
            }
        }
        Ok(Report { join_ms, puts, gets, pairs })
    }

    fn print(&self) -> Result<(), String> {
        eprintln!("e2e --nat summary");
        eprintln!("  puts acknowledged   {}/{}", self.puts.ok, self.puts.total);
        eprintln!("  gets                {}/{}", self.gets.ok, self.gets.total);
        eprintln!(
            "  tab join ms p50/max {:.0} / {:.0}",
            percentile(&self.join_ms, 0.5),
            percentile(&self.join_ms, 1.0)
        );
        eprintln!("  pair                          a sees   b sees   setup ms");
        let mut failures = Vec::new();
        for p in &self.pairs {
            let setup = p.setup_ms().map_or("-".to_string(), |ms| format!("{ms:.0}"));
            eprintln!("  {:<14} {:<14} {:<8} {:<8} {setup}", p.a, p.b, Pair::seen(&p.a_sees), Pair::seen(&p.b_sees));
            if p.must_link && !p.linked() {
                failures.push(format!("{} and {} never linked", p.a, p.b));
            }
            if p.needs_relay && p.linked() && !p.relayed() {
                failures.push(format!("{} and {} linked across the symmetric NAT without TURN", p.a, p.b));
            }
        }
        let relayed: Vec<f64> = self.pairs.iter().filter(|p| p.relayed()).filter_map(Pair::setup_ms).collect();
        let direct: Vec<f64> =
            self.pairs.iter().filter(|p| p.linked() && !p.relayed()).filter_map(Pair::setup_ms).collect();
        let sorted = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v
        };
        let (relayed, direct) = (sorted(relayed), sorted(direct));
        let pairs: Vec<Value> = self
            .pairs
            .iter()
            .map(|p| {
                json!({ "a": p.a, "b": p.b, "a_sees": Pair::seen(&p.a_sees), "b_sees": Pair::seen(&p.b_sees),
                             "setup_ms": p.setup_ms() })
            })
            .collect();
        println!(
            "{}",
            json!({
                "nat": true,
                "put_get_success_rate": (self.puts.ok + self.gets.ok) as f64 / (self.puts.total + self.gets.total).max(1) as f64,
                "join_ms_p50": percentile(&self.join_ms, 0.5),
                "linked_pairs": self.pairs.iter().filter(|p| p.linked()).count(),
                "relayed_pairs": self.pairs.iter().filter(|p| p.relayed()).count(),
                "relay_setup_ms_p50": percentile(&relayed, 0.5),
                "direct_setup_ms_p50": percentile(&direct, 0.5),
                "pairs": pairs,
            })
        );
        if self.puts.ok != self.puts.total || self.gets.ok != self.gets.total {
            failures.push("some puts or gets failed".into());
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!("e2e --nat: {}", failures.join("; ")))
        }
    }
}
