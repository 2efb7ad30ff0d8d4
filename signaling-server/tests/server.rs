//! The signaling server over real sockets on 127.0.0.1: registration with proof of key possession,
//! relaying, and every limit closing only the connection that broke it.

use async_tungstenite::tokio::{connect_async, TokioAdapter};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use dht_core::NodeId;
use dht_link::Identity;
use futures::StreamExt;
use signaling_protocol::{prove, ClientMsg, Hex32, ServerMsg, MAX_MESSAGE};
use signaling_server::server::{Limits, Rate, Server, ServerConfig, Stats};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Ws = WebSocketStream<TokioAdapter<TcpStream>>;

async fn start(config: ServerConfig) -> (SocketAddr, Arc<Stats>) {
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let stats = server.stats();
    tokio::spawn(server.run(std::future::pending()));
    (addr, stats)
}

async fn connect(addr: SocketAddr) -> Ws {
    let (ws, _) = connect_async(format!("ws://{addr}/ws")).await.unwrap();
    ws
}

async fn recv(ws: &mut Ws) -> ServerMsg {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a message in time");
        match m.expect("socket open").expect("no socket error") {
            Message::Text(t) => return ServerMsg::decode(t.as_str()).expect("a protocol message"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, msg: &ClientMsg) {
    ws.send(Message::text(msg.encode())).await.unwrap();
}

/// Reads until the server closes; returns the close code and reason.
async fn closed(ws: &mut Ws) -> (CloseCode, String) {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("closed in time");
        match m {
            Some(Ok(Message::Close(Some(f)))) => return (f.code, f.reason.to_string()),
            Some(Ok(Message::Close(None))) | None => return (CloseCode::Status, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return (CloseCode::Abnormal, e.to_string()),
        }
    }
}

async fn register(addr: SocketAddr, who: &Identity) -> Ws {
    let mut ws = connect(addr).await;
    let ServerMsg::Challenge { nonce, key, .. } = recv(&mut ws).await else { panic!("challenge first") };
    let (public_key, proof) = prove(who.private_bytes(), &nonce, &key).unwrap();
    send(&mut ws, &ClientMsg::Register { public_key, proof, addrs: vec!["tcp:127.0.0.1:4000".into()], work: 0 }).await;
    assert_eq!(recv(&mut ws).await, ServerMsg::Registered { id: who.node_id().into() });
    ws
}

fn id(who: &Identity) -> Hex32 {
    who.node_id().into()
}

#[tokio::test]
async fn registered_peers_relay_by_id_and_find_each_other() {
    let (addr, stats) = start(ServerConfig::default()).await;
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let mut wa = register(addr, &a).await;
    let mut wb = register(addr, &b).await;

    send(&mut wa, &ClientMsg::Peers { max: 10 }).await;
    let ServerMsg::Peers { peers } = recv(&mut wa).await else { panic!("peers") };
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].id, id(&b));
    assert_eq!(peers[0].addrs, vec!["tcp:127.0.0.1:4000".to_string()]);

    send(&mut wa, &ClientMsg::Signal { to: id(&b), data: "offer 1".into() }).await;
    assert_eq!(recv(&mut wb).await, ServerMsg::Signal { from: id(&a), data: "offer 1".into() });
    send(&mut wb, &ClientMsg::Signal { to: id(&a), data: "answer 1".into() }).await;
    assert_eq!(recv(&mut wa).await, ServerMsg::Signal { from: id(&b), data: "answer 1".into() });

    // An unknown addressee is an error, not the end of the connection.
    let nobody = Hex32([9; 32]);
    send(&mut wa, &ClientMsg::Signal { to: nobody, data: "x".into() }).await;
    assert_eq!(recv(&mut wa).await, ServerMsg::Error { reason: "unknown peer".into(), to: Some(nobody) });
    send(&mut wa, &ClientMsg::Signal { to: id(&b), data: "offer 2".into() }).await;
    assert_eq!(recv(&mut wb).await, ServerMsg::Signal { from: id(&a), data: "offer 2".into() });

    assert_eq!(stats.registered.load(Ordering::Relaxed), 2);
    assert_eq!(stats.relayed.load(Ordering::Relaxed), 3);
    drop(wa);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stats.registered.load(Ordering::Relaxed), 1, "a closed connection unregisters");
}

