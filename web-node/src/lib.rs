//! # web-node
//!
//! A webdht node in a browser tab: the driver and core, WebRTC links through a signaling server
//! (transport-webrtc's web-sys backend) and IndexedDB storage (kvstore's `IdbStore`), behind a small JS API:
//!
//! ```js
//! import init, { WebNode } from "./web_node.js";
//! await init();
//! const node = await WebNode.start("ws://127.0.0.1:8080/ws", "webdht-tab-1"); // database name optional
//! await node.put("greeting", "hello");       // → { acks, attempted, ms }
//! await node.get("greeting");                // → { value, ms } (value null when absent)
//! await node.peers();                        // → [{ id, short, kind: "native" | "browser", bucket, addrs }]
//! node.onEvent(e => console.log(e.type));    // peer_connected, record_stored, storage_evicted, ...
//! ```
//!
//! The JS-facing part only builds for wasm32; the views it hands to JS are plain Rust (tested natively).
#![warn(missing_docs)]

pub mod logs;
pub mod views;

#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(target_arch = "wasm32")]
mod files;
#[cfg(target_arch = "wasm32")]
mod webcrypto;
#[cfg(target_arch = "wasm32")]
pub use api::WebNode;
#[cfg(target_arch = "wasm32")]
pub use files::{FileChunker, FileFetch, FilePublish};
