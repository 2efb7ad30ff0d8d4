//! The control socket: one request line, one answer line, on a loopback TCP port, one request a
//! connection. Each request line starts with the token the node writes at start to
//! `DATA_DIR/control.token` (readable by its owner only): other users and processes of the machine that
//! reach the port cannot drive the node (`<token> PEERS`); a line without it is answered `ERR unauthorized`.
//!
//! Requests and answers:
//! - `PUT [--cas <seq>] <name> <value…>`: the next version of this node's signed record `name` →
//!   `OK seq=<n> acks=<a> of=<m> owner=<hex>`;
//! - `GET <name> [<owner>]`: the newest version of `owner`'s record `name` (default: this node's) →
//!   `VALUE <value…>` or `NOTFOUND`;
//! - `PUT-IMMUTABLE <value…>` → `OK hash=<hex> acks=<a> of=<m>`; `GET-IMMUTABLE <hash>` → `VALUE <value…>`;
//! - `LOCAL <name> [<owner>]`, `LOCAL-IMMUTABLE <hash>`: this node's own store only;
//! - `PEERS` → `PEERS <n> <id>…`; `ID` → `ID <id> <addr>…`; `OWNER` → `OWNER <hex>` (the key it signs with);
//! - `PATHS` → `PATHS <n> <id>=<kind>,<ours>,<theirs>,<protocol>,<setup ms>,<dialed|answered>,<relays>…`: how
//!   each live WebRTC link travels (kind `host`, `srflx`, `prflx` or `relay`; relays: peers that carried its
//!   setup's signals, 0 for the signaling server; see `transport_webrtc::LinkPath`);
//! - `RELAYED` → `RELAYED sent=<n> delivered=<n> forwarded=<n> over_budget=<n> unroutable=<n>
//!   links=<server>,<1 relay>,<2 relays>`: messages the node relayed over its links (see
//!   `dht_driver::RelayStats`), and the WebRTC links it opened by how their setup was signaled;
//! - `PUBLISH <path>` → `OK hash=<hex> bytes=<n> chunks=<c> sent=<s> reused=<r> …` (the file at `path`, as the
//!   node reads it); `FETCH <hash> <path>` → `OK bytes=<n> resumed=<r> path=<path>`: both send
//!   `PROGRESS <done> <total>` lines first (see [`crate::files`]).
//!
//! Anything else, or a refused put, is answered `ERR <reason>` on one line.

use crate::files;
use dht_core::{Contact, Key, OwnerKey, RecordKind, StoreRefusal};
use dht_driver::NodeHandle;
use std::net::SocketAddr;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use transport_webrtc::PathBook;

/// Longest request line accepted.
const MAX_LINE: usize = 80 * 1024;

/// The file holding the token, in the data directory.
pub const TOKEN_FILE: &str = "control.token";

/// A fresh token (32 random bytes, hex), written to `DATA_DIR/control.token` with mode 0600 (replacing an
/// older one, so a token read from an earlier run stops working).
fn new_token(data_dir: &Path) -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for the control token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = data_dir.join(TOKEN_FILE);
    let fresh = data_dir.join(format!("{TOKEN_FILE}.new"));
    let _ = std::fs::remove_file(&fresh);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let write = |f: &mut std::fs::File| std::io::Write::write_all(f, token.as_bytes());
    options.open(&fresh).and_then(|mut f| write(&mut f)).map_err(|e| format!("{}: {e}", fresh.display()))?;
    std::fs::rename(&fresh, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(token)
}

/// The request line for `request` to the node whose data directory is `data_dir`: its token, then the
/// request; and the control socket's address.
pub fn request_line(data_dir: &Path, request: &str) -> Result<(String, String), String> {
    let read = |name: &str| {
        let path = data_dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e} (is the node running?)", path.display()))
    };
    let addr = read("control.addr")?;
    let token = read(TOKEN_FILE)?;
    Ok((addr.trim().to_owned(), format!("{} {request}", token.trim())))
}

/// Binds the control socket, writes a fresh token to `DATA_DIR/control.token` and the socket's address to
/// `DATA_DIR/control.addr` (in that order: a client that finds the address finds the token), and serves it
/// until an error.
pub async fn serve(
    addr: SocketAddr,
    data_dir: &Path,
    node: NodeHandle,
    me: Contact,
    paths: PathBook,
    max_file_len: u64,
) -> Result<impl std::future::Future<Output = ()>, String> {
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("control socket {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let token = std::rc::Rc::new(new_token(data_dir)?);
    std::fs::write(data_dir.join("control.addr"), bound.to_string()).map_err(|e| e.to_string())?;
    tracing::info!(%bound, "control socket ready");
    Ok(async move {
        loop {
            let Ok((stream, from)) = listener.accept().await else { continue };
            let (node, me, token, paths) = (node.clone(), me.clone(), token.clone(), paths.clone());
            tokio::task::spawn_local(async move {
                if let Err(e) = session(stream, &token, (node, me, paths), max_file_len).await {
                    tracing::debug!(%from, "control session ended: {e}");
                }
            });
        }
    })
}

/// Whether `given` is the token, compared in constant time.
fn authorized(given: &str, token: &str) -> bool {
    given.len() == token.len() && bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()))
}

