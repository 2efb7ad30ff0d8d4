//! # dht-driver
//!
//! Runs a [`dht_core::Node`] over real links and a real store, on any executor: everything here is built on
//! the `futures` crate alone, with no `Send` bounds (a browser tab has one thread), and the clock comes in
//! through the [`Clock`] trait. [`start`] returns a [`NodeHandle`] for the program and the node's task,
//! which the caller spawns where it likes (a tokio `LocalSet`, `wasm_bindgen_futures::spawn_local`,
//! a `futures` `LocalPool`). [`setup`] holds what a node program does before that (its identity, its seed).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod clock;
mod driver;
mod handle;
pub mod memory;
mod relay;
pub mod setup;
mod signer;
mod transport;

pub use clock::{timeout, Clock, Elapsed, SharedClock, SystemClock};
pub use driver::{key_for, start, DriverConfig, PUBLISHED_META, PUBLISHED_SIGNED_META};
pub use handle::{DriverError, NodeEvent, NodeHandle, PutOutcome};
pub use relay::{parse_via, via_address, LinkSet, RelayPort, RelayStats, VIA_PREFIX};
pub use signer::{ExternalSigner, Signer};
pub use transport::{BoxError, MessageBudget, PeerLink, Transport, TransportError, Transports};
