//! The native backend: webrtc-rs peer connections and an async-tungstenite signaling socket, on tokio.
//! Link tasks are spawned with `tokio::task::spawn_local`: run the node inside a `tokio::task::LocalSet`.

use crate::signaling::SignalSocket;
use crate::transport::{Candidate, Fresh, RtcPeer, Setup};
use crate::{IceCandidate, RtcConfig, MAX_CANDIDATES, MAX_CHUNK};
use async_tungstenite::tungstenite::Message as WsMessage;
use dht_link_io::ChannelPipe;
use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit, RTCDataChannelState};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceServer,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

/// Spawns a task on the current `LocalSet`.
pub(crate) fn spawn(f: impl Future<Output = ()> + 'static) {
    tokio::task::spawn_local(f);
}

// ---------------------------------------------------------------------------------------------------------
// Signaling socket

/// A signaling connection's bytes: TCP (`ws://`), or TLS over it (`wss://`).
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

type Ws = async_tungstenite::WebSocketStream<async_tungstenite::tokio::TokioAdapter<Box<dyn Stream>>>;

/// A WebSocket client over tokio TCP, with TLS for `wss://`.
pub(crate) struct Socket(Ws);

/// The certificates (DER) in a PEM file, for [`RtcConfig::tls_roots`]: a clear error for a file that cannot
/// be read or holds none.
pub fn read_pem_certificates(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file (PEM \"CERTIFICATE\" blocks expected)", path.display()));
    }
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

/// The system's trusted roots (read once) plus `extra` (DER certificates), for TLS to signaling servers.
fn tls_connector(extra: &[Vec<u8>]) -> Result<tokio_rustls::TlsConnector, String> {
    use tokio_rustls::rustls::{self, pki_types::CertificateDer, RootCertStore};
    static SYSTEM: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    let system = SYSTEM.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!("system certificates: {e}");
        }
        found.certs
    });
    let mut roots = RootCertStore::empty();
    // Unparseable system certificates are skipped (the count is in the store); ours must all be good.
    roots.add_parsable_certificates(system.iter().cloned());
    for der in extra {
        roots.add(CertificateDer::from(der.clone())).map_err(|e| format!("a trusted certificate given: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A connection to the server of a `ws://` or `wss://` URL: TCP, with TLS for `wss://` (the system's roots
/// and `tls_roots` trusted); also the `host:port` it names.
async fn open_stream(url: &str, tls_roots: &[Vec<u8>]) -> Result<(Box<dyn Stream>, String), String> {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    let request = url.into_client_request().map_err(|e| e.to_string())?;
    let uri = request.uri();
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err("the signaling URL must start with ws:// or wss://".into()),
    };
    let host = uri.host().ok_or("the signaling URL has no host")?;
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| host.to_string());
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    if !secure {
        return Ok((Box::new(tcp), authority));
    }
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("{host} as a TLS server name: {e}"))?;
    let tls = tls_connector(tls_roots)?.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    Ok((Box::new(tls), authority))
}

/// The ICE servers the signaling server at `signaling_url` hands out at `GET /config` (TURN entries with
/// credentials that expire), checked as a page's would be.
pub async fn fetch_ice_servers(signaling_url: &str, tls_roots: &[Vec<u8>]) -> Result<Vec<crate::IceServer>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MAX_ANSWER: u64 = 64 * 1024;
    let (mut stream, authority) = open_stream(signaling_url, tls_roots).await?;
    let request = format!("GET /config HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    (&mut stream).take(MAX_ANSWER + 1).read_to_end(&mut answer).await.map_err(|e| e.to_string())?;
    if answer.len() as u64 > MAX_ANSWER {
        return Err(format!("GET /config: answer over {MAX_ANSWER} bytes"));
    }
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").ok_or("GET /config: no complete answer")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("GET /config: {status}"));
    }
    crate::IceServer::from_config(body).map_err(|e| format!("GET /config: {e}"))
}

impl SignalSocket for Socket {
    async fn connect(url: &str, tls_roots: &[Vec<u8>]) -> Result<Self, String> {
        let (stream, _) = open_stream(url, tls_roots).await?;
        let (ws, _) = async_tungstenite::tokio::client_async(url, stream).await.map_err(|e| e.to_string())?;
        Ok(Socket(ws))
    }

