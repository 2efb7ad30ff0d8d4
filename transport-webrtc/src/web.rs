//! The browser backend: the page's `RTCPeerConnection` and `RTCDataChannel` through web-sys, the
//! signaling socket through gloo-net's `WebSocket`, tasks on `wasm_bindgen_futures::spawn_local`.
//!
//! Browser callbacks cannot wait, so the receiving side of a channel is bounded differently from the
//! native one: chunks go into a bounded queue, and a peer that fills it (it sends faster than the node
//! reads, which a well-behaved peer never does for long) has its channel closed. Sending waits on the
//! channel's `bufferedAmount` as natively.

use crate::signaling::SignalSocket;
use crate::transport::{Candidate, Fresh, RtcPeer, Setup};
use crate::{IceCandidate, RtcConfig, MAX_CANDIDATES, MAX_CHUNK};
use dht_driver::SharedClock;
use dht_link_io::ChannelPipe;
use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message as WsMessage, WebSocketError};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MessageEvent, RtcConfiguration, RtcDataChannel, RtcDataChannelEvent, RtcDataChannelInit, RtcDataChannelState,
    RtcDataChannelType, RtcIceCandidateInit, RtcIceServer, RtcPeerConnection, RtcPeerConnectionIceEvent,
    RtcPeerConnectionState, RtcSdpType, RtcSessionDescriptionInit,
};

/// Spawns a task on the page's event loop.
pub(crate) fn spawn(f: impl Future<Output = ()> + 'static) {
    wasm_bindgen_futures::spawn_local(f);
}

/// The text of a JS error value.
fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| format!("{e:?}"))
}

// ---------------------------------------------------------------------------------------------------------
// Signaling socket

/// The browser's WebSocket.
pub(crate) struct Socket(WebSocket);

impl SignalSocket for Socket {
    async fn connect(url: &str, _tls_roots: &[Vec<u8>]) -> Result<Self, String> {
        // The browser checks a wss:// server's certificate against its own trust.
        WebSocket::open(url).map(Socket).map_err(|e| e.to_string())
    }

    async fn send(&mut self, text: String) -> Result<(), String> {
        self.0.send(WsMessage::Text(text)).await.map_err(|e| e.to_string())
    }

