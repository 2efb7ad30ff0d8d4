//! The JS API (wasm32 only).

use crate::views::{table_view, EventView, PathView, PeerView};
use crate::webcrypto::WebCryptoKey;
use dht_core::{Contact, Key, NodeId, OwnerKey, SigningKey};
use dht_driver::{key_for, setup, start, DriverConfig, NodeHandle, SharedClock, Signer};
use dht_link::Identity;
use futures::StreamExt;
use kvstore::{IdbStore, Store};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use transport_webrtc::{IceServer, PathBook, RtcConfig, WebRtcTransport};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// Peer connections a tab makes in its life: Chromium refuses a page's RTCPeerConnections past about 500,
/// so the transport stops answering offers at 90 % of this and keeps the rest for its own dials.
const CONNECTION_BUDGET: u32 = 450;
/// Bytes of records a tab keeps at most (records that expire first are evicted beyond it).
const STORAGE_BUDGET: u64 = 64 << 20;
/// Live peer connections at most: Chrome allows about 500 per tab over its lifetime, so keep few and reuse.
const MAX_LINKS: usize = 32;
/// How often the routing table is saved to IndexedDB: a tab is closed or reloaded without notice.
const SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// The IndexedDB database of a node started without a name.
const DEFAULT_DB: &str = "webdht";
/// Peers asked of the signaling server to join through.
const SEEDS: usize = 8;

/// The page's view of a live link's path, from the transport's book.
fn path_of(paths: &PathBook) -> impl Fn(&NodeId) -> Option<PathView> + '_ {
    move |id| {
        let p = paths.get(id)?;
        let (local, remote) = (p.local.name(), p.remote.name());
        let (setup_ms, signaled_ms, dialed, relays) = (p.setup_ms, p.signaled_ms, p.dialed, p.relays);
        let kind = p.kind();
        let protocol = p.protocol;
        Some(PathView { kind, local, remote, protocol, setup_ms, signaled_ms, dialed, relays })
    }
}

