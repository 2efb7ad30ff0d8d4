//! `dht-node` and a signaling server over TLS (wss://) on 127.0.0.1, with a certificate from an authority
//! made for the test: nodes that trust it (`--ca`) register, link over WebRTC and share records; a node
//! that does not stops with an error that names the certificate.

mod common;

use common::{ctl_dir as ctl, signaling_server, spawn_with};
use signaling_server::server::ServerConfig;
use signaling_server::tls::{server_config, LocalCa};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `dht-node` with `flags` until it exits (at most 30 s); its stderr.
fn run_to_exit(dir: &std::path::Path, flags: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dht-node"))
        .args(flags)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dht-node starts");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("dht-node {flags:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "dht-node {flags:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A signaling server over TLS configured by `config`, with a certificate for 127.0.0.1 from an authority
/// made here (`ca.pem` in `root`); its address and what stops it.
fn tls_server(root: &Path, config: ServerConfig) -> (std::net::SocketAddr, futures::channel::oneshot::Sender<()>) {
    let ca = LocalCa::new(&["127.0.0.1".into()]).unwrap();
    ca.write(root).unwrap();
    let tls = server_config(&root.join("cert.pem"), &root.join("key.pem")).unwrap();
    signaling_server(ServerConfig { tls: Some(tls), ..config })
}

#[test]
fn nodes_that_trust_the_certificate_signal_over_wss() {
    let root = tempfile::tempdir().unwrap();
    let (addr, _server) = tls_server(root.path(), ServerConfig::default());
    let url = format!("wss://{addr}/ws");
    let ca_file = root.path().join("ca.pem");
    let ca_file = ca_file.to_str().unwrap();
    let flags = ["--no-tcp", "--signaling", &url, "--ca", ca_file];

    let a = spawn_with(&root.path().join("a"), None, &flags);
    let id_a = ctl(&a.dir, "ID");
    assert!(id_a.contains(&format!(" rtc:{url}")), "{id_a}");
    // Node b is given a server that does not answer first: it registers on the next one.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("ws://{}/ws", l.local_addr().unwrap())
    };
    let b_flags = ["--no-tcp", "--signaling", &dead, "--signaling", &url, "--ca", ca_file];
    let b = spawn_with(&root.path().join("b"), None, &b_flags);
    let id_b = ctl(&b.dir, "ID");
    assert!(id_b.contains(&format!(" rtc:{url}")) && !id_b.contains(&dead), "{id_b}");
    let put = ctl(&a.dir, "PUT greeting hello-over-wss");
    assert!(put.starts_with("OK seq=1 acks="), "{put}");
    let owner = put.rsplit_once("owner=").expect("the put names its owner").1;
    assert_eq!(ctl(&b.dir, &format!("GET greeting {owner}")), "VALUE hello-over-wss");
    // The link between them is direct (host candidates on loopback, UDP), and both ends say so.
    let a_id = id_a.split(' ').nth(1).unwrap();
    let paths = ctl(&b.dir, "PATHS");
    let to_a = paths.split(' ').find_map(|p| p.strip_prefix(&format!("{a_id}="))).unwrap_or_else(|| panic!("{paths}"));
    let fields: Vec<&str> = to_a.split(',').collect();
    assert!(matches!(fields[..], ["host" | "prflx", _, _, "udp", _, "dialed" | "answered", "0"]), "{paths}");
    assert!(fields[4].parse::<u64>().is_ok(), "{paths}");

    // Without the authority the certificate is refused, and the node says so.
    let err = run_to_exit(&root.path().join("c"), &["--no-tcp", "--signaling", &url]);
    assert!(err.contains("certificate") && err.contains("UnknownIssuer"), "{err}");

    // A --ca file that holds no certificate is a clear error too.
    std::fs::write(root.path().join("junk.pem"), "not a certificate\n").unwrap();
    let junk = root.path().join("junk.pem");
    let err = run_to_exit(&root.path().join("d"), &["--no-tcp", "--signaling", &url, "--ca", junk.to_str().unwrap()]);
    assert!(err.contains("--ca") && err.contains("no certificate"), "{err}");
}

#[test]
fn nodes_take_their_ice_servers_from_the_signaling_server() {
    use signaling_server::ice::IceConfig;
    let root = tempfile::tempdir().unwrap();
    let ice = IceConfig {
        servers: vec!["stun:192.0.2.1:3478".into(), "turn:192.0.2.1:3478?transport=udp".into()],
        turn_secret: Some("s3cret".into()),
        credential_ttl: Duration::from_secs(600),
    };
    let (addr, _server) = tls_server(root.path(), ServerConfig { ice, ..ServerConfig::default() });
    let roots = transport_webrtc::read_pem_certificates(&root.path().join("ca.pem")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let fetch = |url: String, roots: Vec<Vec<u8>>| rt.block_on(transport_webrtc::fetch_ice_servers(&url, &roots));
    let servers = fetch(format!("wss://{addr}/ws"), roots.clone()).expect("the configuration");
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert_eq!((servers[0].urls[0].as_str(), &servers[0].username), ("stun:192.0.2.1:3478", &None));
    let user = servers[1].username.as_deref().expect("TURN credentials");
    let expiry: u64 = user.split(':').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(expiry > now && expiry <= now + 601, "{user}");
    assert_eq!(servers[1].credential.as_deref(), Some(signaling_server::ice::turn_password("s3cret", user).as_str()));
    // Not trusted, or not a WebSocket URL: errors that say so.
    let untrusted = fetch(format!("wss://{addr}/ws"), Vec::new()).unwrap_err();
    assert!(untrusted.contains("UnknownIssuer"), "{untrusted}");
    let http = fetch(format!("https://{addr}/"), roots).unwrap_err();
    assert!(http.contains("ws://"), "{http}");
}
