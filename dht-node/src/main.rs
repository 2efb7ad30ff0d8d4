//! `dht-node`: a native webdht node (bootstrap node) over TCP and WebRTC, storing in sled.
//!
//! Run: `dht-node --listen 127.0.0.1:4000 --data-dir DIR [--bootstrap 127.0.0.1:4001 ...]
//! [--signaling ws://127.0.0.1:8080/ws]`.
//! Scripts talk to a running node through its control socket: `dht-node ctl --data-dir DIR put NAME VALUE`,
//! `get NAME`, `peers`, `id` (see README: one request line, one answer line).

mod control;
mod files;

use clap::{Parser, Subcommand};
use dht_core::{Contact, NodeId};
use dht_driver::{setup, start, DriverConfig, NodeHandle, SharedClock, Transport, Transports};
use kvstore::SledStore;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use transport_tcp::{Prober, TcpConfig, TcpTransport};
use transport_webrtc::{RtcConfig, WebRtcTransport};

/// A webdht node: joins the swarm over TCP and (with --signaling) WebRTC, stores records for others in sled,
/// and answers a local control socket. Its key lives in the data directory, so a restart keeps its id, records and routing table.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Ctl>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// TCP address to listen on for peers (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:4000")]
    listen: SocketAddr,
    /// Directory for the key, the sled database and the control address (created if missing).
    #[arg(long, default_value = "dht-data")]
    data_dir: PathBuf,
    /// A node to join through, as ID@ADDR (the node must prove that id in the handshake: anyone else at
    /// that address is refused) or a bare TCP ADDR (its id is taken from its first handshake: trusted on
    /// first use); repeat for several. A node's id is in the answer to `ID` on its control socket.
    #[arg(long)]
    bootstrap: Vec<BootstrapPeer>,
    /// Address of the control socket (loopback only); its actual address is written to DATA_DIR/control.addr.
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// Signaling server to register with (e.g. ws://127.0.0.1:8080/ws, or wss:// with TLS): the node then also accepts and
    /// dials WebRTC links (browser tabs reach it this way), and joins through peers the server hands out.
    /// Repeat for fallbacks: the first that answers at start is used, and the next that answers when the
    /// one in use goes away.
    #[arg(long)]
    signaling: Vec<String>,
    /// A certificate (PEM; a private CA's, say) to trust for a wss:// --signaling server besides the
    /// system's roots; repeat for several.
    #[arg(long)]
    ca: Vec<PathBuf>,
    /// Local UDP address for WebRTC host candidates (with --signaling); 127.0.0.1:0 keeps WebRTC on loopback.
    #[arg(long, default_value = "127.0.0.1:0")]
    rtc_udp: String,
    /// ICE server URL for WebRTC (stun:/turn:), repeatable. Those the --signaling server hands out at
    /// GET /config (TURN with expiring credentials) are used too.
    #[arg(long)]
    ice_server: Vec<String>,
    /// Do not listen on TCP: a WebRTC-only node (needs --signaling).
    #[arg(long)]
    no_tcp: bool,
    /// Messages a peer may send a second on one TCP link (after a burst of twice as many); past it the link
    /// stops reading from that peer for a while. A file's chunk costs two (a lookup and a store), so this
    /// bounds what one peer can upload to this node (and, in a swarm of two, how fast a file goes out).
    #[arg(long, default_value_t = 1000)]
    peer_rate: u32,
    /// Dial the loopback, private and link-local TCP addresses that peers hand out even when --listen is not
    /// in such a range (a swarm on a LAN). Without it a node dials, besides public addresses, only the
    /// ranges its own listening address is in, so no peer can point it at the operator's network.
    #[arg(long)]
    dial_private: bool,
    /// Largest file the control socket's PUBLISH and FETCH accept, in bytes.
    #[arg(long, default_value_t = dht_files::DEFAULT_MAX_FILE_LEN)]
    max_file_bytes: u64,
}