struct Shared {
    handle: NodeHandle,
    contact: Contact,
    evicted: Rc<Cell<u64>>,
    listeners: RefCell<Vec<js_sys::Function>>,
    restored_records: usize,
    restored_contacts: usize,
    joined: Cell<usize>,
    /// Where the signing key lives ([`WebNode::signing_key_kind`]).
    key_kind: &'static str,
    /// The live WebRTC links' paths.
    paths: PathBook,
    /// How long each step of `start` took, in ms: `[(step, ms)]` in order.
    start_steps: Vec<(&'static str, f64)>,
}

impl Shared {
    fn emit(&self, ev: &EventView) {
        let Ok(value) = serde_wasm_bindgen::to_value(ev) else { return };
        // A listener that throws is the page's bug, not the node's: keep calling the others.
        for f in self.listeners.borrow().iter() {
            let _ = f.call1(&JsValue::NULL, &value);
        }
    }
}

/// A DHT node running in this tab.
#[wasm_bindgen]
pub struct WebNode {
    shared: Rc<Shared>,
}

fn js_error(what: &str, e: impl std::fmt::Display) -> JsError {
    JsError::new(&format!("{what}: {e}"))
}

fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsValue> {
    serde_wasm_bindgen::to_value(v).map_err(|e| JsValue::from(js_error("result", e)))
}

/// A JS string (UTF-8) or Uint8Array as bytes.
fn value_bytes(value: &JsValue) -> Result<Vec<u8>, JsError> {
    if let Some(s) = value.as_string() {
        return Ok(s.into_bytes());
    }
    if let Some(a) = value.dyn_ref::<js_sys::Uint8Array>() {
        return Ok(a.to_vec());
    }
    Err(JsError::new("a value must be a string or a Uint8Array"))
}

/// Bytes as a JS string when they are UTF-8, else as a Uint8Array.
fn value_js(bytes: Vec<u8>) -> JsValue {
    match String::from_utf8(bytes) {
        Ok(s) => JsValue::from_str(&s),
        Err(e) => js_sys::Uint8Array::from(e.as_bytes()).into(),
    }
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// What `WebNode.start` is given.
struct StartOptions {
    /// Tried in order: the first that answers is used (and the next that answers when it goes away).
    signaling: Vec<String>,
    db: Option<String>,
    signing_key: Option<SigningKey>,
    ice_servers: Vec<IceServer>,
    /// Live links kept at most.
    max_links: usize,
}

/// What `options.maxLinks` may be: a node needs a few links to route at all, and a page's peer connections
/// are limited ([`CONNECTION_BUDGET`] over its life).
const MAX_LINKS_RANGE: std::ops::RangeInclusive<u64> = 4..=128;

/// `options.iceServers` (absent: none), within the transport's limits ([`IceServer::check_list`]).
fn ice_servers_option(value: JsValue) -> Result<Vec<IceServer>, JsError> {
    if value.is_undefined() || value.is_null() {
        return Ok(Vec::new());
    }
    let bad = |why: &str| JsError::new(&format!("start: `iceServers` {why}"));
    let given: Vec<IceServer> = serde_wasm_bindgen::from_value(value)
        .map_err(|e| bad(&format!("must be [{{ urls, username?, credential? }}]: {e}")))?;
    IceServer::check_list(&given).map_err(|e| bad(&e))?;
    Ok(given)
}

impl StartOptions {
    /// `{ signaling, db?, signingKey?, iceServers?, maxLinks? }`, or the signaling URL alone with `db` beside it.
    fn read(options: &JsValue, db: Option<String>) -> Result<Self, JsError> {
        if let Some(signaling) = options.as_string() {
            let (signing_key, ice_servers, max_links) = (None, Vec::new(), MAX_LINKS);
            return Ok(StartOptions { signaling: vec![signaling], db, signing_key, ice_servers, max_links });
        }
        let field = |name: &str| js_sys::Reflect::get(options, &name.into()).unwrap_or(JsValue::UNDEFINED);
        let signaling = signaling_option(field("signaling"))?;
        let db = field("db").as_string().or(db);
        let key = field("signingKey");
        let signing_key = if key.is_undefined() || key.is_null() {
            None
        } else {
            let bytes = key.dyn_ref::<js_sys::Uint8Array>().map(|a| a.to_vec()).unwrap_or_default();
            let bytes: [u8; 32] =
                bytes.try_into().map_err(|_| JsError::new("start: `signingKey` must be a Uint8Array of 32 bytes"))?;
            Some(SigningKey::from_bytes(&bytes))
        };
        let ice_servers = ice_servers_option(field("iceServers"))?;
        let max_links = match number_option(options, "maxLinks")? {
            None => MAX_LINKS,
            Some(n) if MAX_LINKS_RANGE.contains(&n) => n as usize,
            Some(n) => {
                let (lo, hi) = (MAX_LINKS_RANGE.start(), MAX_LINKS_RANGE.end());
                return Err(JsError::new(&format!("start: `maxLinks` must be {lo} to {hi}, not {n}")));
            }
        };
        Ok(StartOptions { signaling, db, signing_key, ice_servers, max_links })
    }
}

/// `options.signaling`: a URL, or a list of them tried in order (the first that answers is used, and the
/// next that answers when it goes away).
fn signaling_option(value: JsValue) -> Result<Vec<String>, JsError> {
    let needed = || JsError::new("start: `signaling` (a URL, or an array of URLs) is needed");
    let urls: Vec<String> = match value.as_string() {
        Some(url) => vec![url],
        None if js_sys::Array::is_array(&value) => {
            js_sys::Array::from(&value).iter().map(|v| v.as_string().ok_or_else(needed)).collect::<Result<_, _>>()?
        }
        None => return Err(needed()),
    };
    if urls.is_empty() || urls.len() > transport_webrtc::MAX_SIGNALING_SERVERS {
        let max = transport_webrtc::MAX_SIGNALING_SERVERS;
        return Err(JsError::new(&format!("start: `signaling` takes 1 to {max} URLs")));
    }
    Ok(urls)
}

/// `options[name]` as a whole number, if given.
fn number_option(options: &JsValue, name: &str) -> Result<Option<u64>, JsError> {
    if options.is_undefined() || options.is_null() {
        return Ok(None);
    }
    let v = js_sys::Reflect::get(options, &name.into()).unwrap_or(JsValue::UNDEFINED);
    match v.as_f64() {
        None if v.is_undefined() || v.is_null() => Ok(None),
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 => Ok(Some(n as u64)),
        _ => Err(JsError::new(&format!("`{name}` must be a whole number"))),
    }
}

/// `options.owner` as an owner key, if given.
fn owner_option(options: &JsValue) -> Result<Option<OwnerKey>, JsError> {
    if options.is_undefined() || options.is_null() {
        return Ok(None);
    }
    match js_sys::Reflect::get(options, &"owner".into()).unwrap_or(JsValue::UNDEFINED).as_string() {
        Some(hex) => hex.parse().map(Some).map_err(|_| JsError::new("`owner` must be 64 hex digits")),
        None => Ok(None),
    }
}

/// The tab's log goes to the browser's console (at each event's level) besides its ring.
fn console_line(level: &tracing::Level, line: &str) {
    let line = JsValue::from_str(line);
    match *level {
        tracing::Level::ERROR => web_sys::console::error_1(&line),
        tracing::Level::WARN => web_sys::console::warn_1(&line),
        tracing::Level::INFO => web_sys::console::info_1(&line),
        _ => web_sys::console::debug_1(&line),
    }
}

fn install_log() {
    crate::logs::install(crate::logs::Sinks { write: console_line, now_ms: js_sys::Date::now });
}

/// Sets how much of the node's own log (its transport's dials, offers, refusals, lost connections) is
/// written to the console and kept for `logLines`: `"off"`, `"error"`, `"warn"` (the default), `"info"`,
/// `"debug"` or `"trace"`. May be called before `WebNode.start`, and at any time.
#[wasm_bindgen(js_name = setLogLevel)]
pub fn set_log_level(level: &str) -> Result<(), JsError> {
    install_log();
    crate::logs::set_level(level).map_err(|e| JsError::new(&e))
}

/// The last `max` lines of the node's log (at most 1,000 are kept), oldest first.
#[wasm_bindgen(js_name = logLines)]
pub fn log_lines(max: u32) -> Vec<String> {
    crate::logs::lines(max as usize)
}

/// What ids with proof of work cost in this browser: `{ids, difficulty, msPerId, usPerTry}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkCost {
    ids: u32,
    difficulty: u32,
    ms_per_id: f64,
    us_per_try: f64,
}

/// Makes `count` identities whose ids carry `difficulty` bits of proof of work (see `Config::id_difficulty`)
/// and reports the time taken: the price of an id in this tab. At most 24 bits and 64 ids (the call blocks
/// the tab while it runs).
#[wasm_bindgen(js_name = idWorkCost)]
pub fn id_work_cost(difficulty: u32, count: u32) -> Result<JsValue, JsError> {
    if difficulty > 24 || !(1..=64).contains(&count) {
        return Err(JsError::new("idWorkCost: difficulty must be at most 24 and count 1 to 64"));
    }
    let t0 = js_sys::Date::now();
    let mut tries = 0u64;
    for _ in 0..count {
        let (_, n) = Identity::generate_with_work(difficulty).map_err(|e| js_error("key generation", e))?;
        tries += n;
    }
    let ms = js_sys::Date::now() - t0;
    let cost = WorkCost {
        ids: count,
        difficulty,
        ms_per_id: ms / f64::from(count),
        us_per_try: ms * 1000.0 / tries.max(1) as f64,
    };
    serde_wasm_bindgen::to_value(&cost).map_err(|e| js_error("result", e))
}

/// Times the steps of `start`, each from the end of the one before.
struct StepClock {
    last: f64,
    steps: Vec<(&'static str, f64)>,
}

impl StepClock {
    fn new() -> Self {
        StepClock { last: js_sys::Date::now(), steps: Vec::new() }
    }