    async fn recv(&mut self) -> Result<String, String> {
        loop {
            match self.0.next().await {
                Some(Ok(WsMessage::Text(t))) => return Ok(t),
                Some(Ok(WsMessage::Bytes(_))) => continue,
                Some(Err(WebSocketError::ConnectionClose(c))) => {
                    return Err(format!("closed by the server: {}", c.reason))
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("closed".into()),
            }
        }
    }

    async fn close(self) {
        let _ = self.0.close(None, None);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Peer connections

type Callback = Closure<dyn FnMut(JsValue)>;

fn callback(f: impl FnMut(JsValue) + 'static) -> Callback {
    Closure::new(f)
}

/// A browser peer connection and the callbacks it holds; dropping it removes them and closes it.
pub(crate) struct Peer {
    pc: RtcPeerConnection,
    _callbacks: Vec<Callback>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.pc.set_onicecandidate(None);
        self.pc.set_onconnectionstatechange(None);
        self.pc.set_ondatachannel(None);
        self.pc.close();
    }
}

/// A peer connection with its gathering and failure signals, and the link's data channel: created here for
/// the dialer (`create_channel`), announced through `ondatachannel` for the answerer.
fn new_connection(config: &RtcConfig, create_channel: bool) -> Result<Fresh<Peer>, String> {
    let rtc_config = RtcConfiguration::new();
    let servers = js_sys::Array::new();
    for s in &config.ice_servers {
        let server = RtcIceServer::new();
        let urls = js_sys::Array::new();
        for u in &s.urls {
            urls.push(&JsValue::from_str(u));
        }
        server.set_urls(&urls);
        if let Some(username) = &s.username {
            server.set_username(username);
        }
        if let Some(credential) = &s.credential {
            server.set_credential(credential);
        }
        servers.push(&server);
    }
    rtc_config.set_ice_servers(&servers);
    let pc = RtcPeerConnection::new_with_configuration(&rtc_config)
        .map_err(|e| format!("peer connection: {}", js_err(e)))?;

    let (candidates_tx, candidates) = mpsc::channel(MAX_CANDIDATES);
    let (failed_tx, failed) = mpsc::channel(1);
    let (pipe_tx, pipe_rx) = oneshot::channel();
    let mut callbacks = Vec::new();

    let mut tx = candidates_tx;
    let on_candidate = callback(move |ev| {
        // A null candidate marks the end of gathering: nothing to send.
        if let Some(c) = ev.unchecked_into::<RtcPeerConnectionIceEvent>().candidate() {
            let candidate =
                IceCandidate { candidate: c.candidate(), sdp_mid: c.sdp_mid(), sdp_m_line_index: c.sdp_m_line_index() };
            if !candidate.candidate.is_empty() {
                let _ = tx.try_send(candidate);
            }
        }
    });
    pc.set_onicecandidate(Some(on_candidate.as_ref().unchecked_ref()));
    callbacks.push(on_candidate);

    let p = pc.clone();
    let mut tx = failed_tx;
    let on_state = callback(move |_| {
        if matches!(p.connection_state(), RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed) {
            let _ = tx.try_send(());
        }
    });
    pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
    callbacks.push(on_state);

    let (queue, limit, clock) = (config.queue, config.send_buffer_limit, config.clock.clone());
    if create_channel {
        let init = RtcDataChannelInit::new();
        init.set_ordered(true);
        let dc = pc.create_data_channel_with_data_channel_dict("webdht", &init);
        let _ = pipe_tx.send(pipe_for(dc, queue, limit, clock));
    } else {
        let mut pipe_tx = Some(pipe_tx);
        let on_channel = callback(move |ev| {
            let dc = ev.unchecked_into::<RtcDataChannelEvent>().channel();
            match pipe_tx.take() {
                Some(tx) => {
                    let _ = tx.send(pipe_for(dc, queue, limit, clock.clone()));
                }
                // One channel per link: a second one is not ours to carry.
                None => dc.close(),
            }
        });
        pc.set_ondatachannel(Some(on_channel.as_ref().unchecked_ref()));
        callbacks.push(on_channel);
    }
    Ok(Fresh { pc: Peer { pc, _callbacks: callbacks }, candidates, failed, pipe: pipe_rx })
}

fn description(kind: RtcSdpType, sdp: &str) -> RtcSessionDescriptionInit {
    let d = RtcSessionDescriptionInit::new(kind);
    d.set_sdp(sdp);
    d
}

/// The `sdp` field of what `createOffer` / `createAnswer` resolve to.
fn sdp_of(desc: &JsValue) -> Result<String, String> {
    js_sys::Reflect::get(desc, &JsValue::from_str("sdp"))
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| "no SDP in the description".to_string())
}

impl Peer {
    /// Sets our description (`kind`, from `created`) and returns it (its candidates are sent one by one as
    /// they are gathered).
    async fn local_sdp(&self, kind: RtcSdpType, created: JsValue) -> Result<String, String> {
        let desc = description(kind, &sdp_of(&created)?);
        JsFuture::from(self.pc.set_local_description(&desc))
            .await
            .map_err(|e| format!("local description: {}", js_err(e)))?;
        self.pc.local_description().map(|d| d.sdp()).ok_or_else(|| "no local description".into())
    }
}

impl RtcPeer for Peer {
    async fn offer(config: &RtcConfig) -> Result<Setup<Self>, String> {
        let fresh = new_connection(config, true)?;
        let offer = JsFuture::from(fresh.pc.pc.create_offer()).await.map_err(|e| format!("offer: {}", js_err(e)))?;
        let sdp = fresh.pc.local_sdp(RtcSdpType::Offer, offer).await?;
        Ok(fresh.with_sdp(sdp))
    }

