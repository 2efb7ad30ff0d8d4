//! # signaling-protocol
//!
//! The wire protocol of webdht signaling: JSON text messages over one WebSocket, shared by the server
//! (`signaling-server`) and every client (`transport-webrtc`, native and browser). No runtime, socket or
//! WebSocket code lives here, so it builds wherever the clients do (wasm32 included).
//!
//! 1. The server opens with [`ServerMsg::Challenge`]: a random nonce and a fresh x25519 key of its own.
//! 2. The client answers [`ClientMsg::Register`] with its static public key and a proof: HMAC-SHA256 keyed
//!    by the x25519 exchange of its static key with the server's fresh key, over the nonce and both keys
//!    ([`prove`]). Only the holder of the private key can compute it, so nobody registers under an id
//!    (the SHA-256 of the key) that is not theirs ([`Challenge::verify`]). The server answers
//!    [`ServerMsg::Registered`].
//! 3. Then the client sends [`ClientMsg::Signal`] to a node id and receives [`ServerMsg::Signal`] from
//!    others; the server fills in `from` itself. [`ClientMsg::Peers`] asks for a few random registered peers.
//!
//! Fatal errors close the socket with a close frame whose reason says why; [`ServerMsg::Error`] reports
//! the ones that leave the connection up.
//!
//! Messages are read with [`ClientMsg::decode`] / [`ServerMsg::decode`], which refuse what breaks the
//! limits below with a [`DecodeError`], and written with `encode`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod hex;
mod message;
mod proof;

pub use hex::Hex32;
pub use message::{ClientMsg, DecodeError, PeerInfo, ServerMsg};
pub use proof::{prove, solve_work, work_ok, Challenge, ProofError, MAX_WORK_BITS};

/// Largest WebSocket message a client sends and the server accepts, in bytes (SDP offers are a few KiB).
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Largest `data` of a signal: what fits in [`MAX_MESSAGE`] once the server wraps it with the sender's id.
pub const MAX_SIGNAL_DATA: usize = MAX_MESSAGE - 512;
/// Most addresses a registration may advertise.
pub const MAX_ADDRS: usize = 4;
/// Longest advertised address, in bytes.
pub const MAX_ADDR_LEN: usize = 256;
/// Most peers one [`ClientMsg::Peers`] answer holds.
pub const MAX_PEERS_REPLY: usize = 32;
