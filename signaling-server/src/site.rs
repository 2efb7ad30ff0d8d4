//! The web page the server hands out: its files read once at start and kept in memory (every request is
//! served from the same shared bytes, none touches the disk), and the security headers that go with them.
//!
//! The Content-Security-Policy lets the page run its own scripts and wasm and nothing else: scripts from
//! this origin, and the inline scripts of `index.html` (its import map) by their SHA-256, computed here
//! from the file served; no plugins, no framing, no `<base>`. With the integrity attributes the build
//! writes into the page, a bundle changed on the way or on disk after start does not run.

use crate::http;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files a site may hold.
pub const MAX_FILES: usize = 256;
/// Bytes a site may hold in all.
pub const MAX_BYTES: u64 = 64 << 20;
/// Directory depth a site may have below its root.
const MAX_DEPTH: usize = 4;

/// Why a web directory cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// A file or directory could not be read.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// More than [`MAX_FILES`] files, [`MAX_BYTES`] bytes or directories deeper than allowed.
    #[error("{0} is larger than a site may be ({MAX_FILES} files, {MAX_BYTES} bytes, {MAX_DEPTH} levels)")]
    TooLarge(PathBuf),
}

/// One file of the site.
#[derive(Debug)]
pub struct File {
    /// Its bytes.
    pub body: Arc<[u8]>,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

/// A web directory in memory, by request path (`/` is `/index.html`).
#[derive(Debug, Default)]
pub struct Site {
    files: HashMap<String, File>,
    csp: String,
}

impl Site {
    /// Reads `dir` (files whose names `http::file_for` would serve; others, such as hidden ones, are left
    /// out), within [`MAX_FILES`], [`MAX_BYTES`] and a depth of 4.
    pub fn load(dir: &Path) -> Result<Site, SiteError> {
        let mut files = HashMap::new();
        let mut total = 0u64;
        let mut pending = vec![(dir.to_path_buf(), String::new(), 0usize)];
        while let Some((path, prefix, depth)) = pending.pop() {
            let entries = std::fs::read_dir(&path).map_err(|e| SiteError::Io(path.clone(), e))?;
            for entry in entries {
                let entry = entry.map_err(|e| SiteError::Io(path.clone(), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let request = format!("{prefix}/{name}");
                let full = entry.path();
                if http::file_for(dir, &request).is_none() {
                    continue;
                }
                let kind = entry.file_type().map_err(|e| SiteError::Io(full.clone(), e))?;
                if kind.is_dir() {
                    if depth + 1 > MAX_DEPTH {
                        return Err(SiteError::TooLarge(dir.to_path_buf()));
                    }
                    pending.push((full, request, depth + 1));
                    continue;
                }
                let body = std::fs::read(&full).map_err(|e| SiteError::Io(full.clone(), e))?;
                total += body.len() as u64;
                if files.len() >= MAX_FILES || total > MAX_BYTES {
                    return Err(SiteError::TooLarge(dir.to_path_buf()));
                }
                files.insert(request, File { content_type: http::content_type(&full), body: body.into() });
            }
        }
        let inline = files.get("/index.html").map(|f| inline_script_hashes(&f.body)).unwrap_or_default();
        Ok(Site { files, csp: policy(&inline) })
    }

    /// The page shown when no web directory is given.
    pub fn placeholder() -> Site {
        let body: Arc<[u8]> = PLACEHOLDER.as_bytes().into();
        let file = File { body, content_type: "text/html; charset=utf-8" };
        Site { files: HashMap::from([("/index.html".to_string(), file)]), csp: policy(&[]) }
    }

    /// The file a request path names (its query and fragment ignored).
    pub fn get(&self, path: &str) -> Option<&File> {
        let path = path.split(['?', '#']).next().unwrap_or("/");
        self.files.get(if path == "/" { "/index.html" } else { path })
    }

    /// The Content-Security-Policy sent with every answer.
    pub fn csp(&self) -> &str {
        &self.csp
    }
}

const PLACEHOLDER: &str = "<!doctype html><meta charset=utf-8><title>webdht signaling</title>\
<p>This is a webdht signaling server. No web bundle is being served: start it with <code>--web-dir</code>.</p>\n";

/// The policy: this origin's scripts, wasm and the given inline scripts; the page's own blob: URLs (files it
/// assembled); WebSockets anywhere (the page may
/// be told to use another signaling server); nothing framed, no plugins, no `<base>`.
fn policy(inline_scripts: &[String]) -> String {
    let hashes: String = inline_scripts.iter().map(|h| format!(" 'sha256-{h}'")).collect();
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'{hashes}; style-src 'self'; \
         img-src 'self' data: blob:; connect-src 'self' blob: ws: wss:; worker-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The base64 SHA-256 of each inline `<script>` (one without `src`) of an HTML page, as CSP hashes them:
/// the exact text between the tags.
fn inline_script_hashes(html: &[u8]) -> Vec<String> {
    use base64::Engine;
    use sha2::Digest;
    let Ok(html) = std::str::from_utf8(html) else { return Vec::new() };
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        let after = &rest[start..];
        let Some(open_end) = after.find('>') else { break };
        let tag = &after[..open_end];
        let body = &after[open_end + 1..];
        let Some(close) = body.find("</script>") else { break };
        if !tag.contains(" src=") {
            let digest = sha2::Sha256::digest(&body.as_bytes()[..close]);
            out.push(base64::engine::general_purpose::STANDARD.encode(digest));
        }
        rest = &body[close..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_scripts_are_hashed_and_external_ones_are_not() {
        let page = br#"<head><script type="importmap">{"a":1}</script>
            <script type="module" src="app.js" integrity="sha384-x"></script></head>"#;
        let hashes = inline_script_hashes(page);
        // echo -n '{"a":1}' | openssl dgst -sha256 -binary | base64
        assert_eq!(hashes, vec!["AVq9f1zFei3ZS3WQ8ErYCEJzkF7jPsXOvq5iJ2qX+GI=".to_string()]);
        let csp = policy(&hashes);
        assert!(
            csp.contains("script-src 'self' 'wasm-unsafe-eval' 'sha256-AVq9f1zFei3ZS3WQ8ErYCEJzkF7jPsXOvq5iJ2qX+GI='")
        );
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"));
    }

    #[test]
    fn a_site_is_read_once_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<script>go()</script>").unwrap();
        std::fs::write(dir.path().join(".secret"), "no").unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        std::fs::write(dir.path().join("pkg/a.wasm"), [0u8, 97, 115, 109]).unwrap();
        let site = Site::load(dir.path()).unwrap();
        assert_eq!(&*site.get("/").unwrap().body, b"<script>go()</script>");
        assert_eq!(site.get("/pkg/a.wasm?v=1").unwrap().content_type, "application/wasm");
        assert!(site.get("/.secret").is_none());
        // Changed on disk after start: still the bytes read at start.
        std::fs::write(dir.path().join("index.html"), "tampered").unwrap();
        assert_eq!(&*site.get("/index.html").unwrap().body, b"<script>go()</script>");
        assert!(site.csp().contains("'sha256-"));
        for i in 0..=MAX_FILES {
            std::fs::write(dir.path().join(format!("f{i}.txt")), "x").unwrap();
        }
        assert!(matches!(Site::load(dir.path()), Err(SiteError::TooLarge(_))));
    }
}
