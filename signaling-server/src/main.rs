//! The signaling server binary.

use clap::Parser;
use signaling_server::ice::IceConfig;
use signaling_server::server::{Limits, Rate, Server, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// webdht signaling server: nodes register under their node id (proving they hold its key), then relay
/// WebRTC offers, answers and ICE candidates to each other by id. The same port serves the web page
/// (`--web-dir`) and counters as JSON at /stats.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory served over HTTP (its index.html at /); without it a placeholder page is served.
    #[arg(long)]
    web_dir: Option<PathBuf>,
    /// Registered peers at once; registrations beyond are refused ("server full").
    #[arg(long, default_value_t = 20_000)]
    max_registrations: usize,
    /// Open connections at once from one IP address.
    #[arg(long, default_value_t = 256)]
    max_per_ip: usize,
    /// Open connections at once from one subnet (a /24 of IPv4, a /64 of IPv6).
    #[arg(long, default_value_t = 1024)]
    max_per_subnet: usize,
    /// New connections per second one IP address may open on average (refused at accept beyond); a subnet
    /// may open four times as many.
    #[arg(long, default_value_t = 20)]
    conn_rate: u32,
    /// Milliseconds a connection refused at accept is held open, unread, before it is closed (up to
    /// --max-per-ip of them per address, 4,096 in all), so clients that reconnect at once wait; 0 closes
    /// at once.
    #[arg(long, default_value_t = 5000)]
    refused_hold_ms: u64,
    /// New connections one IP address may open in a burst.
    #[arg(long, default_value_t = 100)]
    conn_burst: u32,
    /// Seconds from connect to completed registration.
    #[arg(long, default_value_t = 10)]
    handshake_secs: u64,
    /// Seconds a registered connection may stay silent (pongs count) before it is closed.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Seconds a registered connection lasts at most, pongs or not (clients reconnect by themselves).
    #[arg(long, default_value_t = 3600)]
    lifetime_secs: u64,
    /// Messages per second a connection may send on average.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Messages a connection may send in a burst.
    #[arg(long, default_value_t = 200)]
    burst: u32,
    /// An origin (`https://example.org`) whose pages may use this server; repeat for several. Without
    /// it any page may (development only: a warning says so at start).
    #[arg(long = "allow-origin")]
    allow_origins: Vec<String>,
    /// The address of a reverse proxy in front of the server: its connections are counted by the client
    /// address it names in X-Forwarded-For (the header is ignored from anywhere else).
    #[arg(long)]
    trust_proxy: Option<std::net::IpAddr>,
    /// An ICE server for pages (`stun:HOST:PORT`, `turn:HOST:PORT?transport=udp`), handed out at GET /config;
    /// repeat for several.
    #[arg(long = "ice-server")]
    ice_servers: Vec<String>,
    /// The secret shared with the TURN server (coturn's static-auth-secret): pages get TURN credentials
    /// that expire after --turn-credential-secs instead of a password.
    #[arg(long)]
    turn_secret: Option<String>,
    /// Seconds handed-out TURN credentials last.
    #[arg(long, default_value_t = 24 * 3600)]
    turn_credential_secs: u64,
    /// Bits of proof of work each registration must carry (0: none; at most 24): a registration then costs
    /// its client about 2^BITS hashes (20 bits: about a second in a browser).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=24))]
    registration_work: u8,
    /// Serve HTTPS and WSS with this certificate chain (PEM, leaf first); needs --tls-key. Without it the
    /// server speaks plain HTTP and WS (for loopback development).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match signaling_server::tls::server_config(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("error: TLS: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        _ => None,
    };
    let (http, ws) = if tls.is_some() { ("https", "wss") } else { ("http", "ws") };
    let config = ServerConfig {
        max_registrations: args.max_registrations,
        admission: Limits {
            total: args.max_registrations + 1024,
            per_addr: args.max_per_ip.max(1),
            per_subnet: args.max_per_subnet.max(1),
            addr_rate: Rate { per_sec: args.conn_rate.max(1), burst: args.conn_burst.max(1) },
            subnet_rate: Rate {
                per_sec: args.conn_rate.max(1).saturating_mul(4),
                burst: args.conn_burst.max(1).saturating_mul(4),
            },
            ..ServerConfig::default().admission
        },
        refused_hold: Duration::from_millis(args.refused_hold_ms),
        max_held_per_ip: args.max_per_ip,
        handshake_timeout: Duration::from_secs(args.handshake_secs.max(1)),
        idle_timeout: Duration::from_secs(args.idle_secs.max(1)),
        max_lifetime: Duration::from_secs(args.lifetime_secs.max(1)),
        ping_interval: Duration::from_secs((args.idle_secs / 3).max(1)),
        rate_per_sec: args.rate.max(1),
        rate_burst: args.burst.max(1),
        registration_work: args.registration_work,
        ice: IceConfig {
            servers: args.ice_servers.clone(),
            turn_secret: args.turn_secret.clone(),
            credential_ttl: Duration::from_secs(args.turn_credential_secs.max(60)),
        },
        allow_origins: args.allow_origins.clone(),
        trust_proxy: args.trust_proxy,
        web_dir: args.web_dir,
        tls,
        ..ServerConfig::default()
    };
    let turn = config.ice.servers.iter().any(|u| u.starts_with("turn"));
    if turn && config.ice.turn_secret.is_none() {
        tracing::warn!("TURN servers without --turn-secret: pages get them without credentials");
    }
    if config.allow_origins.is_empty() {
        tracing::warn!("any web page may open WebSockets here: give --allow-origin for a deployment");
    }
    if let Some(dir) = &config.web_dir {
        if !dir.is_dir() {
            eprintln!("error: --web-dir {} is not a directory", dir.display());
            return std::process::ExitCode::from(2);
        }
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let server = match Server::bind(args.listen, config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot start on {}: {e}", args.listen);
                return std::process::ExitCode::FAILURE;
            }
        };
        let addr = server.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!("signaling server listening on {ws}://{addr}/ and {http}://{addr}/");
        // Scripts read this line to learn the port when --listen used port 0.
        println!("listening {addr}");
        server
            .run(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
        tracing::info!("shut down");
        std::process::ExitCode::SUCCESS
    })
}
