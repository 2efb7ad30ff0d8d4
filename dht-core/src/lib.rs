//! # dht-core
//!
//! A sans-IO Kademlia node and the restartable frame codec of webdht. Nothing here touches a socket, a
//! clock, a thread or an executor: time comes in as an [`Instant`] argument, randomness from a seed, and
//! everything the node wants done comes out of [`Node::poll_output`] — messages to send, storage operations,
//! events. The same code runs natively, in the browser (wasm32) and in the simulator.
//!
//! Calling convention of [`Node`]:
//! - inputs: [`Node::handle_message`], [`Node::handle_store_result`], [`Node::handle_timeout`];
//! - commands: [`Node::bootstrap`], [`Node::find_node`], [`Node::put`], [`Node::get`];
//! - outputs: drain [`Node::poll_output`] to `None` after every input or command (or let [`Node::pump`]
//!   drain them into an [`OutputSink`]), then sleep until [`Node::poll_timeout`] and call
//!   [`Node::handle_timeout`].
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod codec;
mod config;
mod event;
mod id;
pub mod lookup;
mod message;
mod node;
mod pump;
mod record;
pub mod routing;
mod time;

pub use codec::{
    decode_contacts, decode_message, decode_record, encode_contacts, encode_message, encode_record, CodecError,
    FrameDecoder, FrameEncoder, HEADER_LEN, MAX_CONTACTS_LEN, MAX_FRAME_LEN_LIMIT,
};
pub use config::{Config, ConfigError, RecordPolicy, ValidConfig, Validator};
/// The ed25519 key an owner signs its records with (from `ed25519-dalek`).
pub use ed25519_dalek::SigningKey;
pub use event::{Event, Output, QueryId, QueryStats, StoreOp, StoreOpId, StoreResult};
pub use id::{Distance, Key, NodeId, ParseIdError, ID_LEN};
pub use message::{
    Address, Contact, Message, Relayed, Request, RequestId, Response, StoreRefusal, MAX_RELAY_HOPS, MAX_RELAY_PAYLOAD,
};
pub use node::{Node, NodeStats};
pub use pump::{MemoryRecords, OutputSink};
pub use record::{signing_buffer, OwnerKey, Record, RecordError, RecordKind, Signed, MAX_SALT_LEN};
pub use time::Instant;