    fn mark(&mut self, step: &'static str) {
        let now = js_sys::Date::now();
        self.steps.push((step, now - self.last));
        self.last = now;
    }
}

/// The key the node signs with, and where it lives: the one the application gave; else the one a node of
/// this database made before (kept in IndexedDB, so its records stay its own); else a non-extractable
/// WebCrypto key, made once and kept; else (no ed25519 in this browser's WebCrypto) one made and kept.
async fn signer(store: &IdbStore, given: Option<SigningKey>) -> Result<(Signer, &'static str), JsError> {
    let setup_error = |e: setup::SetupError| JsError::new(&format!("signing key: {e}"));
    if let Some(key) = given {
        return Ok((key.into(), "given"));
    }
    if let Some(key) = setup::stored_signing_key(store).await.map_err(setup_error)? {
        return Ok((key.into(), "stored"));
    }
    match WebCryptoKey::load_or_make(store).await {
        Ok(Some(key)) => return Ok((Signer::External(Rc::new(key)), "webcrypto")),
        Ok(None) => {}
        Err(e) => return Err(JsError::new(&format!("signing key (WebCrypto): {e}"))),
    }
    Ok((setup::load_signing_key(store).await.map_err(setup_error)?.into(), "stored"))
}

#[wasm_bindgen]
impl WebNode {
    /// Opens (or creates) the node stored in the IndexedDB database `db` (its keys, records and routing
    /// table; `"webdht"` when omitted), registers with the signaling server at `signaling` and joins the
    /// swarm through the peers it names and the saved routing table. Tabs of one origin share IndexedDB:
    /// give each tab its own `db`.
    ///
    /// `options` is `{ signaling, db?, signingKey?, iceServers?, maxLinks? }` (`signaling` a URL or an array of URLs
    /// tried in order, the first that answers used, the next that answers once it goes away; or the
    /// signaling URL alone, with `db` as the second argument). `iceServers` is what `RTCPeerConnection` takes (`[{ urls, username?,
    /// credential? }]`, at most 8): the page gets them from its signaling server's `GET /config`, which
    /// hands out TURN credentials that expire. `signingKey` (32 bytes, a Uint8Array, as `exportSigningKey` gives it) is the ed25519 key the
    /// node signs its records with: pass the same one on every device to keep one identity; without it the
    /// node uses the key it made before, or makes one: a non-extractable WebCrypto ed25519 key where the
    /// browser has one (kept in IndexedDB as a `CryptoKey`; `signingKeyKind()` tells which). `maxLinks`
    /// (4 to 128, 32 by default) is how many live links the node keeps: beyond, the least useful closes.
    /// Signals for new links go through the signaling server, or, when it is away or the peer is registered
    /// on another one, through peers the node holds links with (`rtc:via:` addresses).
    pub async fn start(options: JsValue, db_name: Option<String>) -> Result<WebNode, JsError> {
        console_error_panic_hook::set_once();
        install_log();
        let mut steps = StepClock::new();
        let StartOptions { signaling, db, signing_key, ice_servers, max_links } =
            StartOptions::read(&options, db_name)?;
        let db_name = db.unwrap_or_else(|| DEFAULT_DB.to_string());
        if db_name.is_empty() || db_name.len() > 128 {
            return Err(JsError::new("db_name must be 1 to 128 characters"));
        }
        let store = IdbStore::open(&db_name, STORAGE_BUDGET).await.map_err(|e| js_error("IndexedDB", e))?;
        let evicted = store.evicted();
        let identity = setup::load_identity(&store).await.map_err(|e| JsError::new(&e.to_string()))?;
        steps.mark("store");
        // One clock for the transport and the driver.
        let clock = SharedClock::default();
        let config = RtcConfig {
            udp_addrs: Vec::new(),
            clock: clock.clone(),
            connection_budget: Some(CONNECTION_BUDGET),
            ice_servers,
            more_signaling: signaling[1..].to_vec(),
            ..RtcConfig::loopback(signaling[0].clone())
        };
        let (signer, key_kind) = signer(&store, signing_key).await?;
        steps.mark("key");
        // What the store holds is counted (IndexedDB reads: a reload's thousand records take a while) while
        // the signaling server registers us.
        let held = async {
            let records = store.records().await.map(|r| r.len()).unwrap_or(0);
            (records, store.load_contacts().await.map(|c| c.len()).unwrap_or(0))
        };
        let (transport, (restored_records, restored_contacts)) =
            futures::join!(WebRtcTransport::start(identity.clone(), Vec::new(), config), held);
        let transport = transport.map_err(|e| js_error(&format!("signaling server {}", signaling.join(" or ")), e))?;
        steps.mark("registered");
        let contact = Contact { id: identity.node_id(), addrs: transport.local_addrs().to_vec() };
        let seeds = transport.signaling().seeds(SEEDS).await;
        steps.mark("seeds");
        let paths = transport.paths();
        let seed = setup::random_seed().map_err(|e| JsError::new(&e.to_string()))?;
        let mut driver = DriverConfig::new(contact.clone(), seed);
        driver.signer = signer;
        // Others' records get three quarters of the tab's storage and never more: a peer storing as fast as
        // it may fills that room and is refused, and IndexedDB never has to evict this tab's own records
        // to make room for others'.
        let mut core = dht_core::Config::default();
        core.max_stored_bytes = STORAGE_BUDGET / 4 * 3;
        driver.core = core.validate().map_err(|e| JsError::new(&e.to_string()))?;
        driver.max_links = max_links;
        driver.save_interval = SAVE_INTERVAL;
        let (handle, task) = start(driver, transport, store, clock);
        wasm_bindgen_futures::spawn_local(task);
        let found = handle.bootstrap(seeds).await.map_err(|e| js_error("join", e))?;
        steps.mark("joined");
        let shared = Rc::new(Shared {
            handle: handle.clone(),
            contact,
            evicted,
            listeners: RefCell::new(Vec::new()),
            restored_records,
            restored_contacts,
            joined: Cell::new(0),
            key_kind,
            paths,
            start_steps: steps.steps,
        });
        shared.joined.set(found.len());
        let events = Rc::downgrade(&shared);
        let mut rx = handle.events();
        wasm_bindgen_futures::spawn_local(async move {
            let mut evicted_seen = 0;
            while let Some(ev) = rx.next().await {
                let Some(shared) = events.upgrade() else { return };
                shared.emit(&EventView::from_event(&ev));
                let evicted = shared.evicted.get();
                if evicted != evicted_seen {
                    evicted_seen = evicted;
                    shared.emit(&EventView::evicted(evicted));
                }
            }
        });
        Ok(WebNode { shared })
    }