/// Commands sent to a running node's control socket.
#[derive(Debug, Subcommand)]
enum Ctl {
    /// Talk to a running node.
    Ctl {
        /// The running node's data directory (its control address is read from there).
        #[arg(long)]
        data_dir: PathBuf,
        /// put NAME VALUE | get NAME [OWNER] | put-immutable VALUE | get-immutable HASH | publish PATH |
        /// fetch HASH PATH | peers | id | owner (paths are taken from the current directory)
        #[arg(required = true, num_args = 1..)]
        request: Vec<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Ctl::Ctl { data_dir, request }) => match control::absolute_paths(request) {
            Ok(request) => rt.block_on(control::client(&data_dir, &request.join(" "))),
            Err(e) => Err(e),
        },
        None => {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, run(cli.run))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A node to join through (`--bootstrap`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum BootstrapPeer {
    /// `ID@ADDR`: the node at ADDR must prove the id.
    Pinned(NodeId, SocketAddr),
    /// `ADDR`: whoever answers there, its id learned in the handshake.
    Addr(SocketAddr),
}

impl std::str::FromStr for BootstrapPeer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addr = |a: &str| a.parse::<SocketAddr>().map_err(|e| format!("{a:?} is not a TCP address: {e}"));
        match s.split_once('@') {
            Some((id, rest)) => {
                let id = id.parse::<NodeId>().map_err(|e| format!("the id before '@': {e}"))?;
                Ok(BootstrapPeer::Pinned(id, addr(rest)?))
            }
            None => Ok(BootstrapPeer::Addr(addr(s)?)),
        }
    }
}

/// The contacts to join through: pinned bootstrap nodes as given (the dial checks their id, and a join
/// that reaches nobody is tried again), bare addresses probed by a handshake (their id learned on first
/// use), and peers registered on the signaling server, with the addresses they advertised. Also returns
/// the bare addresses that did not answer, for [`probe_until_joined`].
async fn bootstrap_seeds(
    bootstrap: &[BootstrapPeer],
    tcp: Option<&TcpTransport>,
    rtc: Option<&WebRtcTransport>,
) -> (Vec<Contact>, Vec<SocketAddr>) {
    let mut seeds = Vec::new();
    let mut unreached = Vec::new();
    if let Some(t) = tcp {
        for peer in bootstrap {
            match peer {
                BootstrapPeer::Pinned(id, addr) => {
                    seeds.push(Contact { id: *id, addrs: vec![transport_tcp::address(*addr)] });
                }
                BootstrapPeer::Addr(addr) => {
                    tracing::warn!(%addr, "bootstrap node not pinned: its id is trusted on first use (give it as ID@ADDR)");
                    match t.prober().probe(*addr).await {
                        Ok(c) => seeds.push(c),
                        Err(e) => {
                            tracing::warn!(%addr, "bootstrap node unreachable: {e}; trying again in the background");
                            unreached.push(*addr);
                        }
                    }
                }
            }
        }
    }
    if let Some(t) = rtc {
        seeds.extend(t.signaling().seeds(8).await);
    }
    (seeds, unreached)
}

/// First wait between probes of a bootstrap address that did not answer; it doubles up to [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between probes of a bootstrap address.
const PROBE_MAX: Duration = Duration::from_secs(300);