#[tokio::test]
async fn nobody_registers_under_an_id_whose_key_they_do_not_hold() {
    let (addr, stats) = start(ServerConfig::default()).await;
    let (victim, mallory) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let mut wv = register(addr, &victim).await;

    // The victim's public key, with a proof made from another key.
    let mut wm = connect(addr).await;
    let ServerMsg::Challenge { nonce, key, .. } = recv(&mut wm).await else { panic!() };
    let (_, proof) = prove(mallory.private_bytes(), &nonce, &key).unwrap();
    send(&mut wm, &ClientMsg::Register { public_key: Hex32(*victim.public_key()), proof, addrs: vec![], work: 0 })
        .await;
    let (code, reason) = closed(&mut wm).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("proof does not match"), "{reason}");

    // A proof replayed from another connection's challenge.
    let mut w2 = connect(addr).await;
    let ServerMsg::Challenge { nonce, key, .. } = recv(&mut w2).await else { panic!() };
    let (pk, proof) = prove(victim.private_bytes(), &nonce, &key).unwrap();
    let mut w3 = connect(addr).await;
    let _ = recv(&mut w3).await;
    send(&mut w3, &ClientMsg::Register { public_key: pk, proof, addrs: vec![], work: 0 }).await;
    assert!(closed(&mut w3).await.1.contains("proof does not match"));
    drop(w2);

    // A low-order key (its exchange is known to all).
    let mut w4 = connect(addr).await;
    let _ = recv(&mut w4).await;
    send(&mut w4, &ClientMsg::Register { public_key: Hex32([0; 32]), proof: Hex32([0; 32]), addrs: vec![], work: 0 })
        .await;
    assert!(closed(&mut w4).await.1.contains("non-contributory"));

    assert_eq!(stats.refused_registrations.load(Ordering::Relaxed), 3);
    // The victim is still the one registered, and still reachable.
    let other = Identity::generate().unwrap();
    let mut wo = register(addr, &other).await;
    send(&mut wo, &ClientMsg::Signal { to: id(&victim), data: "hi".into() }).await;
    assert_eq!(recv(&mut wv).await, ServerMsg::Signal { from: id(&other), data: "hi".into() });
}

#[tokio::test]
async fn bad_input_closes_only_that_connection_with_a_reason() {
    let (addr, stats) = start(ServerConfig::default()).await;
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let mut wa = register(addr, &a).await;
    let mut wb = register(addr, &b).await;

    let cases: Vec<(Message, CloseCode, &str)> = vec![
        (Message::text("x".repeat(MAX_MESSAGE + 1)), CloseCode::Size, "exceeds"),
        (Message::text("{not json"), CloseCode::Policy, "malformed"),
        (Message::text("{\"type\":\"signal\",\"to\":\"00\",\"data\":\"\"}"), CloseCode::Policy, "malformed"),
        (Message::binary(vec![1, 2, 3]), CloseCode::Policy, "binary"),
    ];
    for (msg, code, what) in cases {
        let c = Identity::generate().unwrap();
        let mut wc = register(addr, &c).await;
        wc.send(msg).await.unwrap();
        let (got, reason) = closed(&mut wc).await;
        assert_eq!(got, code, "{reason}");
        assert!(reason.contains(what), "{reason}");
    }
    // Before registering: anything but a registration.
    let mut wc = connect(addr).await;
    let _ = recv(&mut wc).await;
    send(&mut wc, &ClientMsg::Peers { max: 3 }).await;
    assert!(closed(&mut wc).await.1.contains("register first"));
    // Too many addresses.
    let c = Identity::generate().unwrap();
    let mut wc = connect(addr).await;
    let ServerMsg::Challenge { nonce, key, .. } = recv(&mut wc).await else { panic!() };
    let (public_key, proof) = prove(c.private_bytes(), &nonce, &key).unwrap();
    send(&mut wc, &ClientMsg::Register { public_key, proof, addrs: vec!["a".into(); 5], work: 0 }).await;
    assert!(closed(&mut wc).await.1.contains("addresses"));
    // A signal too large to relay is refused, the connection stays.
    send(&mut wa, &ClientMsg::Signal { to: id(&b), data: "y".repeat(MAX_MESSAGE - 200) }).await;
    assert!(matches!(recv(&mut wa).await, ServerMsg::Error { .. }));

    // Nobody else noticed.
    send(&mut wa, &ClientMsg::Signal { to: id(&b), data: "still here".into() }).await;
    assert_eq!(recv(&mut wb).await, ServerMsg::Signal { from: id(&a), data: "still here".into() });
    assert!(stats.closed_for_cause.load(Ordering::Relaxed) >= 4);
}

