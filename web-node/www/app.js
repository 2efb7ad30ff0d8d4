// The page of a webdht tab: starts a WebNode and shows what it does.
// `window.webdht` exposes the node and its join time to scripts (the e2e run drives tabs through it).
import init, { WebNode, idWorkCost, setLogLevel, logLines } from "./web_node.js";

// The wasm's SHA-384, written here by the build (`cargo xtask build-web`); this file is itself pinned by
// the integrity attribute of its script tag, and the glue above by the page's import map.
const WASM_SHA384 = "@WASM_SHA384@";

// The wasm module, compiled only once its bytes match WASM_SHA384: a tampered bundle does not run.
async function verifiedWasm(mark) {
  if (WASM_SHA384.startsWith("@")) throw new Error("refused to run: this bundle was not built with its hashes (cargo xtask build-web)");
  if (!globalThis.crypto?.subtle) {
    throw new Error("refused to run: the page is not a secure context, so the wasm cannot be checked against its hash (serve it over https or from localhost)");
  }
  const bytes = await (await fetch(new URL("./web_node_bg.wasm", import.meta.url))).arrayBuffer();
  mark("wasmFetched");
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-384", bytes));
  mark("wasmHashed");
  const actual = `sha384-${btoa(String.fromCharCode(...digest))}`;
  if (actual !== WASM_SHA384) {
    throw new Error(`refused to run: web_node_bg.wasm does not match the hash this page was built with (${actual}, expected ${WASM_SHA384})`);
  }
  return WebAssembly.compile(bytes);
}

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const scheme = location.protocol === "https:" ? "wss" : "ws";
// `?signaling=URL[,URL…]`: servers tried in order (the first that answers is used); by default this page's.
const signalingUrls = (params.get("signaling") || `${scheme}://${location.host}/ws`).split(",");
// `?maxLinks=N`: live links kept at most (WebNode.start's option; its default when absent).
const maxLinks = params.has("maxLinks") ? Number(params.get("maxLinks")) : undefined;

// Tabs of one origin share IndexedDB, so each tab keeps its own database: named by `?node=`, or a name
// kept in sessionStorage (which survives a reload of this tab, and only of this tab).
function dbName() {
  const named = params.get("node");
  if (named) return `webdht-${named}`;
  let name = sessionStorage.getItem("webdht-db");
  if (!name) {
    name = `webdht-${crypto.getRandomValues(new Uint32Array(1))[0].toString(16)}`;
    sessionStorage.setItem("webdht-db", name);
  }
  return name;
}

const page = (window.webdht = {
  state: "loading", error: null, joinMs: null, node: null, stats: null, idWorkCost, logLines,
  // The longest main-thread task seen (PerformanceObserver "longtask": tasks over 50 ms), in ms.
  longestTaskMs: 0,
});

if (typeof PerformanceObserver !== "undefined" && PerformanceObserver.supportedEntryTypes?.includes("longtask")) {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) page.longestTaskMs = Math.max(page.longestTaskMs, e.duration);
  }).observe({ type: "longtask", buffered: true });
}

function setState(text, cls = "") {
  page.state = text;
  const el = $("state");
  el.textContent = text;
  el.className = `badge ${cls}`;
}

function log(text, cls = "") {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  if (cls) li.className = cls;
  const list = $("log");
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}

function describe(ev) {
  switch (ev.type) {
    case "peer_connected": return `link open: ${ev.peer} (${ev.peer_kind})`;
    case "peer_disconnected": return `link closed: ${ev.peer}`;
    case "peer_added": return `routing table + ${ev.peer}`;
    case "peer_removed": return `routing table − ${ev.peer}`;
    case "record_stored": return `stored record ${ev.key} for ${ev.peer}`;
    case "peer_misbehaved": return `peer ${ev.peer} misbehaved: ${ev.detail}`;
    case "dial_failed": return `no link to ${ev.peer}: ${ev.detail}`;
    case "storage_evicted": return ev.detail;
    default: return ev.detail || ev.type;
  }
}

