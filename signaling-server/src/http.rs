//! Just enough HTTP/1.1 for one port to serve both the WebSocket upgrade and the static web page: read and
//! parse the request head (bounded in size and time), answer the upgrade, or serve a file. Public for the
//! fuzz target of the request parsing (`fuzz/fuzz_targets/signaling_http.rs`).

use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted, in bytes.
pub const MAX_HEAD: usize = 8 * 1024;

/// The parts of a request head the server uses.
#[derive(Debug)]
pub struct Head {
    /// The method (`GET`, ...).
    pub method: String,
    /// The request target as sent.
    pub path: String,
    /// `Sec-WebSocket-Key` of a well-formed upgrade request.
    pub websocket_key: Option<String>,
    /// The `Origin` header (browsers send it on WebSocket upgrades).
    pub origin: Option<String>,
    /// The `X-Forwarded-For` header, as a reverse proxy sets it.
    pub forwarded_for: Option<String>,
}

impl Head {
    /// The client address a reverse proxy names: the last entry of `X-Forwarded-For` (the one the proxy
    /// itself appended; earlier ones come from the client and prove nothing).
    pub fn forwarded_client(&self) -> Option<std::net::IpAddr> {
        self.forwarded_for.as_deref()?.rsplit(',').next()?.trim().parse().ok()
    }
}

/// Why a request head was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The connection ended first.
    #[error("connection closed before a full request head")]
    Eof,
    /// Over [`MAX_HEAD`].
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    /// Not HTTP/1.1 as the server takes it.
    #[error("malformed request head: {0}")]
    Malformed(String),
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one request head; returns it and any bytes read past its end.
pub(crate) async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> Result<(Head, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeadError::Eof);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, len)) = parse_head(&buf)? {
            return Ok((head, buf[len..].to_vec()));
        }
    }
}

/// Parses a request head from the bytes received so far: the head and its length once complete, `None`
/// while more bytes are needed (and allowed: [`MAX_HEAD`] in all), or why it is refused.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some((head_of(&req)?, len))),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Ok(None),
        Ok(httparse::Status::Partial) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Malformed(e.to_string())),
    }
}

fn head_of(req: &httparse::Request<'_, '_>) -> Result<Head, HeadError> {
    let method = req.method.unwrap_or_default().to_string();
    let path = req.path.unwrap_or("/").to_string();
    let header = |name: &str| {
        req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let upgrade = has_token("upgrade", "websocket") && has_token("connection", "upgrade");
    let websocket_key = if upgrade {
        if method != "GET" || header("sec-websocket-version") != Some("13") {
            return Err(HeadError::Malformed("WebSocket upgrade needs GET and version 13".into()));
        }
        Some(
            header("sec-websocket-key").ok_or_else(|| HeadError::Malformed("no Sec-WebSocket-Key".into()))?.to_string(),
        )
    } else {
        None
    };
    let origin = header("origin").map(str::to_string);
    let forwarded_for = header("x-forwarded-for").map(str::to_string);
    Ok(Head { method, path, websocket_key, origin, forwarded_for })
}

/// Answers an upgrade request.
pub(crate) async fn accept_upgrade(stream: &mut (impl AsyncWrite + Unpin), key: &str) -> std::io::Result<()> {
    let accept = async_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await
}

/// Writes a complete response and closes the connection. Every answer carries the site's
/// Content-Security-Policy (`csp`), no referrer, no framing and no content sniffing.
pub(crate) async fn respond(
    stream: &mut (impl AsyncWrite + Unpin),
    (status, content_type): (&str, &str),
    body: &[u8],
    head_only: bool,
    csp: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\n\
         X-Content-Type-Options: nosniff\r\nContent-Security-Policy: {csp}\r\nReferrer-Policy: no-referrer\r\n\
         X-Frame-Options: DENY\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

/// The file under `root` that `path` names, or `None` when the path is not a plain relative path (no
/// `..`, no hidden files, only `[A-Za-z0-9._/-]`). `/` is `index.html`.
pub fn file_for(root: &Path, path: &str) -> Option<PathBuf> {
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let rel = path.strip_prefix('/')?;
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let ok = rel.split('/').all(|seg| {
        !seg.is_empty()
            && !seg.starts_with('.')
            && seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    ok.then(|| root.join(rel))
}

/// The content type for a file name.
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_map_to_files() {
        let root = Path::new("/srv/web");
        assert_eq!(file_for(root, "/"), Some(root.join("index.html")));
        assert_eq!(file_for(root, "/pkg/web_node_bg.wasm?v=2"), Some(root.join("pkg/web_node_bg.wasm")));
        for bad in
            ["/../etc/passwd", "/a/../../b", "/.git/config", "//etc/passwd", "/a//b", "relative", "/%2e%2e/x", "/a\\b"]
        {
            assert_eq!(file_for(root, bad), None, "{bad}");
        }
    }
}