    async fn send(&mut self, text: String) -> Result<(), String> {
        self.0.send(WsMessage::text(text)).await.map_err(|e| e.to_string())
    }

    async fn recv(&mut self) -> Result<String, String> {
        loop {
            match self.0.next().await {
                Some(Ok(WsMessage::Text(t))) => return Ok(t.as_str().to_string()),
                Some(Ok(WsMessage::Close(f))) => {
                    let reason = f.map(|f| f.reason.to_string()).unwrap_or_default();
                    return Err(format!("closed by the server: {reason}"));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("closed".into()),
            }
        }
    }

    async fn close(mut self) {
        let _ = self.0.close(None).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Peer connections

/// Reports the gathered candidates, failure and the peer's data channel of one peer connection.
struct Handler {
    candidates: mpsc::Sender<IceCandidate>,
    failed: mpsc::Sender<()>,
    channel: mpsc::Sender<Arc<dyn DataChannel>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: webrtc::peer_connection::RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let candidate = IceCandidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_m_line_index: init.sdp_mline_index,
            };
            let _ = self.candidates.clone().try_send(candidate);
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.channel.clone().try_send(dc);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
            let _ = self.failed.clone().try_send(());
        }
    }
}

/// A webrtc-rs peer connection.
pub(crate) struct Peer(Box<dyn PeerConnection>);

/// A peer connection, its gathering-complete and failure signals, and its data channel: created here for
/// the dialer (`create_channel`), announced through `on_data_channel` for the answerer.
async fn new_connection(config: &RtcConfig, create_channel: bool) -> Result<Fresh<Peer>, String> {
    let (candidates_tx, candidates) = mpsc::channel(MAX_CANDIDATES);
    let (failed_tx, failed) = mpsc::channel(1);
    let (channel_tx, mut announced) = mpsc::channel(1);
    let setting = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_ice_connection_attempts(Some(Duration::from_millis(50)), None)
        // How long a working pair of each kind waits for a better one before it is taken. webrtc-rs waits
        // 1 s for a peer-reflexive pair, which with trickled candidates is often a direct one found before
        // its candidate arrived (a tab and a node in one home: 1.6 s setups), and 2 s for a relayed one.
        .with_srflx_acceptance_min_wait(Some(Duration::from_millis(50)))
        .with_prflx_acceptance_min_wait(Some(Duration::from_millis(50)))
        .with_relay_acceptance_min_wait(Some(Duration::from_millis(300)))
        // The dialer, which holds the channel it pokes (see `pipe_for`), starts DTLS and SCTP.
        .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Server)
        .build();
    let ice_servers = config
        .ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect();
    let rtc_config = RTCConfigurationBuilder::new().with_ice_servers(ice_servers).build();
    let mut builder = PeerConnectionBuilder::new()
        .with_configuration(rtc_config)
        .with_setting_engine(setting)
        .with_handler(Arc::new(Handler { candidates: candidates_tx, failed: failed_tx, channel: channel_tx }))
        .with_data_channel_send_buffer_limit(config.send_buffer_limit);
    if !config.udp_addrs.is_empty() {
        builder = builder.with_udp_addrs(config.udp_addrs.clone());
    }
    let pc = builder.build().await.map_err(|e| format!("peer connection: {e}"))?;
    let (pipe_tx, pipe_rx) = oneshot::channel();
    let queue = config.queue;
    if create_channel {
        let init = RTCDataChannelInit { ordered: true, ..Default::default() };
        let dc = match pc.create_data_channel("webdht", Some(init)).await {
            Ok(dc) => dc,
            Err(e) => {
                let _ = pc.close().await;
                return Err(format!("data channel: {e}"));
            }
        };
        let _ = pipe_tx.send(pipe_for(dc, queue));
    } else {
        spawn(async move {
            if let Some(dc) = announced.next().await {
                let _ = pipe_tx.send(pipe_for(dc, queue));
            }
        });
    }
    Ok(Fresh { pc: Peer(Box::new(pc)), candidates, failed, pipe: pipe_rx })
}

/// The local SDP as set (its candidates are sent one by one as they are gathered).
async fn local_sdp(pc: &dyn PeerConnection) -> Result<String, String> {
    pc.local_description().await.map(|d| d.sdp).ok_or_else(|| "no local description".into())
}