const SVG = "http://www.w3.org/2000/svg";
function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

// Peers on rings by bucket (nearer in XOR distance = nearer the centre), at an angle given by their id.
function drawTable(buckets) {
  const svg = $("table");
  svg.replaceChildren();
  const used = buckets.map((b) => b.bucket);
  const lo = used.length ? Math.min(...used) : 0;
  const hi = used.length ? Math.max(...used) : 0;
  const span = Math.max(hi - lo, 1);
  const radius = (bucket) => 180 - ((bucket - lo) / span) * 150;
  for (const b of buckets) {
    const r = radius(b.bucket);
    svg.append(svgEl("circle", { class: "ring", r, cx: 0, cy: 0 }));
    const label = svgEl("text", { class: "ring-label", x: 3, y: -r - 2 });
    label.textContent = `${b.bucket}`;
    svg.append(label);
    for (const p of b.peers) {
      const angle = (parseInt(p.id.slice(0, 4), 16) / 65536) * 2 * Math.PI;
      const dot = svgEl("circle", { class: p.kind, r: 5, cx: r * Math.cos(angle), cy: r * Math.sin(angle) });
      const title = svgEl("title", {});
      title.textContent = `${p.short} (${p.kind}, bucket ${p.bucket})`;
      dot.append(title);
      svg.append(dot);
    }
  }
  svg.append(svgEl("circle", { class: "self", r: 7, cx: 0, cy: 0 }));
}

function drawPeers(peers) {
  $("peer-count").textContent = `(${peers.length})`;
  $("peers").replaceChildren(
    ...peers.map((p) => {
      const tr = document.createElement("tr");
      tr.innerHTML = `<td><code></code></td><td class="kind-${p.kind}"></td><td></td><td></td>`;
      tr.children[0].firstChild.textContent = p.short;
      tr.children[1].textContent = p.kind;
      tr.children[2].textContent = p.bucket ?? "";
      // How the link travels: host (direct), srflx/prflx (direct through a NAT), relay (through TURN).
      tr.children[3].textContent = p.path ? `${p.path.kind} · ${p.path.setupMs} ms` : "";
      if (p.path) tr.children[3].title = `ours ${p.path.local}, theirs ${p.path.remote}, ${p.path.protocol}, ${p.path.dialed ? "dialed" : "answered"}${p.path.relays ? `, signaled through ${p.path.relays} peer(s)` : ""}`;
      return tr;
    }),
  );
}

async function refresh() {
  const node = page.node;
  if (!node) return;
  try {
    const [peers, table] = await Promise.all([node.peers(), node.routingTable()]);
    drawPeers(peers);
    drawTable(table);
    const s = (page.stats = node.stats());
    const size = table.reduce((n, b) => n + b.peers.length, 0);
    $("storage").textContent =
      `IndexedDB "${page.db}": ${s.restoredRecords} records and ${s.restoredContacts} contacts restored at start` +
      (s.evicted ? `; storage full, ${s.evicted} records evicted` : "");
    setState(peers.length ? `online · ${peers.length} links · ${size} in table` : "waiting for peers", peers.length ? "ok" : "");
  } catch (e) {
    log(`refresh failed: ${e}`, "warn");
  }
}

// This node's signed records, as its own storage holds them (drawn at start and after a put; a file's
// chunks are its records too, but neither read nor listed).
async function drawMine() {
  const records = await page.node.ownRecords({ signed: true });
  const rows = records.map((r) => {
    const tr = document.createElement("tr");
    tr.innerHTML = "<td><code></code></td><td></td><td></td>";
    tr.children[0].firstChild.textContent = r.name ?? `${r.hash.slice(0, 16)}…`;
    tr.children[1].textContent = r.seq ?? "immutable";
    const v = typeof r.value === "string" ? r.value : "(bytes)";
    tr.children[2].textContent = v.length > 40 ? `${v.slice(0, 40)}…` : v;
    return tr;
  });
  $("mine").replaceChildren(...rows);
}