    /// This node's id (hex).
    pub fn id(&self) -> String {
        format!("{:#}", self.shared.contact.id)
    }

    /// The addresses this node advertises.
    pub fn addresses(&self) -> Vec<String> {
        self.shared.contact.addrs.iter().map(|a| a.as_str().to_string()).collect()
    }

    /// The key this node signs its records with, as others name it (hex): the `owner` of its records.
    pub fn owner(&self) -> String {
        self.shared.handle.owner().to_string()
    }

    /// The 32 secret bytes of the signing key, to start this node's identity on another device
    /// (`WebNode.start({ …, signingKey })`). Whoever holds them can change this node's records: keep them
    /// as a password. Throws when the browser keeps the key (`signingKeyKind()` is `"webcrypto"`): it
    /// never leaves the browser; to carry an identity across devices, start with your own `signingKey`.
    #[wasm_bindgen(js_name = exportSigningKey)]
    pub fn export_signing_key(&self) -> Result<js_sys::Uint8Array, JsError> {
        match self.shared.handle.signing_key_bytes() {
            Some(bytes) => Ok(js_sys::Uint8Array::from(bytes.as_slice())),
            None => Err(JsError::new(
                "exportSigningKey: this node's key is kept by the browser (WebCrypto, non-extractable) and \
                 cannot be exported; start the node with your own `signingKey` to carry an identity",
            )),
        }
    }