/// The setup once the local SDP is known, or the error after closing the connection.
async fn with_sdp_or_close(fresh: Fresh<Peer>, sdp: Result<String, String>) -> Result<Setup<Peer>, String> {
    match sdp {
        Ok(sdp) => Ok(fresh.with_sdp(sdp)),
        Err(e) => {
            fresh.pc.close().await;
            Err(e)
        }
    }
}

impl RtcPeer for Peer {
    async fn offer(config: &RtcConfig) -> Result<Setup<Self>, String> {
        let fresh = new_connection(config, true).await?;
        let steps = async {
            let pc = &fresh.pc.0;
            let offer = pc.create_offer(None).await.map_err(|e| format!("offer: {e}"))?;
            pc.set_local_description(offer).await.map_err(|e| format!("local description: {e}"))?;
            local_sdp(&**pc).await
        };
        let sdp = steps.await;
        with_sdp_or_close(fresh, sdp).await
    }

    async fn answer(config: &RtcConfig, offer: &str) -> Result<Setup<Self>, String> {
        let fresh = new_connection(config, false).await?;
        let steps = async {
            let pc = &fresh.pc.0;
            let desc = RTCSessionDescription::offer(offer.to_string()).map_err(|e| format!("bad offer: {e}"))?;
            pc.set_remote_description(desc).await.map_err(|e| format!("remote description: {e}"))?;
            let answer = pc.create_answer(None).await.map_err(|e| format!("answer: {e}"))?;
            pc.set_local_description(answer).await.map_err(|e| format!("local description: {e}"))?;
            local_sdp(&**pc).await
        };
        let sdp = steps.await;
        with_sdp_or_close(fresh, sdp).await
    }

    async fn accept(&self, answer: &str) -> Result<(), String> {
        let desc = RTCSessionDescription::answer(answer.to_string()).map_err(|e| format!("bad answer: {e}"))?;
        self.0.set_remote_description(desc).await.map_err(|e| format!("remote description: {e}"))
    }

    async fn add_candidate(&self, c: &IceCandidate) -> Result<(), String> {
        let init = webrtc::peer_connection::RTCIceCandidateInit {
            candidate: c.candidate.clone(),
            sdp_mid: c.sdp_mid.clone(),
            sdp_mline_index: c.sdp_m_line_index,
            username_fragment: None,
            url: None,
        };
        self.0.add_ice_candidate(init).await.map_err(|e| e.to_string())
    }

    async fn selected_pair(&self) -> Option<(Candidate, Candidate, String)> {
        let sctp = self.0.sctp().await?;
        let pair = sctp.transport().ice_transport().get_selected_candidate_pair().await.ok()??;
        let kind = |c: &webrtc::peer_connection::RTCIceCandidate| Candidate::from_name(&c.typ.to_string());
        Some((kind(pair.local()), kind(pair.remote()), pair.local().protocol.to_string()))
    }

    async fn close(self) {
        let _ = self.0.close().await;
    }
}