    async fn answer(config: &RtcConfig, offer: &str) -> Result<Setup<Self>, String> {
        let fresh = new_connection(config, false)?;
        JsFuture::from(fresh.pc.pc.set_remote_description(&description(RtcSdpType::Offer, offer)))
            .await
            .map_err(|e| format!("bad offer: {}", js_err(e)))?;
        let answer = JsFuture::from(fresh.pc.pc.create_answer()).await.map_err(|e| format!("answer: {}", js_err(e)))?;
        let sdp = fresh.pc.local_sdp(RtcSdpType::Answer, answer).await?;
        Ok(fresh.with_sdp(sdp))
    }

    async fn accept(&self, answer: &str) -> Result<(), String> {
        JsFuture::from(self.pc.set_remote_description(&description(RtcSdpType::Answer, answer)))
            .await
            .map(|_| ())
            .map_err(|e| format!("bad answer: {}", js_err(e)))
    }

    async fn add_candidate(&self, c: &IceCandidate) -> Result<(), String> {
        let init = RtcIceCandidateInit::new(&c.candidate);
        init.set_sdp_mid(c.sdp_mid.as_deref());
        init.set_sdp_m_line_index(c.sdp_m_line_index);
        JsFuture::from(self.pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init)))
            .await
            .map(|_| ())
            .map_err(|e| format!("candidate: {}", js_err(e)))
    }

    async fn selected_pair(&self) -> Option<(Candidate, Candidate, String)> {
        let report = JsFuture::from(self.pc.get_stats()).await.ok()?;
        selected_pair(&report)
    }

    async fn close(self) {
        drop(self);
    }
}

/// The selected candidate pair in a `getStats()` report: the one the `transport` entry names (Chromium),
/// else a pair marked `selected` (Firefox) or nominated and succeeded; its candidates' types, and the
/// protocol of ours.
fn selected_pair(report: &JsValue) -> Option<(Candidate, Candidate, String)> {
    let get = |v: &JsValue, field: &str| js_sys::Reflect::get(v, &JsValue::from_str(field)).ok();
    let text = |v: &JsValue, field: &str| get(v, field).and_then(|f| f.as_string());
    let truthy = |v: &JsValue, field: &str| get(v, field).is_some_and(|f| f.is_truthy());
    let mut stats = HashMap::new();
    for entry in js_sys::try_iter(report).ok()??.flatten() {
        let entry = js_sys::Array::from(&entry);
        if let Some(id) = entry.get(0).as_string() {
            stats.insert(id, entry.get(1));
        }
    }
    let named = stats.values().filter(|s| text(s, "type").as_deref() == Some("transport")).find_map(|t| {
        let id = text(t, "selectedCandidatePairId")?;
        stats.get(&id).cloned()
    });
    let pair = named.or_else(|| {
        stats
            .values()
            .find(|s| {
                text(s, "type").as_deref() == Some("candidate-pair")
                    && (truthy(s, "selected")
                        || (truthy(s, "nominated") && text(s, "state").as_deref() == Some("succeeded")))
            })
            .cloned()
    })?;
    let candidate = |field: &str| stats.get(&text(&pair, field)?).cloned();
    let (local, remote) = (candidate("localCandidateId")?, candidate("remoteCandidateId")?);
    let kind = |c: &JsValue| Candidate::from_name(&text(c, "candidateType").unwrap_or_default());
    Some((kind(&local), kind(&remote), text(&local, "protocol").unwrap_or_default()))
}

// ---------------------------------------------------------------------------------------------------------
// Data channels

/// What a channel's callbacks tell its writer task; the writer re-reads the channel's state on each, so a
/// dropped event only delays it.
enum DcEvent {
    Open,
    BufferLow,
    Closed,
}