/// One connection: one request line (the token, then the request), its answer, and the connection closes.
async fn session(
    stream: TcpStream,
    token: &str,
    (node, me, paths): (NodeHandle, Contact, PathBook),
    max_file_len: u64,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let n = BufReader::new(read).take(MAX_LINE as u64 + 1).read_line(&mut line).await?;
    if n == 0 {
        return Ok(());
    }
    let (given, request) = line.trim_end().split_once(' ').unwrap_or((line.trim_end(), ""));
    let (verb, rest) = request.split_once(' ').unwrap_or((request, ""));
    let answer = if n > MAX_LINE {
        "ERR request line too long".to_owned()
    } else if !authorized(given, token) {
        tracing::warn!("control request without the token refused");
        format!("ERR unauthorized: a request line starts with the token in DATA_DIR/{TOKEN_FILE}")
    } else if verb.eq_ignore_ascii_case("PUBLISH") {
        files::publish(&node, rest, max_file_len, &mut write).await?.unwrap_or_else(|e| format!("ERR {e}"))
    } else if verb.eq_ignore_ascii_case("FETCH") {
        files::fetch(&node, rest, max_file_len, &mut write).await?.unwrap_or_else(|e| format!("ERR {e}"))
    } else {
        answer(request, &node, &me, &paths).await
    };
    write.write_all(answer.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

const USAGE: &str = "ERR usage: PUT [--cas <seq>] <name> <value> | GET <name> [<owner>] | PUT-IMMUTABLE <value> | \
                     GET-IMMUTABLE <hash> | LOCAL <name> [<owner>] | LOCAL-IMMUTABLE <hash> | PEERS | PATHS | RELAYED | ID | OWNER | \
                     PUBLISH <path> | FETCH <hash> <path>";

async fn answer(line: &str, node: &NodeHandle, me: &Contact, paths: &PathBook) -> String {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let result = match verb.to_ascii_uppercase().as_str() {
        "PUT" => put(node, rest).await,
        "GET" => get(node, rest, false).await,
        "LOCAL" => get(node, rest, true).await,
        "PUT-IMMUTABLE" if !rest.is_empty() => put_immutable(node, rest).await,
        "GET-IMMUTABLE" => get_immutable(node, rest, false).await,
        "LOCAL-IMMUTABLE" => get_immutable(node, rest, true).await,
        "PEERS" if rest.is_empty() => peers(node).await,
        "PATHS" if rest.is_empty() => Ok(link_paths(paths)),
        "RELAYED" if rest.is_empty() => relayed(node, paths).await,
        "ID" if rest.is_empty() => {
            let addrs: Vec<&str> = me.addrs.iter().map(|a| a.as_str()).collect();
            Ok(format!("ID {:#} {}", me.id, addrs.join(" ")))
        }
        "OWNER" if rest.is_empty() => Ok(format!("OWNER {}", node.owner())),
        _ => Err(USAGE.trim_start_matches("ERR ").to_owned()),
    };
    result.unwrap_or_else(|e| format!("ERR {e}"))
}

/// `[--cas <seq>] <name> <value…>`
async fn put(node: &NodeHandle, rest: &str) -> Result<String, String> {
    let (cas, rest) = match rest.strip_prefix("--cas ") {
        Some(r) => {
            let (seq, r) = r.split_once(' ').ok_or("--cas needs a sequence number, a name and a value")?;
            (Some(seq.parse::<u64>().map_err(|_| format!("--cas {seq:?} is not a sequence number"))?), r)
        }
        None => (None, rest),
    };
    let (name, value) = rest.split_once(' ').ok_or("PUT needs a name and a value")?;
    let o = node.put_signed(name.as_bytes(), value.as_bytes().to_vec(), cas).await.map_err(|e| e.to_string())?;
    // Refused here, or by a holder with a newer version or another one than `--cas` named.
    if let Some(refusal) = o.refusal {
        return Err(refused(refusal));
    }
    Ok(format!("OK seq={} acks={} of={} owner={}", o.seq.unwrap_or(0), o.acks, o.attempted, node.owner()))
}

async fn put_immutable(node: &NodeHandle, value: &str) -> Result<String, String> {
    let o = node.put_immutable(value.as_bytes().to_vec()).await.map_err(|e| e.to_string())?;
    if let Some(refusal) = o.refusal {
        return Err(refused(refusal));
    }
    Ok(format!("OK hash={:#} acks={} of={}", o.key, o.acks, o.attempted))
}

/// A refusal as one line.
fn refused(r: StoreRefusal) -> String {
    match r {
        StoreRefusal::Stale { current } => format!("refused: version {current} is newer"),
        StoreRefusal::CasFailed { current } => {
            format!("refused: compare-and-swap failed, the version held is {current}")
        }
        other => format!("refused: {other:?}"),
    }
}

/// `<name> [<owner>]`: from the network, or (`local`) from this node's own store only.
async fn get(node: &NodeHandle, rest: &str, local: bool) -> Result<String, String> {
    let mut words = rest.split(' ').filter(|w| !w.is_empty());
    let (Some(name), owner, None) = (words.next(), words.next(), words.next()) else {
        return Err("GET and LOCAL need a name and at most an owner".into());
    };
    let owner = match owner {
        Some(hex) => hex.parse::<OwnerKey>().map_err(|_| format!("{hex:?} is not an owner key (64 hex digits)"))?,
        None => node.owner(),
    };
    let record = if local {
        node.get_local(owner.record_key(name.as_bytes())).await.map_err(|e| e.to_string())?
    } else {
        node.get_signed(owner, name.as_bytes()).await.map_err(|e| e.to_string())?
    };
    Ok(value_line(record.filter(|r| r.owner() == Some(owner)).map(|r| r.value)))
}

async fn get_immutable(node: &NodeHandle, hash: &str, local: bool) -> Result<String, String> {
    let key: Key = hash.trim().parse().map_err(|_| format!("{hash:?} is not a hash (64 hex digits)"))?;
    let value = if local {
        let record = node.get_local(key).await.map_err(|e| e.to_string())?;
        record.filter(|r| r.verify() == Ok(RecordKind::Immutable)).map(|r| r.value)
    } else {
        node.get_immutable(key).await.map_err(|e| e.to_string())?
    };
    Ok(value_line(value))
}

fn value_line(value: Option<Vec<u8>>) -> String {
    match value {
        Some(v) => format!("VALUE {}", String::from_utf8_lossy(&v)),
        None => "NOTFOUND".to_owned(),
    }
}

async fn peers(node: &NodeHandle) -> Result<String, String> {
    let peers = node.peers().await.map_err(|e| e.to_string())?;
    let ids: Vec<String> = peers.iter().map(|c| format!("{:#}", c.id)).collect();
    Ok(format!("PEERS {} {}", ids.len(), ids.join(" ")))
}

async fn relayed(node: &NodeHandle, paths: &PathBook) -> Result<String, String> {
    let s = node.relay_stats().await.map_err(|e| e.to_string())?;
    let [server, one, two] = paths.opened();
    Ok(format!(
        "RELAYED sent={} delivered={} forwarded={} over_budget={} unroutable={} links={server},{one},{two}",
        s.sent, s.delivered, s.forwarded, s.over_budget, s.unroutable
    ))
}

fn link_paths(paths: &PathBook) -> String {
    let mut all = paths.all();
    all.sort_by_key(|(id, _)| *id);
    let each: Vec<String> = all
        .iter()
        .map(|(id, p)| {
            let how = if p.dialed { "dialed" } else { "answered" };
            let (ours, theirs) = (p.local.name(), p.remote.name());
            format!("{id:#}={},{ours},{theirs},{},{},{how},{}", p.kind(), p.protocol, p.setup_ms, p.relays)
        })
        .collect();
    format!("PATHS {} {}", each.len(), each.join(" "))
}

/// Sends one request to the node whose data directory is `data_dir` and prints the answer.
pub async fn client(data_dir: &Path, request: &str) -> Result<(), String> {
    let (addr, line) = request_line(data_dir, request)?;
    let mut stream = TcpStream::connect(&addr).await.map_err(|e| format!("control socket {addr}: {e}"))?;
    stream.write_all(format!("{line}\n").as_bytes()).await.map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(stream);
    let mut bar = files::Bar::new();
    let mut reply = String::new();
    loop {
        reply.clear();
        if lines.read_line(&mut reply).await.map_err(|e| e.to_string())? == 0 {
            return Err("the node closed the control socket without an answer".into());
        }
        if !bar.update(reply.trim_end()) {
            break;
        }
    }
    bar.finish();
    let reply = reply.trim_end();
    println!("{reply}");
    if reply.starts_with("ERR") {
        Err(reply.to_owned())
    } else {
        Ok(())
    }
}

/// The request with the paths of `publish` and `fetch` made absolute (the node has its own working
/// directory).
pub fn absolute_paths(mut request: Vec<String>) -> Result<Vec<String>, String> {
    let path_at = match request.first().map(|v| v.to_ascii_uppercase()) {
        Some(v) if v == "PUBLISH" => 1,
        Some(v) if v == "FETCH" => 2,
        _ => return Ok(request),
    };
    if let Some(path) = request.get_mut(path_at) {
        let absolute = std::path::absolute(&*path).map_err(|e| format!("{path}: {e}"))?;
        *path = absolute.to_str().ok_or_else(|| format!("{}: not valid UTF-8", absolute.display()))?.to_owned();
    }
    Ok(request)
}