/// Plumbs a data channel into a [`ChannelPipe`]: a reader task forwards messages into a bounded queue (so a slow
/// link stops reading), a writer task sends chunks once the channel is open, each send waiting while the
/// channel's buffer is over its limit.
fn pipe_for(dc: Arc<dyn DataChannel>, queue: usize) -> ChannelPipe {
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(queue);
    let (mut inc_tx, inc_rx) = mpsc::channel::<Vec<u8>>(queue);
    let (open_tx, open_rx) = oneshot::channel::<()>();
    let reader = dc.clone();
    tokio::spawn(async move {
        let mut open_tx = Some(open_tx);
        while let Some(ev) = reader.poll().await {
            match ev {
                DataChannelEvent::OnOpen => {
                    if let Some(tx) = open_tx.take() {
                        let _ = tx.send(());
                    }
                }
                DataChannelEvent::OnMessage(m) => {
                    // BytesMut → Vec keeps the buffer when the message owns it whole (no copy).
                    let delivered = inc_tx.send(Vec::from(m.data)).await;
                    if delivered.is_err() {
                        break;
                    }
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
    tokio::spawn(async move {
        // The answerer may learn of the channel once it is already open.
        let open = matches!(dc.ready_state().await, Ok(RTCDataChannelState::Open)) || {
            // webrtc-rs 0.21's driver sends what its connection queued while handling an event (the SCTP
            // INIT once DTLS is up, the channel's OPEN once SCTP is) only at its next timer, 200 ms later;
            // a channel call wakes it. Poking every 5 ms until the channel opens took native link setup
            // from ~450 to ~60 ms on loopback.
            let poke = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if dc.set_buffered_amount_low_threshold(0).await.is_err() {
                        break;
                    }
                }
                futures::future::pending::<()>().await
            };
            futures::pin_mut!(poke);
            matches!(futures::future::select(open_rx, poke).await, futures::future::Either::Left((Ok(()), _)))
        };
        if open {
            while let Some(chunk) = out_rx.next().await {
                // Bytes → BytesMut takes the vector's buffer over (it is the only owner): no copy.
                if dc.send(bytes::BytesMut::from(bytes::Bytes::from(chunk))).await.is_err() {
                    break;
                }
                // One message per turn: with two or more sent before webrtc-rs's driver runs, its SCTP
                // association falls into delayed acknowledgements and the channel crawls (206 → 4.6 MB/s
                // measured with two 16 KiB messages per turn).
                tokio::task::yield_now().await;
            }
        }
        let _ = dc.close().await;
    });
    ChannelPipe::new(out_tx, inc_rx, MAX_CHUNK)
}

/// One data channel between two peer connections in this process, set up directly (no signaling, no
/// Noise, no codec): `megabytes` sent one way in chunks of [`crate::MAX_CHUNK`] through the same channel
/// plumbing the transport uses. Returns MB/s. The baseline `link_bench` compares the whole stack with.
/// `burst`: queue chunks as fast as the pipe takes them instead of yielding after each one as the link
/// does (the pattern that stalled webrtc-rs before the writer took one chunk per turn).
/// Call inside a tokio `LocalSet`.
#[doc(hidden)]
pub async fn channel_throughput(config: &RtcConfig, megabytes: usize, burst: bool) -> Result<f64, String> {
    let mut offer = Peer::offer(config).await?;
    let mut answer = Peer::answer(config, &offer.sdp).await?;
    offer.pc.accept(&answer.sdp).await?;
    // Each side's candidates to the other, as they come.
    for _ in 0..2 {
        let (a, b) = (offer.candidates.next(), answer.candidates.next());
        futures::pin_mut!(a, b);
        match futures::future::select(a, b).await {
            futures::future::Either::Left((Some(c), _)) => answer.pc.add_candidate(&c).await?,
            futures::future::Either::Right((Some(c), _)) => offer.pc.add_candidate(&c).await?,
            _ => return Err("a side gathered no candidate".into()),
        }
    }
    let mut a = offer.pipe.await.map_err(|_| "no channel (dialer)".to_string())?;
    let mut b = answer.pipe.await.map_err(|_| "no channel (answerer)".to_string())?;
    let chunks = megabytes * 1024 * 1024 / crate::MAX_CHUNK;
    let t0 = std::time::Instant::now();
    let sender = tokio::task::spawn_local(async move {
        for i in 0..chunks {
            if a.out.send(vec![i as u8; crate::MAX_CHUNK]).await.is_err() {
                return Err("channel closed while sending".to_string());
            }
            // As the link does (see `ChannelPipe::write`): yield after each chunk, or this loop starves the channel.
            if !burst {
                tokio::task::yield_now().await;
            }
        }
        Ok(a)
    });
    let want = chunks * crate::MAX_CHUNK;
    let receive = async {
        let mut got = 0usize;
        while got < want {
            match b.inc.next().await {
                Some(chunk) => got += chunk.len(),
                None => break,
            }
        }
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(60), receive).await.map_err(|_| "bare channel: timed out")?;
    if got < want {
        return Err(format!("bare channel: {got} of {want} bytes arrived"));
    }
    let secs = t0.elapsed().as_secs_f64();
    let _a = sender.await.map_err(|e| e.to_string())??;
    offer.pc.close().await;
    answer.pc.close().await;
    Ok(got as f64 / secs / 1e6)
}