#[tokio::test]
async fn deadlines_rates_and_capacity_are_enforced() {
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(1000),
        idle_timeout: Duration::from_millis(400),
        ping_interval: Duration::from_millis(100),
        rate_per_sec: 5,
        rate_burst: 5,
        max_registrations: 3,
        ..ServerConfig::default()
    };
    let (addr, stats) = start(config).await;

    // A WebSocket that never registers.
    let mut ws = connect(addr).await;
    let (_, reason) = closed(&mut ws).await;
    assert!(reason.contains("deadline"), "{reason}");
    // A TCP connection that never finishes its request head (slow-loris).
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf)).await.expect("closed in time");
    assert_eq!(n.unwrap_or(0), 0, "closed without an answer");

    // Over the rate.
    let a = Identity::generate().unwrap();
    let mut wa = register(addr, &a).await;
    for _ in 0..10 {
        if wa.send(Message::text(ClientMsg::Peers { max: 1 }.encode())).await.is_err() {
            break;
        }
    }
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(5), wa.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break f.reason.to_string(),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert!(reason.contains("rate limit"), "{reason}");

    // Capacity: three registrations, the fourth refused.
    let ids: Vec<Identity> = (0..4).map(|_| Identity::generate().unwrap()).collect();
    let mut held = Vec::new();
    for who in &ids[..3] {
        held.push(register(addr, who).await);
    }
    let mut w4 = connect(addr).await;
    let ServerMsg::Challenge { nonce, key, .. } = recv(&mut w4).await else { panic!() };
    let (public_key, proof) = prove(ids[3].private_bytes(), &nonce, &key).unwrap();
    send(&mut w4, &ClientMsg::Register { public_key, proof, addrs: vec![], work: 0 }).await;
    let (code, reason) = closed(&mut w4).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Again, "server full"));

    // Idle: these clients do not read, so they never answer the server's pings.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(stats.registered.load(Ordering::Relaxed), 0, "idle peers are dropped");
    // The close frame says why, unless the client's queued pongs hit the closed socket first.
    let (_, reason) = closed(&mut held[0]).await;
    assert!(reason.contains("idle") || reason.contains("Broken pipe"), "{reason}");
}

#[tokio::test]
async fn a_new_registration_of_the_same_key_replaces_the_old() {
    let (addr, stats) = start(ServerConfig::default()).await;
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let mut old = register(addr, &a).await;
    let mut new = register(addr, &a).await;
    let (_, reason) = closed(&mut old).await;
    assert!(reason.contains("replaced"), "{reason}");
    let mut wb = register(addr, &b).await;
    send(&mut wb, &ClientMsg::Signal { to: id(&a), data: "to the new one".into() }).await;
    assert_eq!(recv(&mut new).await, ServerMsg::Signal { from: id(&b), data: "to the new one".into() });
    assert_eq!(stats.registered.load(Ordering::Relaxed), 2);
}

