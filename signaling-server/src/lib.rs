//! # signaling-server
//!
//! Where browser tabs (and native nodes that accept WebRTC) meet before they can talk directly: a node
//! registers under its node id over a WebSocket, proving it holds the key behind that id; then it relays
//! WebRTC offers, answers and ICE candidates to other registered nodes by id, and can ask for a few random
//! registered peers to start from. The same port serves the web page and the wasm bundle over HTTP, or
//! over HTTPS and WSS with a certificate (`tls`).
//!
//! The server is trusted with nothing: links it brokers run the Noise handshake end to end inside the data
//! channel, so a server that lies about who is who only gets links that fail.
//!
//! The wire format is the `signaling-protocol` crate, which clients use without this one.
#![warn(missing_docs)]

pub mod http;
pub mod ice;
pub mod server;
pub mod site;
pub mod tls;