/// Probes a bare bootstrap address that did not answer at start (down, or every slot taken) again and again,
/// waiting 1 s, then twice as long each time up to 5 min, and joins through it once it answers. (A pinned
/// node, or a bare one that answered once, is the core's to retry: its join keeps its seeds.)
async fn probe_until_joined(addr: SocketAddr, prober: Prober, handle: NodeHandle) {
    let mut wait = PROBE_FIRST;
    loop {
        tokio::time::sleep(wait).await;
        match prober.probe(addr).await {
            Ok(contact) => {
                match handle.bootstrap(vec![contact]).await {
                    Ok(found) => {
                        tracing::info!(%addr, peers = found.len(), "joined through a bootstrap node that answered late")
                    }
                    Err(e) => tracing::warn!(%addr, "join through a late bootstrap node failed: {e}"),
                }
                return;
            }
            Err(e) => tracing::debug!(%addr, "bootstrap node still unreachable: {e}"),
        }
        wait = (wait * 2).min(PROBE_MAX);
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    if !args.control.ip().is_loopback() {
        return Err(format!("--control must be a loopback address, got {}", args.control));
    }
    std::fs::create_dir_all(&args.data_dir).map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let store = SledStore::open(args.data_dir.join("db")).map_err(|e| e.to_string())?;
    let identity = setup::load_identity(&store).await.map_err(|e| e.to_string())?;
    if args.no_tcp && args.signaling.is_empty() {
        return Err("--no-tcp needs --signaling (the node would be unreachable)".into());
    }
    // One clock for the transports and the driver, with tokio's timers: on the LocalSet they wake their
    // task at once, where futures-timer's wakes from another thread wait behind local work.
    let clock = SharedClock::new(transport_tcp::TokioClock);
    let mut transports: Vec<Box<dyn Transport>> = Vec::new();
    let mut addrs = Vec::new();
    let mut tcp = None;
    if !args.no_tcp {
        let config = TcpConfig {
            clock: clock.clone(),
            peer_rate: args.peer_rate,
            peer_burst: args.peer_rate.saturating_mul(2),
            dial_private: args.dial_private,
            ..TcpConfig::default()
        };
        let t = TcpTransport::bind(args.listen, identity.clone(), vec![], config)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        addrs.extend(t.local_contact().addrs.iter().cloned());
        tcp = Some(t);
    }
    let mut rtc = None;
    if let Some((url, more)) = args.signaling.split_first() {
        let mut tls_roots = Vec::new();
        for file in &args.ca {
            tls_roots.extend(transport_webrtc::read_pem_certificates(file).map_err(|e| format!("--ca {e}"))?);
        }
        let mut ice_servers: Vec<_> = args.ice_server.iter().map(transport_webrtc::IceServer::url).collect();
        // From the first server that hands them out.
        for server in &args.signaling {
            match transport_webrtc::fetch_ice_servers(server, &tls_roots).await {
                Ok(served) => {
                    tracing::info!(%server, servers = served.len(), "ICE servers from the signaling server");
                    ice_servers.extend(served);
                    break;
                }
                Err(e) => tracing::warn!(%server, "no ICE servers from the signaling server: {e}"),
            }
        }
        let config = RtcConfig {
            tls_roots,
            ice_servers,
            more_signaling: more.to_vec(),
            udp_addrs: vec![args.rtc_udp.clone()],
            clock: clock.clone(),
            ..RtcConfig::loopback(url.clone())
        };
        let t = WebRtcTransport::start(identity.clone(), addrs.clone(), config)
            .await
            .map_err(|e| format!("cannot register with {}: {e}", args.signaling.join(" or ")))?;
        addrs = t.local_addrs().to_vec();
        rtc = Some(t);
    }
    // Peers met over TCP learn the WebRTC address too (to hand to nodes without TCP, with a relay).
    if let Some(t) = &mut tcp {
        t.advertise(&addrs);
    }
    let contact = Contact { id: identity.node_id(), addrs };
    tracing::info!(id = %format!("{:#}", contact.id), addrs = ?contact.addrs.iter().map(|a| a.as_str()).collect::<Vec<_>>(), "node starting");
    let (seeds, unreached) = bootstrap_seeds(&args.bootstrap, tcp.as_ref(), rtc.as_ref()).await;
    let prober = tcp.as_ref().map(TcpTransport::prober);
    let paths = rtc.as_ref().map(WebRtcTransport::paths).unwrap_or_default();
    if let Some(t) = tcp {
        transports.push(Box::new(t));
    }
    if let Some(t) = rtc {
        transports.push(Box::new(t));
    }
    let transport = Transports(transports);
    let config = DriverConfig {
        signer: setup::load_signing_key(&store).await.map_err(|e| e.to_string())?.into(),
        ..DriverConfig::new(contact.clone(), setup::random_seed().map_err(|e| e.to_string())?)
    };
    let (handle, task) = start(config, transport, store, clock);
    let node_task = tokio::task::spawn_local(task);
    let control =
        control::serve(args.control, &args.data_dir, handle.clone(), contact.clone(), paths, args.max_file_bytes)
            .await?;
    for addr in unreached {
        let prober = prober.clone().expect("bare addresses are probed over TCP");
        tokio::task::spawn_local(probe_until_joined(addr, prober, handle.clone()));
    }
    if !seeds.is_empty() {
        let found = handle.bootstrap(seeds).await.map_err(|e| e.to_string())?;
        tracing::info!(peers = found.len(), "joined");
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        _ = control => tracing::info!("control socket closed"),
    }
    handle.shutdown();
    let _ = node_task.await;
    tracing::info!("stopped");
    Ok(())
}
