//! The control socket: one request line, one answer line, on a loopback TCP port.
//!
//! Requests: `PUT <name> <value…>`, `GET <name>`, `LOCAL <name>` (this node's own store only), `PEERS`, `ID`. Answers: `OK acks=<n> of=<m>`,
//! `VALUE <value…>`, `NOTFOUND`, `PEERS <n> <id>…`, `ID <id> <addr>…`, or `ERR <reason>`.

use dht_core::{Contact, Key};
use dht_driver::NodeHandle;
use std::net::SocketAddr;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Longest request line accepted.
const MAX_LINE: usize = 80 * 1024;

/// Binds the control socket, writes its address to `DATA_DIR/control.addr`, and serves it until an error.
pub async fn serve(
    addr: SocketAddr,
    data_dir: &Path,
    node: NodeHandle,
    me: Contact,
) -> Result<impl std::future::Future<Output = ()>, String> {
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("control socket {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    std::fs::write(data_dir.join("control.addr"), bound.to_string()).map_err(|e| e.to_string())?;
    tracing::info!(%bound, "control socket ready");
    Ok(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (node, me) = (node.clone(), me.clone());
            tokio::task::spawn_local(async move {
                if let Err(e) = session(stream, node, me).await {
                    tracing::debug!("control session ended: {e}");
                }
            });
        }
    })
}

async fn session(stream: TcpStream, node: NodeHandle, me: Contact) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut lines).take(MAX_LINE as u64 + 1).read_line(&mut line).await?;
        if n == 0 {
            return Ok(());
        }
        let answer = if n > MAX_LINE {
            "ERR request line too long".to_owned()
        } else {
            answer(line.trim_end(), &node, &me).await
        };
        write.write_all(answer.as_bytes()).await?;
        write.write_all(b"\n").await?;
    }
}

async fn answer(line: &str, node: &NodeHandle, me: &Contact) -> String {
    let mut parts = line.splitn(3, ' ');
    let verb = parts.next().unwrap_or("").to_ascii_uppercase();
    match (verb.as_str(), parts.next(), parts.next()) {
        ("PUT", Some(name), Some(value)) => {
            match node.put(Key::from_name(name.as_bytes()), value.as_bytes().to_vec()).await {
                Ok(o) => format!("OK acks={} of={}", o.acks, o.attempted),
                Err(e) => format!("ERR {e}"),
            }
        }
        ("GET", Some(name), None) => match node.get(Key::from_name(name.as_bytes())).await {
            Ok(Some(v)) => format!("VALUE {}", String::from_utf8_lossy(&v)),
            Ok(None) => "NOTFOUND".to_owned(),
            Err(e) => format!("ERR {e}"),
        },
        ("LOCAL", Some(name), None) => match node.get_local(Key::from_name(name.as_bytes())).await {
            Ok(Some(v)) => format!("VALUE {}", String::from_utf8_lossy(&v)),
            Ok(None) => "NOTFOUND".to_owned(),
            Err(e) => format!("ERR {e}"),
        },
        ("PEERS", None, None) => match node.peers().await {
            Ok(peers) => {
                let ids: Vec<String> = peers.iter().map(|c| format!("{:#}", c.id)).collect();
                format!("PEERS {} {}", ids.len(), ids.join(" "))
            }
            Err(e) => format!("ERR {e}"),
        },
        ("ID", None, None) => {
            let addrs: Vec<&str> = me.addrs.iter().map(|a| a.as_str()).collect();
            format!("ID {:#} {}", me.id, addrs.join(" "))
        }
        _ => "ERR usage: PUT <name> <value> | GET <name> | LOCAL <name> | PEERS | ID".to_owned(),
    }
}

/// Sends one request to the node whose data directory is `data_dir` and prints the answer.
pub async fn client(data_dir: &Path, request: &str) -> Result<(), String> {
    let path = data_dir.join("control.addr");
    let addr = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e} (is the node running?)", path.display()))?;
    let mut stream =
        TcpStream::connect(addr.trim()).await.map_err(|e| format!("control socket {}: {e}", addr.trim()))?;
    stream.write_all(format!("{request}\n").as_bytes()).await.map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).await.map_err(|e| e.to_string())?;
    let reply = reply.trim_end();
    println!("{reply}");
    if reply.starts_with("ERR") {
        Err(reply.to_owned())
    } else {
        Ok(())
    }
}