    /// Where the signing key lives: `"webcrypto"` (kept by the browser, non-extractable: the default where
    /// the browser has ed25519 in WebCrypto), `"stored"` (made by the node, kept in IndexedDB: older nodes
    /// and browsers without it) or `"given"` (the `signingKey` passed to `start`).
    #[wasm_bindgen(js_name = signingKeyKind)]
    pub fn signing_key_kind(&self) -> String {
        self.shared.key_kind.to_string()
    }

    /// Publishes `value` (a string or Uint8Array) as the next version of this node's record `name`, signed
    /// with its key, here and at the closest peers. `options.cas`: the version it replaces must be this one.
    /// Resolves to `{ seq, acks, attempted, owner, ms }`; rejects when the put is refused (a newer version
    /// exists, or `cas` did not match).
    pub fn put(&self, name: String, value: JsValue, options: JsValue) -> js_sys::Promise {
        let handle = self.shared.handle.clone();
        let bytes = value_bytes(&value);
        let cas = number_option(&options, "cas");
        future_to_promise(async move {
            #[derive(Serialize)]
            struct PutResult {
                seq: u64,
                acks: usize,
                attempted: usize,
                owner: String,
                ms: f64,
            }
            let (bytes, cas) = (bytes.map_err(JsValue::from)?, cas.map_err(JsValue::from)?);
            let t0 = now_ms();
            let out = handle.put_signed(name.as_bytes(), bytes, cas).await.map_err(|e| js_error("put", e))?;
            if let Some(refusal) = out.refusal {
                return Err(js_error("put", format!("refused: {refusal:?}")).into());
            }
            let owner = handle.owner().to_string();
            let (seq, acks, attempted) = (out.seq.unwrap_or(0), out.acks, out.attempted);
            to_js(&PutResult { seq, acks, attempted, owner, ms: now_ms() - t0 })
        })
    }