async function onSubmit(ev) {
  ev.preventDefault();
  const node = page.node;
  const out = $("kv-result");
  if (!node) return;
  const key = $("key").value;
  try {
    if (ev.submitter && ev.submitter.value === "put") {
      const value = $("value").value;
      const r = await node.put(key, value);
      out.className = r.acks > 0 ? "ok" : "bad";
      out.textContent = `put "${key}" version ${r.seq}: stored at ${r.acks} of ${r.attempted} nodes in ${r.ms.toFixed(0)} ms`;
      await drawMine();
    } else {
      const owner = $("owner-in").value.trim() || undefined;
      const r = await node.get(key, { owner });
      const who = owner ? `${owner.slice(0, 16)}…'s` : "my";
      out.className = r.value === null ? "bad" : "ok";
      out.textContent = r.value === null
        ? `get ${who} "${key}": not found (${r.ms.toFixed(0)} ms)`
        : `get ${who} "${key}" = ${JSON.stringify(r.value)} (version ${r.seq}) in ${r.ms.toFixed(0)} ms`;
    }
    log(out.textContent);
  } catch (e) {
    out.className = "bad";
    out.textContent = `${e}`;
    log(`${e}`, "warn");
  }
}

// Publishes `file` (a File or Blob): a worker cuts and hashes it, this thread stores the chunks.
// `onProgress(stored, total)`; resolves to { hash, len, chunks, sent, reused, manifests, unacked }.
async function publishFile(file, onProgress = () => {}) {
  const publish = page.node.publishFile();
  const worker = new Worker(new URL("./files-worker.js", import.meta.url), { type: "module" });
  try {
    await new Promise((resolve, reject) => {
      worker.onerror = (e) => reject(new Error(e.message || "the chunking worker failed"));
      worker.onmessage = async ({ data }) => {
        try {
          if (data.type === "error") throw new Error(data.message);
          for (const c of data.chunks) await publish.addChunk(c.hash, c.bytes);
          onProgress(publish.stored(), data.total);
          if (data.last) resolve();
          else worker.postMessage({ type: "next" });
        } catch (e) {
          reject(e);
        }
      };
      // The worker runs the module checked here; it fetches no wasm of its own.
      worker.postMessage({ type: "file", file, module: page.wasm });
    });
    const done = await publish.finish();
    onProgress(done.len, done.len);
    return done;
  } finally {
    worker.terminate();
  }
}

// Fetches the file named `hash`, each chunk checked; `onProgress(done, total)`; resolves to a Blob.
async function fetchFile(hash, onProgress = () => {}) {
  const file = await page.node.openFile(hash);
  const parts = [];
  let done = 0;
  onProgress(0, file.len);
  for (let chunk; (chunk = await file.next()) !== null; ) {
    parts.push(chunk);
    done += chunk.length;
    onProgress(done, file.len);
  }
  return new Blob(parts);
}

function showProgress(verb) {
  const bar = $("file-progress");
  return (done, total) => {
    bar.max = total || 1;
    bar.value = done;
    $("file-status").textContent = `${verb} ${(done / 1048576).toFixed(1)} of ${(total / 1048576).toFixed(1)} MiB`;
  };
}

function fileLink(hash, name) {
  const url = new URL(location.href);
  url.search = "";
  url.searchParams.set("file", hash);
  if (name) url.searchParams.set("name", name);
  return url.href;
}

async function onPublish(ev) {
  ev.preventDefault();
  const file = $("file-in").files[0];
  if (!page.node || !file) return;
  const t0 = performance.now();
  try {
    const r = await publishFile(file, showProgress("stored"));
    const s = (performance.now() - t0) / 1000;
    $("file-status").textContent = `published ${r.chunks} chunks (${r.sent} sent, ${r.reused} already stored) in ${s.toFixed(1)} s`;
    const a = Object.assign(document.createElement("a"), { href: fileLink(r.hash, file.name), textContent: fileLink(r.hash, file.name) });
    $("file-link").replaceChildren("Open in another tab: ", a);
    log(`published ${file.name}: ${r.hash}`);
  } catch (e) {
    $("file-status").textContent = `${e}`;
    log(`publish failed: ${e}`, "warn");
  }
}