/// A data channel and the callbacks it holds; dropping it removes them and closes the channel.
struct Channel {
    dc: RtcDataChannel,
    _callbacks: Vec<Callback>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.dc.set_onopen(None);
        self.dc.set_onmessage(None);
        self.dc.set_onclose(None);
        self.dc.set_onbufferedamountlow(None);
        self.dc.close();
    }
}

/// Plumbs a data channel into a [`ChannelPipe`]. Received messages go into a bounded queue of `4 × queue`
/// chunks (a peer that overfills it is cut off); a writer task sends chunks once the channel is open,
/// each send waiting while more than `limit` bytes are buffered.
fn pipe_for(dc: RtcDataChannel, queue: usize, limit: usize, clock: SharedClock) -> ChannelPipe {
    dc.set_binary_type(RtcDataChannelType::Arraybuffer);
    dc.set_buffered_amount_low_threshold((limit / 2) as u32);
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(queue);
    let (mut inc_tx, inc_rx) = mpsc::channel::<Vec<u8>>(queue * 4);
    let (ev_tx, ev_rx) = mpsc::channel::<DcEvent>(4);

    let notify = |ev: fn() -> DcEvent| {
        let mut tx = ev_tx.clone();
        callback(move |_| {
            let _ = tx.try_send(ev());
        })
    };
    let on_open = notify(|| DcEvent::Open);
    let on_low = notify(|| DcEvent::BufferLow);
    let on_close = notify(|| DcEvent::Closed);
    let mut overflow = ev_tx;
    let on_message = callback(move |ev| {
        let Some(data) = ev.dyn_ref::<MessageEvent>().map(|m| m.data()) else { return };
        let Ok(buf) = data.dyn_into::<js_sys::ArrayBuffer>() else {
            return; // text messages are not part of the protocol
        };
        if inc_tx.try_send(js_sys::Uint8Array::new(&buf).to_vec()).is_err() {
            tracing::warn!("data channel: the peer outran the receive queue; closing");
            let _ = overflow.try_send(DcEvent::Closed);
        }
    });
    dc.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    dc.set_onbufferedamountlow(Some(on_low.as_ref().unchecked_ref()));
    dc.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    let channel = Channel { dc, _callbacks: vec![on_open, on_low, on_close, on_message] };
    spawn(writer(channel, out_rx, ev_rx, limit, clock));
    ChannelPipe::new(out_tx, inc_rx, MAX_CHUNK)
}

/// Sends the link's chunks; returns (dropping the channel, which closes it and ends the receive queue)
/// when the link is done with it or the channel closes.
async fn writer(
    ch: Channel,
    mut out: mpsc::Receiver<Vec<u8>>,
    mut events: mpsc::Receiver<DcEvent>,
    limit: usize,
    clock: SharedClock,
) {
    let closed =
        |ch: &Channel| matches!(ch.dc.ready_state(), RtcDataChannelState::Closing | RtcDataChannelState::Closed);
    while ch.dc.ready_state() != RtcDataChannelState::Open {
        match events.next().await {
            Some(DcEvent::Closed) | None => return,
            Some(_) if closed(&ch) => return,
            Some(_) => {}
        }
    }
    loop {
        let chunk = futures::select! {
            chunk = out.next() => chunk,
            ev = events.next() => match ev {
                Some(DcEvent::Closed) | None => return,
                Some(_) => continue,
            },
        };
        let Some(chunk) = chunk else { return };
        while ch.dc.buffered_amount() as usize > limit {
            // `bufferedamountlow` may not fire in every case: look again at least every 100 ms.
            let event = dht_driver::timeout(&clock, Duration::from_millis(100), events.next()).await;
            if let Ok(Some(DcEvent::Closed) | None) = event {
                return;
            }
            if closed(&ch) {
                return;
            }
        }
        if ch.dc.send_with_u8_array(&chunk).is_err() {
            return;
        }
    }
}