async fn http_get(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_same_port_serves_the_web_page() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>webdht</h1>").unwrap();
    std::fs::create_dir(dir.path().join("pkg")).unwrap();
    std::fs::write(dir.path().join("pkg/web_node_bg.wasm"), [0, 97, 115, 109]).unwrap();
    std::fs::write(dir.path().join(".secret"), "no").unwrap();
    let (addr, _) = start(ServerConfig { web_dir: Some(dir.path().into()), ..ServerConfig::default() }).await;

    let page = http_get(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n") && page.ends_with("<h1>webdht</h1>"), "{page}");
    assert!(page.contains("Content-Type: text/html"));
    // The page may run its own scripts and wasm only, in no frame, and sends no referrer.
    for header in [
        "Content-Security-Policy: default-src 'self'; script-src 'self' 'wasm-unsafe-eval';",
        "frame-ancestors 'none'",
        "Referrer-Policy: no-referrer\r\n",
        "X-Frame-Options: DENY\r\n",
    ] {
        assert!(page.contains(header), "{header}: {page}");
    }
    // Read at start: a file changed on disk afterwards is not what is served.
    std::fs::write(dir.path().join("index.html"), "<h1>changed</h1>").unwrap();
    assert!(http_get(addr, "GET / HTTP/1.1\r\n\r\n").await.ends_with("<h1>webdht</h1>"));
    let wasm = http_get(addr, "GET /pkg/web_node_bg.wasm HTTP/1.1\r\n\r\n").await;
    assert!(wasm.contains("Content-Type: application/wasm") && wasm.contains("Content-Length: 4"), "{wasm}");
    for bad in ["/../Cargo.toml", "/.secret", "/missing.js"] {
        let r = http_get(addr, &format!("GET {bad} HTTP/1.1\r\n\r\n")).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{bad}: {r}");
    }
    assert!(http_get(addr, "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await.starts_with("HTTP/1.1 405"));
    assert!(http_get(addr, "\x16\x03\x01garbage\r\n\r\n").await.starts_with("HTTP/1.1 400"));
    let stats = http_get(addr, "GET /stats HTTP/1.1\r\n\r\n").await;
    let body = stats.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(v["http_requests"].as_u64().unwrap() >= 5);

    // And the WebSocket still works next to it.
    let a = Identity::generate().unwrap();
    let _ws = register(addr, &a).await;
    let _ = NodeId::from(id(&a));
}

#[tokio::test]
async fn probing_unknown_ids_is_cut_off_quickly() {
    // A burst of 50 would allow 50 requests; signals nobody can take cost 10 each, so the prober is closed
    // after about 5 while its first answers are errors naming the unknown peer.
    let config = ServerConfig { rate_per_sec: 1, rate_burst: 50, ..ServerConfig::default() };
    let (addr, _) = start(config).await;
    let prober = Identity::generate().unwrap();
    let mut ws = register(addr, &prober).await;
    let unknown = id(&Identity::generate().unwrap());
    let mut answered = 0;
    let reason = loop {
        send(&mut ws, &ClientMsg::Signal { to: unknown, data: "offer".into() }).await;
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an answer") {
            Some(Ok(Message::Text(t))) => {
                let msg = ServerMsg::decode(t.as_str()).unwrap();
                assert!(matches!(msg, ServerMsg::Error { to: Some(to), .. } if to == unknown), "{msg:?}");
                answered += 1;
                assert!(answered < 20, "still served after {answered} undeliverable signals");
            }
            Some(Ok(Message::Close(Some(f)))) => break f.reason.to_string(),
            other => panic!("{other:?}"),
        }
    };
    assert!(reason.contains("rate limit"), "{reason}");
    assert!((4..=6).contains(&answered), "answered {answered}");
}

/// Connects from `source` (any 127.0.0.0/8 address is loopback) and asks for `/stats`; `None` when the
/// server closed the connection without an answer.
async fn stats_from(addr: SocketAddr, source: [u8; 4]) -> Option<String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut s = socket.connect(addr).await.ok()?;
    let _ = s.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn addresses_that_connect_too_fast_or_misbehave_are_throttled() {
    let config = ServerConfig {
        admission: Limits { addr_rate: Rate { per_sec: 1, burst: 5 }, ..ServerConfig::default().admission },
        refused_hold: Duration::ZERO,
        ..ServerConfig::default()
    };
    let (addr, stats) = start(config).await;
    // A burst of ten from one address: five served, the rest closed at accept.
    let mut served = 0;
    for _ in 0..10 {
        served += usize::from(stats_from(addr, [127, 0, 0, 2]).await.is_some());
    }
    assert_eq!(served, 5);
    assert_eq!(stats.refused_connections.load(Ordering::Relaxed), 5);
    // Another address is not affected.
    assert!(stats_from(addr, [127, 0, 0, 3]).await.is_some());
    // One connection closed for cause (malformed registration) empties that address's bucket.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 4], 0))).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut ws, _) = async_tungstenite::tokio::client_async(format!("ws://{addr}/ws"), stream).await.unwrap();
    let _challenge = recv(&mut ws).await;
    ws.send(Message::text("{not json")).await.unwrap();
    let (code, _) = closed(&mut ws).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(stats_from(addr, [127, 0, 0, 4]).await.is_none(), "a misbehaving address waits its turn");
}

#[tokio::test]
async fn refused_connections_are_held_open_up_to_a_cap() {
    let hold = Duration::from_millis(400);
    let config = ServerConfig {
        admission: Limits { addr_rate: Rate { per_sec: 1, burst: 1 }, ..ServerConfig::default().admission },
        refused_hold: hold,
        max_held_per_ip: 2,
        ..ServerConfig::default()
    };
    let (addr, stats) = start(config).await;
    let connect = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 6], 0))).unwrap();
        socket.connect(addr).await.unwrap()
    };
    let _admitted = connect().await;
    // Refused: the first two are held open, unread, for `hold`; the third finds the cap taken and is
    // closed at once.
    let mut held = vec![connect().await, connect().await];
    let mut third = connect().await;
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buf)).await.unwrap();
    assert!(n.is_err() || buf.is_empty(), "closed without a byte");
    assert!(started.elapsed() < hold, "beyond the cap: closed at once ({:?})", started.elapsed());
    for s in &mut held {
        buf.clear();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.unwrap();
        assert!(buf.is_empty());
    }
    assert!(started.elapsed() >= hold - Duration::from_millis(100), "held about {hold:?}: {:?}", started.elapsed());
    assert_eq!(stats.refused_connections.load(Ordering::Relaxed), 3);
    assert_eq!(stats.held_connections.load(Ordering::Relaxed), 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(stats.holding.load(Ordering::Relaxed), 0, "every hold released");
}