    /// The newest version of the record `name` of `options.owner` (hex; this node's when omitted), here or
    /// in the network. Resolves to `{ value, seq, owner, ms }`, `value` null when nobody has it (a string
    /// when it is UTF-8, else a Uint8Array).
    pub fn get(&self, name: String, options: JsValue) -> js_sys::Promise {
        let handle = self.shared.handle.clone();
        let owner = owner_option(&options);
        future_to_promise(async move {
            let owner = owner.map_err(JsValue::from)?.unwrap_or_else(|| handle.owner());
            let t0 = now_ms();
            let record = handle.get_signed(owner, name.as_bytes()).await.map_err(|e| js_error("get", e))?;
            let ms = now_ms() - t0;
            let out = js_sys::Object::new();
            let seq = record.as_ref().and_then(|r| r.seq());
            js_sys::Reflect::set(&out, &"value".into(), &record.map(|r| value_js(r.value)).unwrap_or(JsValue::NULL))?;
            js_sys::Reflect::set(&out, &"seq".into(), &seq.map_or(JsValue::NULL, |s| (s as f64).into()))?;
            js_sys::Reflect::set(&out, &"owner".into(), &owner.to_string().into())?;
            js_sys::Reflect::set(&out, &"ms".into(), &ms.into())?;
            Ok(out.into())
        })
    }

    /// Publishes `value` (a string or Uint8Array) as an immutable record, named by its SHA-256. Resolves to
    /// `{ hash, acks, attempted, ms }`.
    #[wasm_bindgen(js_name = putImmutable)]
    pub fn put_immutable(&self, value: JsValue) -> js_sys::Promise {
        let handle = self.shared.handle.clone();
        let bytes = value_bytes(&value);
        future_to_promise(async move {
            #[derive(Serialize)]
            struct PutResult {
                hash: String,
                acks: usize,
                attempted: usize,
                ms: f64,
            }
            let bytes = bytes.map_err(JsValue::from)?;
            let t0 = now_ms();
            let out = handle.put_immutable(bytes).await.map_err(|e| js_error("put", e))?;
            if let Some(refusal) = out.refusal {
                return Err(js_error("put", format!("refused: {refusal:?}")).into());
            }
            let hash = format!("{:#}", out.key);
            to_js(&PutResult { hash, acks: out.acks, attempted: out.attempted, ms: now_ms() - t0 })
        })
    }

    /// The value of the immutable record `hash` (hex), here or in the network, checked against it.
    /// Resolves to `{ value, ms }`, `value` null when nobody has it.
    #[wasm_bindgen(js_name = getImmutable)]
    pub fn get_immutable(&self, hash: String) -> js_sys::Promise {
        let handle = self.shared.handle.clone();
        future_to_promise(async move {
            let key: Key = hash.parse().map_err(|_| js_error("getImmutable", "a hash is 64 hex digits"))?;
            let t0 = now_ms();
            let value = handle.get_immutable(key).await.map_err(|e| js_error("get", e))?;
            let ms = now_ms() - t0;
            let out = js_sys::Object::new();
            js_sys::Reflect::set(&out, &"value".into(), &value.map(value_js).unwrap_or(JsValue::NULL))?;
            js_sys::Reflect::set(&out, &"ms".into(), &ms.into())?;
            Ok(out.into())
        })
    }

    /// Starts publishing a file (at most 256 MiB): feed it the chunks a [`crate::files::FileChunker`] gives
    /// (in a Web Worker), then `finish()`. See `files-worker.js` beside the page.
    #[wasm_bindgen(js_name = publishFile)]
    pub fn publish_file(&self) -> crate::files::FilePublish {
        crate::files::FilePublish::new(self.shared.handle.clone(), dht_files::DEFAULT_MAX_FILE_LEN)
    }

    /// Opens the file named `hash` (its manifests are read and checked). Resolves to a `FileFetch`: `len`,
    /// `chunks`, and `next()` for each chunk in order.
    #[wasm_bindgen(js_name = openFile)]
    pub fn open_file(&self, hash: String) -> js_sys::Promise {
        let handle = self.shared.handle.clone();
        future_to_promise(async move {
            let fetch = crate::files::FileFetch::open(handle, &hash, dht_files::DEFAULT_MAX_FILE_LEN).await?;
            Ok(fetch.into())
        })
    }