// `?file=HASH[&name=NAME]`: fetch it with a progress bar, then offer it to save.
async function openFileLink(hash, name = "file") {
  const t0 = performance.now();
  try {
    const blob = await fetchFile(hash, showProgress("fetched"));
    const s = (performance.now() - t0) / 1000;
    page.lastFetch = { ms: s * 1000, size: blob.size, url: null };
    $("file-status").textContent = `fetched ${(blob.size / 1048576).toFixed(1)} MiB in ${s.toFixed(1)} s, every chunk checked`;
    const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: name, textContent: `Save ${name}` });
    page.lastFetch.url = a.href;
    $("file-link").replaceChildren(a);
    return blob;
  } catch (e) {
    $("file-status").textContent = `${e}`;
    log(`fetch failed: ${e}`, "warn");
    page.lastFetch = { error: `${e}` };
    throw e;
  }
}

Object.assign(page, { publishFile, fetchFile, openFileLink });

// The STUN and TURN servers this page's server hands out (TURN with credentials that expire); none when it
// has none or cannot say.
async function iceServers() {
  try {
    const answer = await fetch(new URL("/config", location.href));
    if (answer.ok) return (await answer.json()).iceServers ?? [];
  } catch (e) {
    log(`no ICE servers from /config: ${e}`, "warn");
  }
  return [];
}

async function main() {
  $("signaling").textContent = signalingUrls.join(" or ");
  $("kv-form").addEventListener("submit", onSubmit);
  $("file-form").addEventListener("submit", onPublish);
  page.db = dbName();
  // Where the join's time goes (ms from page load at the end of each step).
  const mark = (step) => (page.timings[step] = Math.round(performance.now()));
  page.timings = {};
  try {
    // The ICE servers are fetched while the wasm loads.
    const ice = iceServers().finally(() => mark("config"));
    setState("loading wasm");
    mark("main");
    page.wasm = await verifiedWasm(mark);
    mark("wasmVerified");
    await init({ module_or_path: page.wasm });
    mark("wasmReady");
    // `?log=LEVEL`: how much of the node's own log reaches the console and `logLines` (warnings by default).
    if (params.get("log")) setLogLevel(params.get("log"));
    setState("joining");
    const node = await WebNode.start({ signaling: signalingUrls, db: page.db, iceServers: await ice, maxLinks });
    mark("started");
    page.node = node;
    node.onEvent((ev) => log(describe(ev), ev.type === "peer_misbehaved" || ev.type === "storage_evicted" ? "warn" : ""));
    const s = node.stats();
    // Join time: from page load (performance.now() counts from navigation) to a finished lookup that found peers.
    if (s.joinedPeers > 0) page.joinMs = performance.now();
    $("node-id").textContent = node.id();
    $("owner").textContent = node.owner();
    await drawMine();
    $("joined").textContent = s.joinedPeers > 0
      ? `${s.joinedPeers} peers found in ${page.joinMs.toFixed(0)} ms after page load`
      : "no peers yet: this is the first node on the signaling server";
    log(`node ${node.id().slice(0, 16)} started (${s.restoredRecords} records, ${s.restoredContacts} contacts restored)`);
    await refresh();
    setInterval(refresh, 1000);
    if (params.get("file")) openFileLink(params.get("file"), params.get("name") || "file").catch(() => {});
  } catch (e) {
    page.error = `${e}`;
    setState(`${e}`.includes("refused to run") ? "refused" : "failed", "bad");
    log(`start failed: ${e}`, "warn");
  }
}

main();

// Best effort on close or reload: the node saves its routing table on shutdown (it also saves every 5 s).
addEventListener("pagehide", () => page.node && page.node.shutdown());