/// Connections spread over the addresses of one /24: before, each address had its own cap and the subnet
/// held them all (here 20); now the subnet holds at most its share (8), and another subnet still gets in.
#[tokio::test]
async fn one_subnet_holds_at_most_its_share_of_connections() {
    let config = ServerConfig {
        admission: Limits { per_addr: 4, per_subnet: 8, ..ServerConfig::default().admission },
        refused_hold: Duration::ZERO,
        ..ServerConfig::default()
    };
    let (addr, stats) = start(config).await;
    let mut idle = Vec::new();
    for host in 1..=5u8 {
        for _ in 0..4 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from(([127, 0, 2, host], 0))).unwrap();
            idle.push(socket.connect(addr).await.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stats.connections.load(Ordering::Relaxed), 8, "the subnet's share");
    assert_eq!(stats.refused_connections.load(Ordering::Relaxed), 12);
    assert!(stats_from(addr, [127, 0, 3, 1]).await.is_some(), "another subnet is served");
}

/// A client that answers every ping could hold its registration for ever; it is closed at the end of its
/// lifetime with a reason (and reconnects).
#[tokio::test]
async fn a_connection_that_answers_pings_still_ends_at_its_lifetime() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(400),
        ping_interval: Duration::from_millis(100),
        max_lifetime: Duration::from_millis(800),
        ..ServerConfig::default()
    };
    let (addr, stats) = start(config).await;
    let started = std::time::Instant::now();
    let mut ws = register(addr, &Identity::generate().unwrap()).await;
    // Reading answers the server's pings: the connection is never idle.
    let (code, reason) = closed(&mut ws).await;
    let lasted = started.elapsed();
    assert_eq!(code, CloseCode::Away);
    assert!(reason.contains("lifetime"), "{reason}");
    assert!(lasted >= Duration::from_millis(800) && lasted < Duration::from_secs(3), "{lasted:?}");
    assert_eq!(stats.registered.load(Ordering::Relaxed), 0);
}