    /// An iterative lookup over the network for the node ids closest to the hash of `name` (what routing
    /// costs, whatever is stored). Resolves to `{ found, closest: [short ids], ms }`.
    #[wasm_bindgen(js_name = findNode)]
    pub fn find_node(&self, name: String) -> js_sys::Promise {
        let handle = self.shared.handle.clone();
        future_to_promise(async move {
            #[derive(Serialize)]
            struct Found {
                found: usize,
                closest: Vec<String>,
                ms: f64,
            }
            let t0 = now_ms();
            let target = dht_core::NodeId::from_key(&key_for(&name));
            let peers = handle.find_node(target).await.map_err(|e| JsValue::from(js_error("lookup", e)))?;
            let ms = now_ms() - t0;
            to_js(&Found { found: peers.len(), closest: peers.iter().map(|c| c.id.to_string()).collect(), ms })
        })
    }

    /// The value of `owner`'s record `name` (this node's when `owner` is omitted) in this tab's own storage
    /// only (what it holds for the swarm), or `null`.
    #[wasm_bindgen(js_name = getLocal)]
    pub fn get_local(&self, name: String, owner: Option<String>) -> js_sys::Promise {
        let handle = self.shared.handle.clone();
        future_to_promise(async move {
            let owner = match owner {
                Some(hex) => hex.parse::<OwnerKey>().map_err(|_| js_error("getLocal", "an owner is 64 hex digits"))?,
                None => handle.owner(),
            };
            let record = handle.get_local(owner.record_key(name.as_bytes())).await.map_err(|e| js_error("get", e))?;
            Ok(record.filter(|r| r.owner() == Some(owner)).map(|r| value_js(r.value)).unwrap_or(JsValue::NULL))
        })
    }

    /// The records this node put, from its own storage: `[{ name, seq, value }]` for signed ones (`name`
    /// the salt as text), `[{ hash, value }]` for immutable ones. With `{ signed: true }`, the signed ones
    /// only (without reading the immutable ones: a published file's chunks are among them).
    #[wasm_bindgen(js_name = ownRecords)]
    pub fn own_records(&self, options: JsValue) -> js_sys::Promise {
        let handle = self.shared.handle.clone();
        let signed_only = !options.is_undefined()
            && !options.is_null()
            && js_sys::Reflect::get(&options, &"signed".into()).map(|v| v.is_truthy()).unwrap_or(false);
        future_to_promise(async move {
            let records = if signed_only { handle.own_signed_records().await } else { handle.own_records().await };
            let records = records.map_err(|e| js_error("own records", e))?;
            let out = js_sys::Array::new();
            for r in records {
                let o = js_sys::Object::new();
                match &r.signed {
                    Some(s) => {
                        js_sys::Reflect::set(&o, &"name".into(), &String::from_utf8_lossy(&s.salt).as_ref().into())?;
                        js_sys::Reflect::set(&o, &"seq".into(), &(s.seq as f64).into())?;
                    }
                    None => {
                        js_sys::Reflect::set(&o, &"hash".into(), &format!("{:#}", r.key).into())?;
                    }
                }
                js_sys::Reflect::set(&o, &"value".into(), &value_js(r.value))?;
                out.push(&o);
            }
            Ok(out.into())
        })
    }

    /// The node's counters since it started: `{ requestsIn, responsesIn, timeouts, unreachable, lostWithLink,
    /// slowRequests, lateAnswers, refusedBusy, refusedQuota, storeFailures, evicted, ... }` (what a slow or
    /// failing swarm looks like from here).
    pub fn counters(&self) -> js_sys::Promise {
        let handle = self.shared.handle.clone();
        future_to_promise(async move {
            let s = handle.stats().await.map_err(|e| JsValue::from(js_error("counters", e)))?;
            let out = js_sys::Object::new();
            let fields = [
                ("requestsIn", s.requests_in),
                ("responsesIn", s.responses_in),
                ("timeouts", s.timeouts),
                ("unreachable", s.unreachable),
                ("lostWithLink", s.lost_with_link),
                ("slowRequests", s.slow_requests),
                ("lateAnswers", s.late_answers),
                ("unexpectedResponses", s.unexpected_responses),
                ("refusedFull", s.refused_full),
                ("refusedInvalid", s.refused_invalid),
                ("refusedBadSignature", s.refused_bad_signature),
                ("refusedStale", s.refused_stale),
                ("refusedQuota", s.refused_quota),
                ("refusedBusy", s.refused_busy),
                ("storeFailures", s.store_failures),
                ("expired", s.expired),
                ("evicted", s.evicted),
            ];
            for (name, value) in fields {
                js_sys::Reflect::set(&out, &name.into(), &(value as f64).into())?;
            }
            Ok(out.into())
        })
    }