/// A WebSocket upgrade as a browser on `origin` sends it (or, without one, as a native client does), from
/// loopback address `source`, through a proxy naming `forwarded`: the status line of the answer, and the
/// connection (open while the server keeps it).
async fn upgrade_held(
    addr: SocketAddr,
    source: [u8; 4],
    origin: Option<&str>,
    forwarded: Option<&str>,
) -> (String, TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let mut req = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        .to_string();
    if let Some(o) = origin {
        req.push_str(&format!("Origin: {o}\r\n"));
    }
    if let Some(f) = forwarded {
        req.push_str(&format!("X-Forwarded-For: {f}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    (String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string(), s)
}

/// [`upgrade_held`], the connection dropped.
async fn upgrade_from(addr: SocketAddr, source: [u8; 4], origin: Option<&str>, forwarded: Option<&str>) -> String {
    upgrade_held(addr, source, origin, forwarded).await.0
}

/// A page on another site could make its visitors' browsers register here (and spend the server's
/// capacity in their name): with `--allow-origin`, only the named origins' pages may open a WebSocket.
#[tokio::test]
async fn only_allowed_origins_open_websockets() {
    let (open, _) = start(ServerConfig::default()).await;
    assert!(upgrade_from(open, [127, 0, 0, 1], Some("https://evil.example"), None).await.contains("101"));
    let config = ServerConfig { allow_origins: vec!["https://webdht.example".into()], ..ServerConfig::default() };
    let (addr, _) = start(config).await;
    assert!(upgrade_from(addr, [127, 0, 0, 1], Some("https://evil.example"), None).await.contains("403"));
    assert!(upgrade_from(addr, [127, 0, 0, 1], Some("https://webdht.example"), None).await.contains("101"));
    assert!(upgrade_from(addr, [127, 0, 0, 1], None, None).await.contains("101"), "native clients send none");
}

/// Behind a reverse proxy every client has the proxy's address: with `--trust-proxy`, the proxy's
/// connections count by the client it names, so one client cannot take every slot and the others keep
/// theirs. A client that is not the proxy cannot pick the address it is counted as.
#[tokio::test]
async fn behind_a_trusted_proxy_clients_are_counted_by_their_own_address() {
    let config = ServerConfig {
        admission: Limits { per_addr: 2, ..ServerConfig::default().admission },
        trust_proxy: Some([127, 0, 0, 7].into()),
        handshake_timeout: Duration::from_secs(3),
        ..ServerConfig::default()
    };
    let (addr, stats) = start(config).await;
    let proxy = [127, 0, 0, 7];
    // Two connections of client 203.0.113.5 through the proxy (held open), then a third: over its cap.
    let mut kept = Vec::new();
    for _ in 0..2 {
        let (status, conn) = upgrade_held(addr, proxy, None, Some("198.51.100.1, 203.0.113.5")).await;
        assert!(status.contains("101"), "{status}");
        kept.push(conn);
    }
    let busy = upgrade_from(addr, proxy, None, Some("198.51.100.1, 203.0.113.5")).await;
    assert!(busy.contains("429"), "{busy}");
    assert!(upgrade_from(addr, proxy, None, Some("203.0.113.6")).await.contains("101"), "another client");
    assert!(upgrade_from(addr, proxy, None, None).await.contains("400"), "the proxy must name the client");
    // From elsewhere the header is ignored: 127.0.0.8 is counted as itself, whatever it claims.
    let claims = upgrade_from(addr, [127, 0, 0, 8], None, Some("203.0.113.99")).await;
    assert!(claims.contains("101"), "{claims}");
    assert!(stats.refused_connections.load(Ordering::Relaxed) >= 1);
}

/// One address fetching the page's files over and over (the wasm is megabytes) gets 429 once its byte
/// budget is spent, while another address is served; and a connection asking for `peers` again and again
/// is closed once its answers pass their byte budget (before, each was bounded only in count).
#[tokio::test]
async fn file_and_peers_bytes_are_budgeted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>webdht</h1>").unwrap();
    std::fs::write(dir.path().join("big.wasm"), vec![0u8; 6000]).unwrap();
    let config = ServerConfig {
        web_dir: Some(dir.path().into()),
        http_bytes_per_addr: Rate { per_sec: 100, burst: 10_000 },
        peers_bytes_per_conn: Rate { per_sec: 10, burst: 2_000 },
        rate_per_sec: 1000,
        rate_burst: 1000,
        ..ServerConfig::default()
    };
    let (addr, _) = start(config).await;
    let get = |source: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(b"GET /big.wasm HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_string()
    };
    assert!(get([127, 0, 0, 21]).await.contains("200"));
    assert!(get([127, 0, 0, 21]).await.contains("429"), "6,000 + 6,000 bytes over a 10,000 burst");
    assert!(get([127, 0, 0, 22]).await.contains("200"), "another address has its own budget");

    // Peers answers: ten registered peers make each answer a few hundred bytes.
    let others: Vec<Identity> = (0..10).map(|_| Identity::generate().unwrap()).collect();
    let mut held = Vec::new();
    for o in &others {
        held.push(register(addr, o).await);
    }
    let mut ws = register(addr, &Identity::generate().unwrap()).await;
    let mut answers = 0;
    let reason = loop {
        send(&mut ws, &ClientMsg::Peers { max: 32 }).await;
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
            Some(Ok(Message::Text(_))) => answers += 1,
            Some(Ok(Message::Close(Some(f)))) => break f.reason.to_string(),
            other => panic!("{other:?}"),
        }
        assert!(answers < 100, "never cut off");
    };
    assert!(reason.contains("byte budget"), "{reason}");
    assert!((1..=4).contains(&answers), "answers of several hundred bytes within 2,000: {answers}");
}

/// With `--registration-work`, a registration without the work is refused (each made-up id costs its
/// maker about 2^bits hashes); one that carries it is registered, as the transport's client does by itself.
#[tokio::test]
async fn registrations_carry_the_work_asked_for() {
    let (addr, stats) = start(ServerConfig { registration_work: 14, ..ServerConfig::default() }).await;
    let who = Identity::generate().unwrap();
    let attempt = |counter: Option<u64>| {
        let who = &who;
        async move {
            let mut ws = connect(addr).await;
            let ServerMsg::Challenge { nonce, key, work } = recv(&mut ws).await else { panic!("challenge first") };
            assert_eq!(work, 14);
            let (public_key, proof) = prove(who.private_bytes(), &nonce, &key).unwrap();
            let work = counter.unwrap_or_else(|| signaling_protocol::solve_work(&nonce, &public_key, 14).unwrap());
            send(&mut ws, &ClientMsg::Register { public_key, proof, addrs: vec![], work }).await;
            (recv_or_close(&mut ws).await, nonce, public_key)
        }
    };
    let (answer, nonce, public_key) = attempt(Some(0)).await;
    if !signaling_protocol::work_ok(&nonce, &public_key, 0, 14) {
        assert!(answer.contains("bits of work"), "{answer}");
    }
    let (answer, _, _) = attempt(None).await;
    assert!(answer.contains("Registered"), "{answer}");
    assert_eq!(stats.registered.load(Ordering::Relaxed), 1);
}

/// The next message, or the close frame's reason, as text.
async fn recv_or_close(ws: &mut Ws) -> String {
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an answer in time") {
        Some(Ok(Message::Text(t))) => format!("{:?}", ServerMsg::decode(t.as_str())),
        Some(Ok(Message::Close(Some(f)))) => f.reason.to_string(),
        other => format!("{other:?}"),
    }
}

/// Pages learn their ICE servers from `GET /config`: STUN as configured, TURN with credentials that expire
/// (the TURN REST form coturn's `use-auth-secret` checks), so no TURN password is written into a page.
#[tokio::test]
async fn pages_get_ice_servers_with_expiring_turn_credentials() {
    use signaling_server::ice::{turn_password, IceConfig};
    let ice = IceConfig {
        servers: vec!["stun:192.0.2.1:3478".into(), "turn:192.0.2.1:3478?transport=udp".into()],
        turn_secret: Some("shared-with-coturn".into()),
        credential_ttl: Duration::from_secs(600),
    };
    let (addr, _) = start(ServerConfig { ice, ..ServerConfig::default() }).await;
    let answer = http_get(addr, "GET /config HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.contains("application/json"), "{answer}");
    let doc: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let turn = &doc["iceServers"][1];
    let username = turn["username"].as_str().unwrap();
    let expiry: u64 = username.split(':').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 595..=now + 605).contains(&expiry), "expires in the configured 600 s: {expiry} vs {now}");
    assert_eq!(turn["credential"].as_str().unwrap(), turn_password("shared-with-coturn", username));
    assert_eq!(doc["iceServers"][0]["urls"], "stun:192.0.2.1:3478");
    // Two pages get different usernames (and so different passwords).
    let again = http_get(addr, "GET /config HTTP/1.1\r\n\r\n").await;
    assert!(!again.contains(username));
}