    /// Peers with a live link: `[{ id, short, kind, bucket, addrs, path }]`, `path` being how the link
    /// travels: `{ kind: "host" | "srflx" | "prflx" | "relay", local, remote, protocol, setupMs, signaledMs, dialed,
    /// relays }`
    /// (`relays`: how many peers carried its setup's signals over the DHT; 0 through the signaling server).
    pub fn peers(&self) -> js_sys::Promise {
        let (handle, own, paths) = (self.shared.handle.clone(), self.shared.contact.id, self.shared.paths.clone());
        future_to_promise(async move {
            let peers = handle.peers().await.map_err(|e| JsValue::from(js_error("peers", e)))?;
            to_js(&peers.iter().map(|c| PeerView::new(&own, c, path_of(&paths))).collect::<Vec<_>>())
        })
    }

    /// The routing table: `[{ bucket, peers: [...] }]` for every non-empty bucket.
    #[wasm_bindgen(js_name = routingTable)]
    pub fn routing_table(&self) -> js_sys::Promise {
        let (handle, own, paths) = (self.shared.handle.clone(), self.shared.contact.id, self.shared.paths.clone());
        future_to_promise(async move {
            let table = handle.routing_table().await.map_err(|e| JsValue::from(js_error("routing table", e)))?;
            to_js(&table_view(&own, &table, path_of(&paths)))
        })
    }

    /// Calls `callback(event)` for every node event from now on (see `EventView`).
    #[wasm_bindgen(js_name = onEvent)]
    pub fn on_event(&self, callback: js_sys::Function) {
        self.shared.listeners.borrow_mut().push(callback);
    }

    /// What the node found at start and since: `{ restoredRecords, restoredContacts, joinedPeers, evicted,
    /// linksOpened, startSteps }` (`linksOpened`: WebRTC links opened so far, `[signaled through the
    /// signaling server, through one peer, through two]`; `startSteps`: how long each step of `start` took,
    /// in ms: `store` (IndexedDB opened, identity read), `key` (the signing key found or made),
    /// `registered` (on a signaling server, while the stored records and contacts were counted), `seeds`
    /// (peers asked of the server), `joined` (the join's lookup)).
    pub fn stats(&self) -> Result<JsValue, JsError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Stats {
            restored_records: usize,
            restored_contacts: usize,
            joined_peers: usize,
            evicted: u64,
            links_opened: [u64; 3],
            start_steps: std::collections::BTreeMap<&'static str, f64>,
        }
        let s = &self.shared;
        let stats = Stats {
            restored_records: s.restored_records,
            restored_contacts: s.restored_contacts,
            joined_peers: s.joined.get(),
            evicted: s.evicted.get(),
            links_opened: s.paths.opened(),
            start_steps: s.start_steps.iter().copied().collect(),
        };
        // Plain objects, not `Map`s, so that pages and JSON see the steps.
        stats
            .serialize(&serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true))
            .map_err(|e| js_error("stats", e))
    }

    /// What the node relayed over its links (signals for new links): a promise of `{ sent, delivered,
    /// forwarded, overBudget, unroutable }` since it started.
    #[wasm_bindgen(js_name = relayStats)]
    pub fn relay_stats(&self) -> js_sys::Promise {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Relayed {
            sent: u64,
            delivered: u64,
            forwarded: u64,
            over_budget: u64,
            unroutable: u64,
        }
        let handle = self.shared.handle.clone();
        future_to_promise(async move {
            let s = handle.relay_stats().await.map_err(|e| JsValue::from(js_error("relay stats", e)))?;
            let (sent, delivered, forwarded, over_budget, unroutable) =
                (s.sent, s.delivered, s.forwarded, s.over_budget, s.unroutable);
            to_js(&Relayed { sent, delivered, forwarded, over_budget, unroutable })
        })
    }

    /// Stops the node: links close and the routing table is saved.
    pub fn shutdown(&self) {
        self.shared.handle.shutdown();
    }
}
